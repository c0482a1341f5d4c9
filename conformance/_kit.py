"""``Kit``: what a conformance test gets from the ``kit`` fixture."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torpor
from torpor import Capability
from torpor.conformance._target import Target

__all__ = ["MODEL_EXAMPLES", "STEP_MS", "Kit"]

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


def claims(mgr: torpor.Manager, *capabilities: Capability) -> bool:
    return all(c in mgr.capabilities for c in capabilities)
