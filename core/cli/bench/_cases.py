"""The per-call cases every backend runs through the public API, with the raw engine
and the reference code path (when the backend's profile has them) beside each.

Blocks are ordered so that each case runs next to the ones it is compared with: a
ratio's two samples are taken moments apart in the same repetition.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import click

import torpor
from torpor.cli._sweep_bench import open_filled
from torpor.cli.bench._context import Context, timed
from torpor.cli.bench._profiles import RawEngine
from torpor.cli.bench._runner import Block, Case

__all__ = ["COLD_READ", "FLUSH_SHARE", "HIBERNATE_MS", "manager_blocks"]

HIBERNATE_MS = 1_000  # idle threshold of the hibernation case (manual clock)
FLUSH_SHARE = "get cold: its flush() share"  # only where touches are buffered
COLD_READ = "get cold: the read alone"  # what a request waits for, where buffered


def _bump(data: dict[str, Any]) -> dict[str, Any]:
    data["turn"] = data.get("turn", 0) + 1
    return data


class _Rotation:
    """Successive blocks of ``n`` items taken round-robin from ``items``, so every
    block reads other sessions than the last (no block reads one twice if n <= len)."""

    def __init__(self, items: Sequence[str]) -> None:
        self._items = items
        self._next = 0

    def take(self, n: int) -> list[str]:
        size = len(self._items)
        start, self._next = self._next, (self._next + n) % size
        return [self._items[(start + k) % size] for k in range(n)]


def case(
    name: str,
    *baselines: str,
    unit: str = "call",
    kind: str = "torpor",
    calls: int = 0,
    what: str = "",
) -> Case:
    """A case; a baseline naming no engine (``"get, "``: no raw engine) is dropped."""
    kept = tuple(b for b in baselines if not b.endswith(", "))
    return Case(name, unit, kept, kind, calls=calls, what=what)


def _block(one: Case, run: Callable[[], float]) -> Block:
    return Block((one,), lambda: (run(),))


def _raw_block(name: str, calls: int, what: str, op: Callable[[int], object]) -> Block:
    """A raw engine's case: ``op`` over ``calls`` keys."""
    keys = range(calls)
    return _block(case(name, kind="raw engine", calls=calls, what=what), lambda: timed(op, keys))


def _fail(message: str) -> click.ClickException:
    """A result that contradicts the contract is a torpor bug, never a figure."""
    return click.ClickException(f"bench: {message}")


def manager_blocks(ctx: Context) -> list[Block]:
    s = ctx.settings
    n_read = s.calls
    clock = torpor.ManualClock()  # never moves: every read of ``read`` is hot
    read, ids = ctx.filled(s.sessions, clock)
    raw: RawEngine | None = None
    if ctx.profile.raw is not None:
        raw = ctx.profile.raw(ctx.options, s.sessions, s.data)
        ctx.stack.callback(raw.close)
    dispatched, dispatched_ids = ctx.filled(s.sessions, clock, fast_path=False)
    reference = _reference(ctx, clock)
    rl = ctx.profile.reference_label
    raw_name = "" if raw is None else raw.label

    blocks: list[Block] = []
    hot = _Rotation(ids)
    blocks.append(
        _block(
            case(
                "get hot",
                f"get, {raw_name}",
                calls=n_read,
                what="get of a session read less than touch_resolution_ms ago",
            ),
            lambda: timed(read.get, hot.take(n_read)),
        )
    )
    if raw is not None:
        what = "the engine's read and torpor's decode_data"
        blocks.append(_raw_block(f"get, {raw_name}", n_read, what, raw.get))
    via_pluggy = _Rotation(dispatched_ids)
    blocks.append(
        _block(
            case(
                "get hot, pluggy dispatch",
                "get hot",
                kind="pluggy",
                calls=n_read,
                what="get hot with fast_path=False: every hook through pluggy",
            ),
            lambda: timed(dispatched.get, via_pluggy.take(n_read)),
        )
    )
    if reference is not None:
        ref, ref_ids = reference
        ref_hot = _Rotation(ref_ids)
        blocks.append(
            _block(
                case(f"get hot, {rl}", "get hot", kind=rl, calls=n_read),
                lambda: timed(ref.get, ref_hot.take(n_read)),
            )
        )
    peeked = _Rotation(ids)
    blocks.append(
        _block(
            case("peek", f"get, {raw_name}", calls=n_read, what="peek: no touch, no wake"),
            lambda: timed(read.peek, peeked.take(n_read)),
        )
    )
    blocks.append(_cold_block(ctx))
    blocks += _write_blocks(ctx, read, ids, raw, reference)
    blocks.append(_hibernation_block(ctx))
    blocks.append(_mail_block(ctx))
    return blocks


