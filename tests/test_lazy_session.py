"""Sessions returned by writes decode their data on first read (torpor._session)."""

from __future__ import annotations

import dataclasses
import functools
import sys
import threading

import torpor


def test_a_written_session_reads_and_compares_like_any_other() -> None:
    with torpor.open("ets_like", sweeper=False) as mgr:
        created = mgr.create({"n": [1, {"k": "ü"}]}, session_id="s")
        updated = mgr.update("s", lambda d: {**d, "m": 2})
        saved = mgr.save(dataclasses.replace(updated, data={"x": 1}))
        assert created.data == {"n": [1, {"k": "ü"}]}
        assert updated.data == {"n": [1, {"k": "ü"}], "m": 2}
        assert saved == mgr.peek("s") and mgr.peek("s") == saved  # lazy == eager, both ways
        assert saved != dataclasses.replace(saved, data={"x": 2})
        replaced = dataclasses.replace(created, version=9)
        assert replaced.data == created.data and replaced.version == 9
        assert "'n': [1" in repr(created)
        created.data["n"].append(3)  # the caller's own copy
        assert created.data["n"] == [1, {"k": "ü"}, 3]
        assert mgr.peek("s").data == {"x": 1}  # type: ignore[union-attr]


def _read_into(session: torpor.Session, seen: list[object]) -> None:
    seen.append(session.data)


def test_threads_reading_it_first_get_one_and_the_same_dict() -> None:
    with torpor.open("ets_like", sweeper=False) as mgr:
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            for _ in range(50):
                s = mgr.create({"items": list(range(200))})
                seen: list[object] = []
                read = functools.partial(_read_into, s, seen)
                threads = [threading.Thread(target=read) for _ in range(4)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                assert all(data is seen[0] for data in seen)
        finally:
            sys.setswitchinterval(interval)
