"""``torpor bench``: per-call costs, as ratios against baselines measured in the same
run.  Nothing here is asserted by tests; the figures are for humans and notes.

Baselines: the same manager with pluggy dispatch instead of the fast path, and the
raw engine doing the same work with torpor's codec (for ``lmdb``: a read transaction,
``get`` and the decode; a write transaction, ``put`` and the encode).  The managers
use a manual clock that does not move, so ``get`` measures the read path (a backend
with a touch resolution writes at most once per resolution per session).
"""

from __future__ import annotations

import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.table import Table

import torpor
from torpor import codec
from torpor._sample import chat_session

Row = tuple[str, float, str]


def per_call_us(fn: Callable[[int], object], calls: int, repeats: int = 5) -> float:
    """Median over ``repeats`` runs of the mean cost of ``fn(i)``, in microseconds."""
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(calls):
            fn(i)
        runs.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(runs)


@click.command()
@click.option("--backend", default="ets_like", show_default=True)
@click.option("--sessions", "count", default=10_000, show_default=True)
@click.option("--calls", default=20_000, show_default=True, help="Calls per timed run.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="Backend option.")
@click.option(
    "--urgent-close",
    "urgent_sessions",
    default=0,
    help="Also time close(urgent=True) in the middle of a sweep over this many sessions.",
)
def bench(
    backend: str, count: int, calls: int, options: tuple[str, ...], urgent_sessions: int
) -> None:
    """Cost of get/create: fast path, pluggy dispatch and the raw engine."""
    backend_options = dict(o.split("=", 1) for o in options)
    payloads = [chat_session(random.Random(i)) for i in range(64)]
    rows = _manager_rows(backend, backend_options, payloads, count, calls)
    rows += _raw_rows(backend, backend_options, payloads, count, calls, rows)
    if urgent_sessions:
        latency, done = _urgent_close(backend, backend_options, urgent_sessions)
        label = f"close(urgent=True) mid-sweep ({done:,}/{urgent_sessions:,} hibernated)"
        rows.append((label, latency, ""))
    table = Table(title=f"torpor bench: {backend}, {count:,} sessions of ~3 KB")
    table.add_column("operation")
    table.add_column("µs per call", justify="right")
    table.add_column("ratio", justify="right")
    for name, cost, ratio in rows:
        table.add_row(name, f"{cost:.2f}", ratio)
    Console().print(table)


def _fresh(backend: str, options: dict[str, str]) -> dict[str, Any]:
    """Options for one more manager over its own storage."""
    fresh: dict[str, Any] = dict(options)
    if backend == "lmdb" or "path" in options:
        fresh["path"] = tempfile.mkdtemp(prefix="torpor-bench-")
    return fresh


def _manager_rows(
    backend: str, options: dict[str, str], payloads: list[dict[str, Any]], count: int, calls: int
) -> list[Row]:
    quiet: dict[str, Any] = {"sweeper": False, "hibernate_after_ms": None}
    clock = torpor.ManualClock()
    with (
        torpor.open(backend, clock=clock, **quiet, **_fresh(backend, options)) as fast,
        torpor.open(
            backend, clock=clock, fast_path=False, **quiet, **_fresh(backend, options)
        ) as dispatched,
    ):
        ids = [fast.create(payloads[i % 64]).id for i in range(count)]
        other = [dispatched.create(payloads[i % 64]).id for i in range(count)]
        get_fast = per_call_us(lambda i: fast.get(ids[i % count]), calls)
        get_hook = per_call_us(lambda i: dispatched.get(other[i % count]), calls)
        peek_fast = per_call_us(lambda i: fast.peek(ids[i % count]), calls)
        create_fast = per_call_us(lambda i: fast.create(payloads[i % 64]), max(calls // 10, 1))
    return [
        ("get, fast path", get_fast, "1.00x"),
        ("get, dispatched through pluggy", get_hook, f"{get_hook / get_fast:.2f}x of fast"),
        ("peek, fast path", peek_fast, f"{peek_fast / get_fast:.2f}x of get"),
        ("create, fast path", create_fast, ""),
    ]


def _raw_rows(
    backend: str,
    options: dict[str, str],
    payloads: list[dict[str, Any]],
    count: int,
    calls: int,
    rows: list[Row],
) -> list[Row]:
    if backend != "lmdb":
        return []
    import lmdb

    from torpor.plugins.lmdb._env import DURABILITY

    sync, metasync = DURABILITY[options.get("durability", "sync")]
    env = lmdb.open(
        tempfile.mkdtemp(prefix="torpor-raw-"), map_size=1 << 30, sync=sync, metasync=metasync
    )
    meta = ("", 0, 0, None, 1, False)
    blobs = [codec.encode_envelope(meta, codec.encode_data(p), compressed=False) for p in payloads]
    keys = [f"raw-{i}".encode() for i in range(count)]
    with env.begin(write=True) as txn:
        for i, key in enumerate(keys):
            txn.put(key, blobs[i % 64])

    def raw_get(i: int) -> object:
        with env.begin() as txn:
            blob = txn.get(keys[i % count])
        assert blob is not None
        _meta, payload, _compressed = codec.decode_envelope(blob)
        return codec.decode_data(payload)

    def raw_create(i: int) -> None:
        blob = codec.encode_envelope(meta, codec.encode_data(payloads[i % 64]), compressed=False)
        with env.begin(write=True) as txn:
            txn.put(f"new-{i}-{time.perf_counter_ns()}".encode(), blob)

    get_raw = per_call_us(raw_get, calls)
    create_raw = per_call_us(raw_create, max(calls // 10, 1))
    env.close()
    get_fast = rows[0][1]
    create_fast = rows[3][1]
    return [
        ("get, raw lmdb + same codec", get_raw, f"torpor {get_fast / get_raw:.2f}x"),
        ("create, raw lmdb + same codec", create_raw, f"torpor {create_fast / create_raw:.2f}x"),
    ]


def _urgent_close(backend: str, options: dict[str, str], count: int) -> tuple[float, int]:
    """Start a sweep over ``count`` idle sessions, close urgently once it is under way;
    return (µs that close took, sessions hibernated before it stopped)."""
    clock = torpor.ManualClock()
    progress = {"hibernated": 0}
    under_way = threading.Event()

    class Watch:
        def torpor_event(self, event: torpor.LifecycleEvent) -> None:
            if event.kind is torpor.EventKind.HIBERNATED:
                progress["hibernated"] += event.count
                under_way.set()

    mgr = torpor.open(
        backend,
        clock=clock,
        hibernate_after_ms=1_000,
        cleanup_interval_ms=3_600_000,
        plugins=[Watch()],
        **_fresh(backend, options),
    )
    for i in range(count):
        mgr.create({"i": i})
    clock.advance(10_000)
    assert mgr.sweeper is not None
    mgr.sweeper.kick()
    under_way.wait()
    started = time.perf_counter()
    mgr.close(urgent=True)
    return (time.perf_counter() - started) * 1e6, progress["hibernated"]
