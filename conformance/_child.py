"""The kit's child processes: ``python -m torpor.conformance._child``.

Two ways to run one:

* ``_child REQUEST_FILE`` (the multiprocess area, :meth:`Kit.start`): reads one JSON
  request from the file, opens the target over the given storage folder, performs one
  operation (``OPS``) and prints a JSON result as its last line (earlier lines are
  signals, such as ``blocked``).
* ``_child --serve`` (the distributed area, :class:`Peer`): a long-lived manager.  The
  first line on stdin is the request; the child prints ``ready`` once its manager is
  open, then answers each further line, one step ``[name, *arguments]`` (``STEPS``),
  with one JSON line; at the end of its input it closes the manager and prints
  ``{"closed": true}``.  Its clock is its own ``ManualClock``, moved by the ``clock``
  step.

Steps and operations that check what another process sees report the exceptions they
meet by type name (``{"raised": "SessionCancelled"}``) instead of crashing, so that the
test in the parent can assert on them.

Either way the child appends the parent's import path (:func:`import_path`, sent with
the target) to its own, so a ``"package.module:factory"`` backend is found wherever
the child runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

import torpor
from torpor.conformance._bank import transfers
from torpor.conformance._kit import Child, Kit
from torpor.conformance._target import Target, shared_storage_name
from torpor.conformance.helpers import blocked_consumer

__all__ = ["OPS", "STEPS", "Peer", "peers"]


def _signal(line: str) -> None:
    print(line, flush=True)


def _increment(mgr: torpor.Manager, ids: list[str], rounds: int) -> dict[str, Any]:
    for i in range(rounds):
        mgr.update(ids[i % len(ids)], lambda d: {**d, "n": d["n"] + 1})
    return {"done": rounds}


def _consume(mgr: torpor.Manager, session_id: str, idle_s: float) -> dict[str, Any]:
    got: list[Any] = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < idle_s:
        batch = mgr.receive(session_id, max_messages=10, timeout=0.05)
        if batch:
            got.extend(batch)
            quiet_since = time.monotonic()
    return {"received": got}


def _send(
    mgr: torpor.Manager, session_id: str, messages: list[Any], priority: bool
) -> dict[str, Any]:
    for message in messages:
        mgr.send(session_id, message, priority=priority)
    return {"sent": len(messages)}


def _send_numbered(
    mgr: torpor.Manager, session_id: str, how_many: int, priority_every: int
) -> dict[str, Any]:
    """Send ``[pid, i, priority]`` for i in range(how_many); every ``priority_every``-th
    one (the last of each run) is a priority message.  The pid tells senders apart."""
    sender = os.getpid()
    for i in range(how_many):
        priority = i % priority_every == priority_every - 1
        mgr.send(session_id, [sender, i, priority], priority=priority)
    return {"sender": sender}


def _receive_once_blocked(mgr: torpor.Manager, session_id: str) -> tuple[list[str], list[Any]]:
    """Block in ``receive(session_id, timeout=30)``, print ``blocked`` once the mailbox
    counts the consumer as waiting (so a send or removal made after that reaches it),
    and return the type names of what the receive raised and what it returned."""
    received: list[list[Any]] = []
    thread, raised = blocked_consumer(mgr, session_id, received=received)
    _signal("blocked")
    thread.join()
    return [type(exc).__name__ for exc in raised], [m for batch in received for m in batch]


def _blocked_receive(mgr: torpor.Manager, session_id: str) -> dict[str, Any]:
    raised, _ = _receive_once_blocked(mgr, session_id)
    return {"raised": raised}


def _receive_blocked(mgr: torpor.Manager, session_id: str) -> dict[str, Any]:
    raised, received = _receive_once_blocked(mgr, session_id)
    return {"raised": raised, "received": received}


def _drain(mgr: torpor.Manager, session_id: str) -> list[Any]:
    """Everything queued for the session now, in the order ``receive`` gave it."""
    got: list[Any] = []
    while batch := mgr.receive(session_id, max_messages=500):
        got.extend(batch)
    return got


def _data(session: torpor.Session | None) -> dict[str, Any] | None:
    return None if session is None else session.data


def _view(session: torpor.Session | None) -> dict[str, Any] | None:
    if session is None:
        return None
    return {"data": session.data, "version": session.version, "hibernated": session.hibernated}


def _counts(mgr: torpor.Manager) -> dict[str, int]:
    stats = mgr.stats()
    return {"sessions": stats.sessions, "active": stats.active, "hibernated": stats.hibernated}


def _set_clock(mgr: torpor.Manager, now_ms: int) -> int:
    clock = mgr.clock
    if not isinstance(clock, torpor.ManualClock):  # a serving child always has one
        raise TypeError("this manager's clock cannot be set")
    clock.set(now_ms)
    return clock()


STEPS: dict[str, Callable[..., Any]] = {
    "create": lambda mgr, sid, data, timeout_ms=None: (
        mgr.create(data, session_id=sid, timeout_ms=timeout_ms).id
    ),
    "update": lambda mgr, sid, patch: mgr.update(sid, lambda d: {**d, **patch}).data,
    "delete": lambda mgr, sid: mgr.delete(sid),
    "cancel": lambda mgr, sid: mgr.cancel(sid),
    "peek": lambda mgr, sid: _data(mgr.peek(sid)),
    "len": lambda mgr: len(mgr),
    "ids": lambda mgr: sorted(mgr.ids()),
    # What the distributed area's long-lived children do, too:
    "get_view": lambda mgr, sid: _view(mgr.get(sid)),
    "peek_view": lambda mgr, sid: _view(mgr.peek(sid)),
    "contains": lambda mgr, sid: sid in mgr,
    "stats": _counts,
    "clock": _set_clock,
    "cleanup_expired": lambda mgr: mgr.cleanup_expired(),
    "hibernate_idle": lambda mgr, threshold_ms: mgr.hibernate_idle(threshold_ms),
    "increment": _increment,
    "send": lambda mgr, sid, message, priority=False: mgr.send(sid, message, priority=priority),
    "send_numbered": _send_numbered,
    "drain": _drain,
    "receive_blocked": _receive_blocked,
}
"""What an ``apply`` operation or a serving child may do: ``[name, *arguments]``."""


def _step(mgr: torpor.Manager, name: str, args: list[Any]) -> dict[str, Any]:
    """One step's JSON result, or the type of what it raised."""
    try:
        return {"returned": STEPS[name](mgr, *args)}
    except Exception as exc:  # reported to the parent, which asserts on it
        return {"raised": type(exc).__name__, "message": str(exc)}


