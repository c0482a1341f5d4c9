"""Entry point of the kit's child processes: ``python -m torpor.conformance._child``.

Reads one JSON request from the file named on the command line, opens the target
over the given storage, performs the operation, prints a JSON result.  Used by the
multi-process tests.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torpor
from torpor.conformance._target import Target


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


OPS: dict[str, Callable[..., dict[str, Any]]] = {
    "increment": _increment,
    "consume": _consume,
    "send": _send,
}


def main() -> None:
    request = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    target = Target(backend=request["target"]["backend"], options=request["target"]["options"])
    backend = target.make_backend(Path(request["storage"]))
    now = int(request["now"])
    with torpor.open(backend, clock=lambda: now, sweeper=False) as mgr:
        result = OPS[request["op"]](mgr, **request["params"])
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
