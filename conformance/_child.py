"""Entry point of the kit's child processes: ``python -m torpor.conformance._child``.

Reads one JSON request from the file named on the command line, opens the target
over the given storage, performs the operation, prints a JSON result as its last line
(earlier lines are signals, such as ``blocked``).  Used by the multi-process tests.

Operations that check what another process sees report the exceptions they meet by
type name (``{"raised": "SessionCancelled"}``) instead of crashing, so that the test
in the parent can assert on them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torpor
from torpor.conformance._target import Target
from torpor.conformance.helpers import blocked_consumer


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


def _blocked_receive(mgr: torpor.Manager, session_id: str) -> dict[str, Any]:
    """Block in ``receive(session_id, timeout=30)``, print ``blocked`` once the mailbox
    counts the consumer as waiting (so a removal made after that reaches it), and
    report what the receive raised."""
    thread, raised = blocked_consumer(mgr, session_id)
    _signal("blocked")
    thread.join()
    return {"raised": [type(exc).__name__ for exc in raised]}


def _data(session: torpor.Session | None) -> dict[str, Any] | None:
    return None if session is None else session.data


STEPS: dict[str, Callable[..., Any]] = {
    "create": lambda mgr, sid, data: mgr.create(data, session_id=sid, timeout_ms=None).id,
    "update": lambda mgr, sid, patch: mgr.update(sid, lambda d: {**d, **patch}).data,
    "delete": lambda mgr, sid: mgr.delete(sid),
    "cancel": lambda mgr, sid: mgr.cancel(sid),
    "peek": lambda mgr, sid: _data(mgr.peek(sid)),
    "len": lambda mgr: len(mgr),
    "ids": lambda mgr: sorted(mgr.ids()),
}
"""What an ``apply`` step may do: ``[name, *arguments]``."""


def _apply(mgr: torpor.Manager, steps: list[list[Any]]) -> dict[str, Any]:
    """Run the steps in order; report each one's JSON result or the type of what it
    raised (and go on)."""
    outcomes: list[dict[str, Any]] = []
    for name, *args in steps:
        try:
            outcomes.append({"returned": STEPS[name](mgr, *args)})
        except Exception as exc:  # reported to the parent, which asserts on it
            outcomes.append({"raised": type(exc).__name__, "message": str(exc)})
    return {"outcomes": outcomes}


OPS: dict[str, Callable[..., dict[str, Any]]] = {
    "increment": _increment,
    "consume": _consume,
    "send": _send,
    "send_numbered": _send_numbered,
    "blocked_receive": _blocked_receive,
    "apply": _apply,
}


def main() -> None:
    request = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    target = Target(backend=request["target"]["backend"], options=request["target"]["options"])
    backend = target.make_backend(Path(request["storage"]))
    now = int(request["now"])
    with torpor.open(backend, clock=lambda: now, sweeper=False) as mgr:
        result = OPS[request["op"]](mgr, **request["params"])
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