def _apply(mgr: torpor.Manager, steps: list[list[Any]]) -> dict[str, Any]:
    """Run the steps in order; report each one's outcome (and go on)."""
    return {"outcomes": [_step(mgr, name, args) for name, *args in steps]}


def _transfers(mgr: torpor.Manager, ids: list[str], rounds: int, seed: int) -> dict[str, Any]:
    return {"done": transfers(mgr, ids, rounds, seed)}


OPS: dict[str, Callable[..., dict[str, Any]]] = {
    "increment": _increment,
    "transfers": _transfers,
    "consume": _consume,
    "send": _send,
    "send_numbered": _send_numbered,
    "blocked_receive": _blocked_receive,
    "apply": _apply,
}


def _import_like_parent(target: Mapping[str, Any]) -> None:
    for entry in target.get("import_path", ()):
        if entry not in sys.path:
            sys.path.append(entry)


def _serve(request: Mapping[str, Any], steps: IO[str]) -> None:
    target = Target(backend=request["target"]["backend"], options=request["target"]["options"])
    # A relative name: it resolves in this process's own working directory.
    backend = target.make_backend(request["storage"])
    clock = torpor.ManualClock(int(request["now"]))
    with torpor.open(backend, clock=clock, sweeper=False) as mgr:
        _signal("ready")
        for line in steps:
            name, *args = json.loads(line)
            print(json.dumps(_step(mgr, name, args)), flush=True)
    _signal(json.dumps({"closed": True}))


def main() -> None:
    if sys.argv[1:] == ["--serve"]:
        request = json.loads(sys.stdin.readline())
        _import_like_parent(request["target"])
        _serve(request, sys.stdin)
        return
    request = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    _import_like_parent(request["target"])
    target = Target(backend=request["target"]["backend"], options=request["target"]["options"])
    backend = target.make_backend(Path(request["storage"]))
    now = int(request["now"])
    with torpor.open(backend, clock=lambda: now, sweeper=False) as mgr:
        result = OPS[request["op"]](mgr, **request["params"])
    print(json.dumps(result), flush=True)


# -- the parent's end of a serving child ---------------------------------------------