def _reference(ctx: Context, clock: torpor.ManualClock) -> tuple[torpor.Manager, list[str]] | None:
    if ctx.profile.reference is None:
        return None
    return ctx.filled(ctx.settings.sessions, clock, backend=ctx.profile.reference())


def _cold_block(ctx: Context) -> Block:
    """Gets of sessions last read longer than the touch resolution ago, plus writing
    the touches they buffered (``flush``) inside the timed block: a read that defers
    its write is charged for it.  Where touches are buffered, the flush is also
    reported on its own."""
    s = ctx.settings
    clock = torpor.ManualClock()
    # Touches are buffered only where a flusher thread writes them (the sweeper on);
    # it flushes by the manual clock, which stands still during a block.
    cold, ids = ctx.filled(s.sessions, clock, sweeper=True, cleanup_interval_ms=None)
    resolution = cold.touch_resolution_ms
    flush: Callable[[], int] | None = getattr(cold, "flush", None)
    buffered = bool(resolution) and flush is not None
    # Buffered touches let a long block of cold reads run at read speed; without
    # them each cold read commits its touch, as a write does.
    n = min(s.calls if buffered else s.write_calls, len(ids))
    rotation = _Rotation(ids)

    def run() -> tuple[float, ...]:
        clock.advance(resolution + 1)
        batch = rotation.take(n)
        get = cold.get
        started = time.perf_counter()
        got = [get(sid) for sid in batch]
        read = time.perf_counter()
        if flush is not None:
            flush()
        flushed = time.perf_counter()
        if any(session is None for session in got):
            raise _fail("a cold get lost a live session")
        total = (flushed - started) / n
        return (total, (flushed - read) / n, (read - started) / n) if buffered else (total,)

    what = "get of a session idle past touch_resolution_ms, flush() of its touch included"
    cases = [case("get cold", "get hot", "peek", calls=n, what=what)]
    if buffered:
        cases.append(case(FLUSH_SHARE, calls=n, what="the flush() ending the block, per get"))
        cases.append(
            case(COLD_READ, "peek", calls=n, what="the gets of the block without their flush")
        )
    return Block(tuple(cases), run)


def _write_blocks(
    ctx: Context,
    read: torpor.Manager,
    ids: list[str],
    raw: RawEngine | None,
    reference: tuple[torpor.Manager, list[str]] | None,
) -> list[Block]:
    s = ctx.settings
    n = s.write_calls
    data = [s.data[i % len(s.data)] for i in range(n)]
    raw_name = "" if raw is None else raw.label
    rl = ctx.profile.reference_label
    created: deque[str] = deque()  # by the create case, for the delete case

    def create() -> float:
        started = time.perf_counter()
        for payload in data:
            created.append(read.create(payload).id)
        return (time.perf_counter() - started) / n

    def delete() -> float:
        while len(created) < n:  # only if the create case did not run before
            created.append(read.create(data[0]).id)
        batch = [created.popleft() for _ in range(n)]
        remove = read.delete
        started = time.perf_counter()
        done = [remove(sid) for sid in batch]
        took = time.perf_counter() - started
        if not all(done):
            raise _fail("delete() did not find a session create() returned")
        return took / n

    updated = _Rotation(ids)

    def update() -> float:
        batch = updated.take(n)
        write = read.update
        started = time.perf_counter()
        for sid in batch:
            write(sid, _bump)
        return (time.perf_counter() - started) / n

    blocks = [_block(case("create", f"put, {raw_name}", calls=n), create)]
    if raw is not None:
        what = "encode_data and a write of a new key"
        blocks.append(_raw_block(f"put, {raw_name}", n, what, raw.put))
    if reference is not None:
        ref, ref_ids = reference
        ref_created: list[str] = []

        def ref_create() -> float:
            for sid in ref_created:  # keeps the reference store at its size, untimed
                ref.delete(sid)
            ref_created.clear()
            started = time.perf_counter()
            for payload in data:
                ref_created.append(ref.create(payload).id)
            return (time.perf_counter() - started) / n

        blocks.append(_block(case(f"create, {rl}", "create", kind=rl, calls=n), ref_create))
    blocks.append(
        _block(
            case(
                "update",
                f"update, {raw_name}",
                calls=n,
                what="update() with a function changing one field",
            ),
            update,
        )
    )
    if raw is not None:
        what = "read, decode, change one field, encode, write"
        blocks.append(_raw_block(f"update, {raw_name}", n, what, raw.update))
    if reference is not None:
        ref_updated = _Rotation(ref_ids)

        def ref_update() -> float:
            batch = ref_updated.take(n)
            started = time.perf_counter()
            for sid in batch:
                ref.update(sid, _bump)
            return (time.perf_counter() - started) / n

        blocks.append(_block(case(f"update, {rl}", "update", kind=rl, calls=n), ref_update))
    blocks.append(_block(case("delete", f"delete, {raw_name}", calls=n), delete))
    if raw is not None:

        def raw_delete() -> float:
            while raw.spare() < n:  # only if the put case did not run before
                raw.put(0)
            started = time.perf_counter()
            for _ in range(n):
                raw.delete()
            return (time.perf_counter() - started) / n

        blocks.append(_block(case(f"delete, {raw_name}", kind="raw engine", calls=n), raw_delete))
    return blocks


