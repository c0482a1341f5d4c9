"""Foreign and damaged stored values (DESIGN §3, §11).

Something else sharing the storage (another program, a copy, a failing disk) may leave
keys that are not session ids and values that are not intact torpor records.  A point
read of such an id raises ``SerializationError`` naming it; ``delete`` removes it;
walks, counts, ``find`` and sweeps skip it and count it in ``stats().damaged``, and
never stop on it or rewrite it.

The kit puts such data in the backend's storage through the backend's optional
``conformance_plant(key, value)`` method (``torpor.conformance._kit.PLANT``); without
it these tests skip.
"""

from __future__ import annotations

import re
from typing import Any

import torpor
from torpor import Capability, Record, codec
from torpor.conformance._kit import STEP_MS, Kit, claims
from torpor.conformance._marks import kit_module
from torpor.conformance.helpers import expect_raises, expect_returns

GOOD = [f"good-{i}" for i in range(8)]  # each with a timeout of 10 steps
"""Sessions created through the manager, besides ``victim`` (which never expires)."""


def _blob(sid: str, *, hibernated: bool = False, payload: bytes | None = None) -> bytes:
    """The stored form of a record of ``sid`` that never expires and is long idle,
    built with the public ``Record`` and ``codec``."""
    data = codec.encode_data({"owner": sid, "pad": "x" * 200})
    if payload is None:
        payload = codec.compress(data) if hibernated else data
    return Record(sid, 0, 0, None, 1, hibernated, 7, payload).blob


def _garbled(frame: bytes) -> bytes:
    """A compressed frame whose header is intact and whose body is not."""
    return frame[:6] + bytes(b ^ 0x5A for b in frame[6:])


DAMAGED: dict[bytes, bytes] = {
    # keys that are valid ids, holding what no session can be
    b"junk": b"hello, not a torpor record",
    b"truncated": _blob("truncated")[:20],
    b"imposter": _blob("victim"),  # an intact record, of another id
    b"bad-data": _blob("bad-data", payload=b"\xc1\xc1\xc1"),  # not msgpack
    b"bad-zstd": _blob(
        "bad-zstd", hibernated=True, payload=_garbled(codec.compress(b"\x80" * 300))
    ),
    # keys that are not valid ids at all
    b"\xff\xfenot-utf-8": b"hello",
    b"\xc3\x28": _blob("victim"),  # not UTF-8 either, holding an intact record
    b"ctl\x01char": _blob("ctl\x01char"),  # UTF-8, but no id has a control char
}
ID_KEYS = ["junk", "truncated", "imposter", "bad-data", "bad-zstd"]
"""The keys of ``DAMAGED`` that are valid ids, so calls can name them."""


def _data(session: torpor.Session | None) -> dict[str, Any] | None:
    return None if session is None else session.data


def _planted(kit: Kit) -> torpor.Manager:
    """A manager whose storage holds ``victim``, ``GOOD`` and everything of
    ``DAMAGED``, mixed in small sweep batches."""
    mgr = kit.open(sweep_batch_size=1)  # several index calls (8 batches a call)
    mgr.create({"owner": "victim"}, session_id="victim", timeout_ms=None)
    for i, sid in enumerate(GOOD):
        mgr.create({"i": i}, session_id=sid, timeout_ms=10 * STEP_MS)
    for key, value in DAMAGED.items():
        kit.plant(mgr, key, value)
    return mgr


def test_point_reads_of_a_damaged_value_raise_naming_the_id(kit: Kit) -> None:
    mgr = _planted(kit)
    for sid in ID_KEYS:
        named = re.escape(repr(sid))
        expect_raises(torpor.SerializationError, mgr.get, sid, match=named)
        expect_raises(torpor.SerializationError, mgr.peek, sid, match=named)
        expect_raises(
            torpor.SerializationError,
            mgr.update,
            sid,
            lambda d: {**d, "x": 1},
            what=f"mgr.update({sid!r}, fn)",
            match=named,
        )
        expect_returns(False, lambda s=sid: s in mgr, what=f"{sid!r} in mgr")
    # The session the imposter names was never touched through it.
    expect_returns({"owner": "victim"}, lambda: _data(mgr.get("victim")), what="get('victim')")


def test_walks_and_counts_skip_damage_and_count_it(kit: Kit) -> None:
    mgr = _planted(kit)
    good = sorted(["victim", *GOOD])
    for batch_size in (1, 2, 100):
        expect_returns(good, lambda n=batch_size: sorted(mgr.ids(batch_size=n)), what="ids()")
        expect_returns(
            good, lambda n=batch_size: sorted(s.id for s in mgr.sessions(batch_size=n)),
            what="[s.id for s in sessions()]",
        )  # fmt: skip
    expect_returns(len(good), len, mgr)
    expect_returns(["victim"], lambda: [s.id for s in mgr.find(owner="victim")], what="find()")
    if claims(mgr, Capability.SECONDARY_INDEX):
        mgr.create_index("owner")  # built over the damaged values too
        expect_returns(
            ["victim"], lambda: [s.id for s in mgr.find(owner="victim")], what="indexed find()"
        )
    expect_returns(
        sorted(good + ID_KEYS), lambda: sorted(mgr.list_utf8_ids()), what="list_utf8_ids()"
    )
    stats = mgr.stats()
    assert (stats.sessions, stats.damaged) == (len(good), len(DAMAGED)), stats
    assert stats.stored == stats.sessions + stats.damaged + stats.expired_pending, stats


def test_sweeps_go_past_damage_and_leave_it_alone(kit: Kit) -> None:
    mgr = _planted(kit)
    kit.clock.advance(2 * STEP_MS)
    expect_returns(len(GOOD) + 1, mgr.hibernate_idle, STEP_MS)
    kit.clock.advance(10 * STEP_MS)
    expect_returns(len(GOOD), mgr.cleanup_expired)
    mgr.run_maintenance()  # the sweeper's pass
    expect_returns(["victim"], lambda: list(mgr.ids()), what="ids() after the sweeps")
    expect_returns(len(DAMAGED), lambda: mgr.stats().damaged, what="stats().damaged")
    for sid in ID_KEYS:  # never compressed, removed or repaired by a sweep
        expect_raises(torpor.SerializationError, mgr.peek, sid)


def test_delete_removes_a_damaged_value(kit: Kit) -> None:
    mgr = _planted(kit)
    for sid in ID_KEYS:
        expect_returns(True, mgr.delete, sid)
        expect_returns(False, mgr.delete, sid, what=f"mgr.delete({sid!r}) again")
        expect_returns(None, mgr.peek, sid, what=f"mgr.peek({sid!r}) after its delete")
    # Only the keys that are not ids are left (no call can name them).
    expect_returns(len(DAMAGED) - len(ID_KEYS), lambda: mgr.stats().damaged, what="stats().damaged")
    expect_returns(sorted(["victim", *GOOD]), lambda: sorted(mgr.ids()), what="ids()")
    mgr.create({"new": True}, session_id="junk")  # the id is free again
    expect_returns({"new": True}, lambda: _data(mgr.get("junk")), what="get('junk')")


kit_module(globals(), "damaged")
