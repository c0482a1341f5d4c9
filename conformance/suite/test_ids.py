"""The UTF-8 id rules (docs/contract.md §2): exact code points back from every read path."""

from __future__ import annotations

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
