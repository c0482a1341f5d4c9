"""A writer for the crash test: ``python -m tests.lmdb_writer PATH ROUND``.

Creates sessions and bumps a counter session, printing a line after each write has
returned (i.e. was acknowledged), until it is killed.
"""

from __future__ import annotations

import sys

import torpor


def main() -> None:
    path, round_no = sys.argv[1], sys.argv[2]
    with torpor.open("lmdb", path=path, durability="sync", sweeper=False) as mgr:
        if "counter" not in mgr:
            mgr.create({"n": 0}, session_id="counter", timeout_ms=None)
        i = 0
        while True:
            sid = f"r{round_no}-{i}"
            mgr.create({"i": i, "pad": "x" * (i % 7 * 300)}, session_id=sid, timeout_ms=None)
            print(f"created {sid}", flush=True)
            n = mgr.update("counter", lambda d: {"n": d["n"] + 1}).data["n"]
            print(f"counter {n}", flush=True)
            i += 1


if __name__ == "__main__":
    main()
