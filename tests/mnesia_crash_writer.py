"""A writer for the mnesia_like crash test:
``python -m tests.mnesia_crash_writer PATH STORAGE ROUND``.

Loops over three kinds of write, chosen by a generator seeded with ``ROUND``: a
``create`` of a new session ``{"n": 0}``, an ``update`` adding 1 to one session's
``n``, and a ``transaction`` adding 1 to two sessions' ``n`` together.  Before each
write it prints what it is about to do (``do create ID``, ``do update ID``, ``do
transfer ID ID``), and once the call has returned (the write is acknowledged) it
prints ``ok``, flushed each time: the reader knows every acknowledged write, and the
one write that may have been under way when the process was killed.
"""

from __future__ import annotations

import random
import sys
from typing import Any

import torpor


def _bump(data: dict[str, Any]) -> dict[str, Any]:
    data["n"] += 1
    return data


def _say(line: str) -> None:
    # One short write() per line: a kill leaves a line whole or absent.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    path, storage, round_no = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(round_no)
    options: dict[str, Any] = {"sweeper": False, "hibernate_after_ms": None}
    with torpor.open("mnesia_like", path=path, storage=storage, **options) as mgr:
        ids = sorted(str(sid) for sid in mgr.ids())
        made = 0
        _say("ready")
        while True:
            roll = rng.random()
            if len(ids) < 2 or roll < 0.25:
                sid = f"r{round_no}-{made}"
                made += 1
                _say(f"do create {sid}")
                # Padding of 0-6 KB: some records spill onto overflow pages.
                pad = "x" * rng.randrange(0, 6000)
                mgr.create({"n": 0, "pad": pad}, session_id=sid, timeout_ms=None)
                ids.append(sid)
            elif roll < 0.75:
                sid = rng.choice(ids)
                _say(f"do update {sid}")
                mgr.update(sid, _bump)
            else:
                a, b = rng.sample(ids, 2)
                _say(f"do transfer {a} {b}")
                with mgr.transaction() as tx:
                    tx.update(a, _bump)
                    tx.update(b, _bump)
            _say("ok")


if __name__ == "__main__":
    main()