def _hibernation_block(ctx: Context) -> Block:
    """Hibernate every session of a store (idle past the threshold), then wake each
    with a ``get``; per session."""
    clock = torpor.ManualClock()
    mgr, ids = ctx.filled(ctx.settings.write_calls, clock)

    def run() -> tuple[float, float]:
        clock.advance(HIBERNATE_MS + 1)
        started = time.perf_counter()
        hibernated = mgr.hibernate_idle(HIBERNATE_MS)
        slept = time.perf_counter() - started
        if hibernated != len(ids):
            raise _fail(f"hibernate_idle() hibernated {hibernated} of {len(ids)} idle sessions")
        get = mgr.get
        started = time.perf_counter()
        woken = [get(sid) for sid in ids]
        woke = time.perf_counter() - started
        if any(s is None or s.hibernated for s in woken):
            raise _fail("a get() of a hibernated session did not wake it")
        return slept / hibernated, woke / len(ids)

    return Block(
        (
            case(
                "hibernate",
                unit="session",
                calls=len(ids),
                what="hibernate_idle() over idle sessions, per session hibernated",
            ),
            case("wake", unit="session", calls=len(ids), what="get() of a hibernated session"),
        ),
        run,
    )


def _mail_block(ctx: Context) -> Block:
    """A priority receive behind ``backlog`` normal messages, and in a mailbox with
    none: the priority messages are sent untimed, each receive takes one."""
    s = ctx.settings
    n = s.write_calls
    backlogged, empty = "bench-backlog", "bench-empty"

    def fill(mgr: torpor.Manager) -> None:
        for sid in (backlogged, empty):
            mgr.create(session_id=sid, timeout_ms=None)
        with ctx.progress(f"queueing {s.backlog:,} messages", s.backlog) as advance:
            for k in range(s.backlog):
                mgr.send(backlogged, {"normal": k})
                advance(k)

    mail = open_filled(ctx.backend, ctx.storage(), torpor.ManualClock(), fill, sweeper=False)
    ctx.stack.callback(mail.close)

    def receive_all(sid: str) -> float:
        for k in range(n):
            mail.send(sid, {"urgent": k}, priority=True)
        receive = mail.receive
        started = time.perf_counter()
        got = [receive(sid) for _ in range(n)]
        took = time.perf_counter() - started
        if got != [[{"urgent": k}] for k in range(n)]:
            raise _fail("priority messages did not come out first, in order")
        return took / n

    def run() -> tuple[float, float]:
        return receive_all(backlogged), receive_all(empty)

    return Block(
        (
            case(
                "priority receive, backlog",
                "priority receive, empty",
                unit="message",
                calls=n,
                what=f"receive() of a priority message behind {s.backlog:,} normal",
            ),
            case(
                "priority receive, empty",
                unit="message",
                calls=n,
                what="receive() of a priority message, no normal message queued",
            ),
        ),
        run,
    )