class Peer(Child):
    """A manager in a process of its own (``_child --serve``), which shares nothing with
    this process or the other peers but the target's options: see :func:`peers`."""

    def __init__(self, name: str, proc: subprocess.Popen[str], errors: IO[str]) -> None:
        super().__init__(proc, errors)
        self.name = name

    def __repr__(self) -> str:
        return f"process {self.name}"

    def tell(self, name: str, *args: Any) -> None:
        """Start a step and return at once; :meth:`reply` gives its outcome."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps([name, *args]) + "\n")
        self._proc.stdin.flush()

    def reply(self, timeout_s: float = 60) -> dict[str, Any]:
        """The outcome of the oldest step told and not yet answered: ``{"returned":
        value}`` or ``{"raised": type name, "message": ...}``."""
        line = self._next_line(time.monotonic() + timeout_s)
        if line is None:
            self.result()  # ended early: raises with its stderr if it failed
            raise AssertionError(f"{self} ended before it answered")
        outcome: dict[str, Any] = json.loads(line)
        return outcome

    def returned(self, what: str = "the step") -> Any:
        """What the oldest unanswered step returned (``AssertionError`` naming it and
        this process if it raised)."""
        outcome = self.reply()
        if "raised" in outcome:
            raise AssertionError(
                f"{what} in {self} raised {outcome['raised']}: {outcome['message']}"
            )
        return outcome["returned"]

    def ask(self, name: str, *args: Any) -> Any:
        """Run one step and return what it returned (see :meth:`returned`)."""
        self.tell(name, *args)
        return self.returned(f"{name}({', '.join(map(repr, args))})")

    def wait_for(self, signal: str, timeout_s: float = 60) -> None:
        """Return once the step in progress has printed the line ``signal``; fail at
        once if it answered instead."""
        line = self._next_line(time.monotonic() + timeout_s)
        if line is None:
            self.result()
            raise AssertionError(f"{self} ended without signalling {signal!r}")
        if line != signal:
            raise AssertionError(f"{self} answered {line} instead of signalling {signal!r}")

    def close(self) -> None:
        """End the input: the child closes its manager and must exit cleanly."""
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        assert self.result() == {"closed": True}, f"{self} did not close its manager"


def _sandbox(folder: Path, storage: str) -> tuple[Path, dict[str, str]]:
    """A working directory holding only an empty folder named ``storage`` (as the kit
    gives every other area an empty storage folder), and an environment whose
    ``HOME`` and temporary folders are the process's own."""
    cwd, home, tmp = folder / "cwd", folder / "home", folder / "tmp"
    for path in (cwd / storage, home, tmp):
        path.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env.update(HOME=str(home), TMPDIR=str(tmp), TMP=str(tmp), TEMP=str(tmp))
    return cwd, env


def _start_peer(name: str, kit: Kit, storage: str, folder: Path) -> Peer:
    cwd, env = _sandbox(folder, storage)
    request = {"target": json.loads(kit.target.to_json()), "storage": storage, "now": kit.clock()}
    # stderr goes to a file: a pipe nobody reads while the test waits could fill up.
    errors = (folder / "stderr.txt").open("w+", encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "torpor.conformance._child", "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        cwd=cwd,
        env=env,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(request) + "\n")
    proc.stdin.flush()
    return Peer(name, proc, errors)


@contextmanager
def peers(kit: Kit, count: int) -> Iterator[list[Peer]]:
    """``count`` peers (1 to 8, named ``A``, ``B``, ...) over one fresh store, each open and
    ready when this yields.  Each runs in its own empty working directory with its own
    ``HOME`` and ``TMPDIR``, gets the target's options with ``{storage}`` replaced by
    the same relative name (:func:`shared_storage_name`), and starts its clock at
    ``kit.clock()``.  On the way out each must close its manager and exit cleanly; if
    the test failed they are killed."""
    if not 1 <= count <= 8:
        raise ValueError(f"peers: count must be 1 to 8, not {count}")
    storage = shared_storage_name()
    root = kit.storage.parent / f"peers-{storage}"
    with ExitStack() as cleanup:
        started: list[Peer] = []
        for name in "ABCDEFGH"[:count]:  # all started before any is awaited: in parallel
            peer = _start_peer(name, kit, storage, root / name)
            cleanup.callback(peer.kill)
            started.append(peer)
        for peer in started:
            peer.wait_for("ready")
        yield started
        for peer in started:
            peer.close()


if __name__ == "__main__":
    main()
