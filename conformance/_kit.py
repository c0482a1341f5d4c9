"""``Kit``: what a conformance test gets from the ``kit`` fixture."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torpor
from torpor import Capability
from torpor.conformance._target import Target

__all__ = [
    "MODEL_EXAMPLES",
    "STEP_MS",
    "Kit",
    "blocked_consumer",
    "expect_raises",
    "expect_returns",
    "wait_for_waiter",
    "walk_peak_bytes",
]

_E = TypeVar("_E", bound=BaseException)

MODEL_EXAMPLES = 25
"""Examples the state machine runs by default: about 1 s over the kit's start-up on
ets_like or lmdb (2-core machine); ``docs/plugin-authors.md`` ("Longer runs") gives
what larger counts cost."""

STEP_MS = 10_000
"""The kit's unit of time.  Tests that rely on ``get`` refreshing ``last_accessed``
move the clock by at least this much, so a backend may coalesce touches at any
resolution below it (see ``torpor_touch_resolution_ms``)."""


class Kit:
    """Opens managers over one fresh storage folder, with a shared manual clock."""

    def __init__(self, target: Target, storage: Path) -> None:
        self.target = target
        self.storage = storage
        self.clock = torpor.ManualClock()
        self._open: list[torpor.Manager] = []

    def fresh_storage(self) -> Path:
        """Switch to a new, empty storage folder (for each hypothesis example)."""
        self._generation = getattr(self, "_generation", 0) + 1
        self.storage = self.storage.parent / f"{self.storage.name.split('.')[0]}.{self._generation}"
        self.storage.mkdir()
        return self.storage

    def open(self, **options: Any) -> torpor.Manager:
        """A manager over this test's storage.  No sweeper unless asked for."""
        options.setdefault("sweeper", False)
        backend = self.target.make_backend(self.storage)
        mgr = torpor.open(backend, clock=self.clock, **options)
        self._open.append(mgr)
        return mgr

    def reopen(self, mgr: torpor.Manager, **options: Any) -> torpor.Manager:
        """Close ``mgr`` and open a new manager over the same storage."""
        mgr.close()
        return self.open(**options)

    def close_all(self) -> None:
        for mgr in reversed(self._open):
            mgr.close()
        self._open.clear()

    def in_processes(self, count: int, op: str, **params: Any) -> list[Any]:
        """Run ``op`` (see ``torpor.conformance._child``) in ``count`` fresh Python
        processes over this test's storage, all started before any is awaited; return
        their JSON results.  The target travels as a JSON file, never pickled."""
        request = json.dumps(
            {
                "target": json.loads(self.target.to_json()),
                "storage": str(self.storage),
                "now": self.clock(),
                "op": op,
                "params": params,
            }
        )
        request_file = self.storage.parent / f"request-{op}.json"
        request_file.write_text(request, encoding="utf-8")
        procs = [
            subprocess.Popen(  # noqa: S603 - this interpreter, our own module, our file
                [sys.executable, "-m", "torpor.conformance._child", str(request_file)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(count)
        ]
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise AssertionError(f"child process failed ({proc.returncode}):\n{err}")
            results.append(json.loads(out))
        return results


def walk_peak_bytes(mgr: torpor.Manager, size: int, batch_size: int, data: dict[str, Any]) -> int:
    """Fill ``mgr`` up to ``size`` sessions of ``data``, then return the peak Python
    memory (tracemalloc) that walking ``sessions()`` once adds."""
    import tracemalloc

    for _ in range(size - len(mgr)):
        mgr.create(data, timeout_ms=None)
    tracemalloc.start()
    try:
        floor = tracemalloc.get_traced_memory()[0]
        walked = sum(1 for _ in mgr.sessions(batch_size=batch_size))
        peak = tracemalloc.get_traced_memory()[1] - floor
    finally:
        tracemalloc.stop()
    if walked != size:
        raise AssertionError(f"walked {walked} sessions, expected {size}")
    return peak


def wait_for_waiter(mgr: torpor.Manager, session_id: str, timeout_s: float = 10.0) -> None:
    """Return once a consumer in this process is blocked in ``receive(session_id)``.

    It polls for that condition itself, never for a duration, so a slow machine makes
    it slower, not wrong."""
    import time

    deadline = time.monotonic() + timeout_s
    while mgr.waiters(session_id) < 1:
        if time.monotonic() > deadline:
            raise AssertionError(f"no consumer blocked on {session_id!r} within {timeout_s} s")
        time.sleep(0.001)


def blocked_consumer(
    mgr: torpor.Manager, session_id: str
) -> tuple[threading.Thread, list[BaseException]]:
    """Start a thread blocked in ``receive(session_id, timeout=30)`` and return once it
    is; the list receives whatever the receive raised (empty if it returned)."""
    outcome: list[BaseException] = []

    def consume() -> None:
        try:
            mgr.receive(session_id, timeout=30)
        except BaseException as exc:  # handed to the test, which asserts on it
            outcome.append(exc)

    thread = threading.Thread(target=consume)
    thread.start()
    wait_for_waiter(mgr, session_id)
    return thread, outcome


def expect_raises(
    expected: type[_E],
    call: Callable[..., Any],
    /,
    *args: Any,
    what: str | None = None,
    match: str | None = None,
    **kwargs: Any,
) -> _E:
    """Call ``call(*args, **kwargs)``, which must raise ``expected`` (with a message
    that ``match``, a regular expression, finds if given); return the exception.

    Otherwise raise ``AssertionError`` naming the call and what it did instead::

        mgr.save(copy read before the delete) returned Session(id='s', ...);
        expected it to raise SessionNotFound

    ``what`` names the call in that message (needed for a ``lambda``; by default the
    function and its arguments).  One call per check: unlike a ``pytest.raises``
    block around several calls, a failure always says which call it was.
    """
    label = what or _describe_call(call, args, kwargs)
    try:
        value = call(*args, **kwargs)
    except expected as exc:
        if match is not None and not re.search(match, str(exc)):
            raise AssertionError(
                f"{label} raised {type(exc).__name__}: {exc}; expected a message matching {match!r}"
            ) from exc
        return exc
    except Exception as exc:
        raise AssertionError(
            f"{label} raised {type(exc).__name__}: {exc}; expected it to raise {expected.__name__}"
        ) from exc
    raise AssertionError(
        f"{label} returned {_short(value)}; expected it to raise {expected.__name__}"
    )


def expect_returns(
    expected: Any, call: Callable[..., Any], /, *args: Any, what: str | None = None, **kwargs: Any
) -> Any:
    """Call ``call(*args, **kwargs)``, which must return a value equal to ``expected``;
    return that value.  Otherwise raise ``AssertionError`` naming the call (``what``, as
    for :func:`expect_raises`) and what it returned or raised instead."""
    label = what or _describe_call(call, args, kwargs)
    try:
        value = call(*args, **kwargs)
    except Exception as exc:
        raise AssertionError(
            f"{label} raised {type(exc).__name__}: {exc}; expected it to return {_short(expected)}"
        ) from exc
    if value != expected:
        raise AssertionError(f"{label} returned {_short(value)}; expected {_short(expected)}")
    return value


def _describe_call(call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    owner = getattr(call, "__self__", None)
    name = getattr(call, "__name__", None) or repr(call)
    if owner is not None and not isinstance(owner, type):
        name = f"{type(owner).__name__}.{name}"
    params = [_short(a, 60) for a in args] + [f"{k}={_short(v, 60)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(params)})"


def _short(value: object, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def claims(mgr: torpor.Manager, *capabilities: Capability) -> bool:
    return all(c in mgr.capabilities for c in capabilities)
