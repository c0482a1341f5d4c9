"""One sample of ``torpor bench --versus``: run by the Python given to --versus (a
venv with another torpor installed, e.g. 0.1) and by this one, alternately.

A standalone script: it imports nothing of the benchmark, only ``torpor``'s public
API as far back as 0.1 (``open``, ``create``, ``get``, ``update``), so that both
versions run the very same workload.  It reads its settings and the session data as
JSON from the file named by its argument, and prints one JSON object: the median cost
of each operation in microseconds over ``rounds`` blocks.
"""

import json
import statistics
import sys
import time


def main(path: str) -> None:
    import torpor

    with open(path, encoding="utf-8") as file:
        settings = json.load(file)
    data, count = settings["data"], settings["sessions"]
    reads, writes, rounds = settings["calls"], settings["write_calls"], settings["rounds"]
    mgr = torpor.open(settings["backend"], sweeper=False, hibernate_after_ms=None)
    try:
        ids = [mgr.create(data[i % len(data)]).id for i in range(count)]
        costs: dict[str, list[float]] = {"get hot": [], "create": [], "update": []}
        held = 0

        def bump(current: dict[str, int]) -> dict[str, int]:
            current["turn"] = current.get("turn", 0) + 1
            return current

        for block in range(rounds + 1):  # the first block warms up and is dropped
            start = block * reads
            chosen = [ids[(start + k) % count] for k in range(reads)]
            began = time.perf_counter()
            for sid in chosen:
                session = mgr.get(sid)
                held += len(session.data) if session is not None else 0  # data is read
            get_cost = (time.perf_counter() - began) / reads
            began = time.perf_counter()
            for k in range(writes):
                mgr.create(data[k % len(data)])
            create_cost = (time.perf_counter() - began) / writes
            began = time.perf_counter()
            for sid in chosen[:writes]:
                mgr.update(sid, bump)
            update_cost = (time.perf_counter() - began) / writes
            if block:
                costs["get hot"].append(get_cost * 1e6)
                costs["create"].append(create_cost * 1e6)
                costs["update"].append(update_cost * 1e6)
        version = getattr(torpor, "__version__", "unknown")
    finally:
        mgr.close()
    print(json.dumps({"version": version, **{k: statistics.median(v) for k, v in costs.items()}}))


if __name__ == "__main__":
    main(sys.argv[1])
