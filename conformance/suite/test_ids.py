"""The UTF-8 id rules (docs/contract.md §2): exact code points back from every read path."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any

import pytest

import torpor
from torpor.conformance._corpus import INVALID_IDS, VALID_IDS
from torpor.conformance._kit import Kit
from torpor.conformance._marks import kit_module


def test_every_valid_id_comes_back_exactly(kit: Kit) -> None:
    mgr = kit.open()
    for label, sid in VALID_IDS.items():
        mgr.create({"label": label}, session_id=sid)
    for label, sid in VALID_IDS.items():
        got = mgr.get(sid)
        assert got is not None, label
        assert got.id == sid and got.data == {"label": label}, label
    codepoints = {tuple(map(ord, s)) for s in VALID_IDS.values()}
    assert {tuple(map(ord, s)) for s in mgr.ids()} == codepoints
    assert {tuple(map(ord, s.id)) for s in mgr.sessions()} == codepoints
    assert sorted(mgr.list_utf8_ids()) == sorted(VALID_IDS.values())


def test_nfc_and_nfd_are_distinct(kit: Kit) -> None:
    mgr = kit.open()
    mgr.create({"form": "nfc"}, session_id=VALID_IDS["nfc"])
    assert mgr.peek(VALID_IDS["nfd"]) is None
    mgr.create({"form": "nfd"}, session_id=VALID_IDS["nfd"])
    assert mgr.get(VALID_IDS["nfc"]).data == {"form": "nfc"}  # type: ignore[union-attr]
    assert mgr.get(VALID_IDS["nfd"]).data == {"form": "nfd"}  # type: ignore[union-attr]
    assert len(mgr) == 2


def test_case_is_kept(kit: Kit) -> None:
    mgr = kit.open()
    for sid in ("Straße", "STRASSE", "strasse", "İstanbul", "istanbul"):
        mgr.create({"v": sid}, session_id=sid)
    for sid in ("Straße", "STRASSE", "strasse", "İstanbul", "istanbul"):
        assert mgr.get(sid).data == {"v": sid}  # type: ignore[union-attr]


# Ids that tie under a case-insensitive or normalising collation, beside the corpus:
# a walk that resumes "after" the last id in such an order skips the rest of a tie.
_LOOK_ALIKES = [
    "Straße", "STRASSE", "strasse", "Strasse", "straße",
    "İstanbul", "istanbul", "ISTANBUL", "ıstanbul",
    "\u01c4", "\u01c5", "\u01c6", "K", "\u212a", "k",  # DŽ Dž dž; the Kelvin sign
    unicodedata.normalize("NFC", "é"), unicodedata.normalize("NFD", "é"),
    "e\u0301\u0323", "e\u0323\u0301",  # the same marks in two orders
]  # fmt: skip


@pytest.mark.parametrize("batch_size", [1, 2])
def test_walks_in_small_batches_meet_every_id_once(kit: Kit, batch_size: int) -> None:
    mgr = kit.open()
    every = [*VALID_IDS.values(), *_LOOK_ALIKES]
    assert len(set(every)) == len(every)
    for sid in every:
        mgr.create({}, session_id=sid)
    want = sorted(every)
    walked = list(mgr.ids(batch_size=batch_size))
    assert sorted(walked) == want, (
        f"ids(batch_size={batch_size}) missed {sorted(set(every) - set(walked))}, "
        f"repeated {sorted({s for s in walked if walked.count(s) > 1})}"
    )
    sessions = [s.id for s in mgr.sessions(batch_size=batch_size)]
    assert sorted(sessions) == want, (
        f"sessions(batch_size={batch_size}) missed {sorted(set(every) - set(sessions))}"
    )
    assert len(mgr) == len(every), f"len() is {len(mgr)}, not {len(every)}"


@pytest.mark.parametrize("label", sorted(INVALID_IDS))
def test_invalid_ids_are_refused_and_nothing_is_stored(kit: Kit, label: str) -> None:
    mgr = kit.open()
    bad = INVALID_IDS[label]
    with pytest.raises(torpor.InvalidSessionId):
        mgr.create({}, session_id=bad)  # type: ignore[arg-type]
    calls: list[Callable[[Any], object]] = [mgr.get, mgr.peek, mgr.delete, mgr.touch]
    for call in calls:
        with pytest.raises(torpor.InvalidSessionId):
            call(bad)
    assert len(mgr) == 0 and mgr.list_utf8_ids() == []


def test_utf8_bytes_ids_are_the_same_session(kit: Kit) -> None:
    mgr = kit.open()
    mgr.create({"v": 1}, session_id="日本語")
    assert mgr.get("日本語".encode()).data == {"v": 1}  # type: ignore[union-attr]


kit_module(globals(), "ids")
