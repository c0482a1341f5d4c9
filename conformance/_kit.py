"""``Kit``: what a conformance test gets from the ``kit`` fixture."""

from __future__ import annotations

import itertools
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import torpor
from torpor import Capability
from torpor.conformance._target import Target

__all__ = ["MODEL_EXAMPLES", "PLANT", "STEP_MS", "Child", "Kit"]

MODEL_EXAMPLES = 25
"""Examples the state machine runs by default: about 1 s over the kit's start-up on
ets_like or lmdb (2-core machine); ``docs/plugin-authors.md`` ("Longer runs") gives
what larger counts cost."""

STEP_MS = 10_000
"""The kit's unit of time.  Tests that rely on ``get`` refreshing ``last_accessed``
move the clock by at least this much, so a backend may coalesce touches at any
resolution below it (see ``torpor_touch_resolution_ms``)."""

PLANT = "conformance_plant"
"""The optional method of a backend object that lets the kit put foreign or damaged
data in its storage: ``conformance_plant(key: bytes, value: bytes) -> None`` stores
``value`` under ``key`` as it is, as another program sharing the store would (no
record, no indexes, no checks).  Not a hook (hooks start with ``torpor_``): the
manager never calls it.  Without it, the kit's damaged-data tests skip."""


class Kit:
    """Opens managers over one fresh storage folder, with a shared manual clock."""

    def __init__(self, target: Target, storage: Path) -> None:
        self.target = target
        self.storage = storage
        self.clock = torpor.ManualClock()
        self._open: list[torpor.Manager] = []
        self._backends: dict[int, object] = {}  # id(manager) -> the backend it runs on
        self._requests = itertools.count()
        self._children: list[Child] = []

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
        self._backends[id(mgr)] = backend
        return mgr

    def plant(self, mgr: torpor.Manager, key: bytes, value: bytes) -> None:
        """Put ``value`` under ``key`` straight into the storage of ``mgr``'s backend,
        through its ``conformance_plant`` method (see :data:`PLANT`); skip the test
        (as missing) if the backend has none."""
        plant = getattr(self._backends[id(mgr)], PLANT, None)
        if not callable(plant):
            import pytest  # only tests call this; ``import torpor.conformance`` needs no pytest

            pytest.skip(
                f"missing: the backend has no {PLANT}(key, value) method, so the kit "
                "cannot put foreign or damaged values in its storage"
            )
        plant(key, value)

    def reopen(self, mgr: torpor.Manager, **options: Any) -> torpor.Manager:
        """Close ``mgr`` and open a new manager over the same storage."""
        mgr.close()
        return self.open(**options)

    def close_all(self) -> None:
        for child in self._children:  # a test that failed early may leave one running
            child.kill()
        self._children.clear()
        for mgr in reversed(self._open):
            mgr.close()
        self._open.clear()
        self._backends.clear()

    def in_processes(self, count: int, op: str, **params: Any) -> list[Any]:
        """Run ``op`` (see ``torpor.conformance._child``) in ``count`` fresh Python
        processes over this test's storage, all started before any is awaited; return
        their JSON results.  The target travels as a JSON file, never pickled."""
        children = [self.start(op, **params) for _ in range(count)]
        return [child.result() for child in children]

    def start(self, op: str, **params: Any) -> Child:
        """Start ``op`` in a fresh Python process over this test's storage, and return
        at once; see :class:`Child`."""
        number = next(self._requests)
        request = json.dumps(
            {
                "target": json.loads(self.target.to_json()),
                "storage": str(self.storage),
                "now": self.clock(),
                "op": op,
                "params": params,
            }
        )
        request_file = self.storage.parent / f"request-{number}-{op}.json"
        request_file.write_text(request, encoding="utf-8")
        # stderr goes to a file: a pipe nobody reads while the test waits could fill up.
        errors = (self.storage.parent / f"stderr-{number}-{op}.txt").open("w+", encoding="utf-8")
        proc = subprocess.Popen(  # noqa: S603 - this interpreter, our own module, our file
            [sys.executable, "-m", "torpor.conformance._child", str(request_file)],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        child = Child(proc, errors)
        self._children.append(child)
        return child


class Child:
    """A kit operation running in another process (:meth:`Kit.start`).  It prints
    signal lines as it goes (e.g. ``blocked`` once a consumer is blocked) and its JSON
    result last; a thread collects the lines, so waiting for one can time out."""

    def __init__(self, proc: subprocess.Popen[str], errors: IO[str]) -> None:
        self._proc = proc
        self._errors = errors
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._seen: list[str] = []
        self._ended = False
        self._stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def kill(self) -> None:
        """End the child now if it still runs."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._errors.close()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)  # end of output

    def _next_line(self, deadline: float) -> str | None:
        if self._ended:
            return None
        try:
            line = self._lines.get(timeout=max(deadline - time.monotonic(), 0))
        except queue.Empty:
            self._proc.kill()
            raise AssertionError(
                f"the child process went on for too long; it printed {self._seen}"
            ) from None
        if line is None:
            self._ended = True
        else:
            self._seen.append(line)
        return line

    def wait_for(self, signal: str, timeout_s: float = 60) -> None:
        """Return once the child has printed the line ``signal``."""
        deadline = time.monotonic() + timeout_s
        while (line := self._next_line(deadline)) != signal:
            if line is None:
                self.result()  # ended without the signal: raises if it failed
                raise AssertionError(f"the child process ended without signalling {signal!r}")

    def result(self, timeout_s: float = 120) -> Any:
        """Wait for the child to end; its JSON result (``AssertionError`` with its
        stderr if it failed)."""
        deadline = time.monotonic() + timeout_s
        while self._next_line(deadline) is not None:
            pass
        code = self._proc.wait(timeout=max(deadline - time.monotonic(), 1))
        if not self._errors.closed:
            self._errors.seek(0)
            self._stderr = self._errors.read()
            self._errors.close()
        err = self._stderr
        if code != 0:
            raise AssertionError(f"child process failed ({code}):\n{err}")
        if not self._seen:
            raise AssertionError(f"the child process printed no result:\n{err}")
        return json.loads(self._seen[-1])


def claims(mgr: torpor.Manager, *capabilities: Capability) -> bool:
    return all(c in mgr.capabilities for c in capabilities)
