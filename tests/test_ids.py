"""The UTF-8 id rules of DESIGN §3, as ``validate_id`` and ``generate_id`` apply
them.  That every backend keeps valid ids exactly (NFC and NFD apart) is a kit test."""

from __future__ import annotations

import base64

import pytest

import torpor
from torpor import InvalidSessionId, generate_id, validate_id


def test_255_bytes_accepted_256_refused_at_a_multibyte_boundary() -> None:
    three = "あ" * 85  # 255 bytes of 3-byte characters
    assert len(three.encode()) == 255
    assert validate_id(three) == three
    four = "😀" * 63 + "abc"  # 252 + 3 = 255 bytes ending in ASCII
    assert validate_id(four) == four
    with pytest.raises(InvalidSessionId) as info:
        validate_id("a" + "あ" * 85)  # 256 bytes: the last character crosses the limit
    assert info.value.rule == "too_long"
    assert info.value.position == 85
    assert "256 bytes" in str(info.value)


def test_256_with_astral_tail_refused() -> None:
    validate_id("abc" + "😀" * 63)  # 3 + 252 = 255
    with pytest.raises(InvalidSessionId) as info:
        validate_id("abcd" + "😀" * 63)  # 256: the last emoji starts at byte 252
    assert info.value.rule == "too_long"
    assert info.value.position == 66


@pytest.mark.parametrize(
    ("bad", "rule", "position"),
    [
        ("", "empty", None),
        ("a\x00b", "control_character", 1),
        ("tab\there", "control_character", 3),
        ("x\x7f", "control_character", 1),
        ("c1\x85", "control_character", 2),
        ("lone\ud800", "surrogate", 4),
        ("\udfffx", "surrogate", 0),
        (b"ok\xff\xfe", "invalid_utf8", 2),
        (b"\xc3", "invalid_utf8", 0),
        (12, "type", None),
        (None, "type", None),
    ],
)
def test_bad_ids_refused_with_rule_and_position(
    bad: object, rule: str, position: int | None
) -> None:
    with pytest.raises(InvalidSessionId) as info:
        validate_id(bad)
    assert info.value.rule == rule
    assert info.value.position == position
    assert isinstance(info.value, ValueError)


def test_bytes_ids_are_decoded() -> None:
    assert validate_id("日本".encode()) == "日本"


class _Spy:
    """A backend that records whether any hook was reached."""

    def __init__(self) -> None:
        self.touched: list[str] = []

    def torpor_fetch(self, session_id: str) -> None:
        self.touched.append("fetch")

    def torpor_store(self, record: object) -> None:
        self.touched.append("store")

    def torpor_delete(self, session_id: str) -> bool:
        self.touched.append("delete")
        return False

    def torpor_ids(self) -> list[str]:
        self.touched.append("ids")
        return []


@pytest.mark.parametrize("bad", ["a\x00", "\ud800", "", "x" * 256, b"\xff"])
def test_bad_ids_refused_before_the_backend_is_touched(bad: object) -> None:
    spy = _Spy()
    with torpor.open(spy, sweeper=False) as mgr:
        calls = [
            lambda: mgr.create({}, session_id=bad),  # type: ignore[arg-type]
            lambda: mgr.get(bad),  # type: ignore[arg-type]
            lambda: mgr.peek(bad),  # type: ignore[arg-type]
            lambda: mgr.update(bad, dict),  # type: ignore[arg-type]
            lambda: mgr.delete(bad),  # type: ignore[arg-type]
            lambda: mgr.touch(bad),  # type: ignore[arg-type]
            lambda: mgr.set_timeout(bad, 5),  # type: ignore[arg-type]
            lambda: mgr.send(bad, "m"),  # type: ignore[arg-type]
            lambda: mgr.receive(bad),  # type: ignore[arg-type]
            lambda: mgr.cancel(bad),  # type: ignore[arg-type]
        ]
        for call in calls:
            with pytest.raises(InvalidSessionId):
                call()
        assert bad not in mgr
    assert spy.touched == []


def test_generated_ids_carry_128_bits_and_the_name(mgr: torpor.Manager) -> None:
    a = mgr.create(name="日本語")
    b = mgr.create(name="日本語")
    assert a.id.startswith("session_日本語_") and a.id != b.id
    token = a.id.removeprefix("session_日本語_")
    assert len(token) == 22  # 16 random bytes, URL-safe base64 without padding
    assert len(base64.urlsafe_b64decode(token + "==")) == 16
    plain = mgr.create()
    assert plain.id.startswith("session_") and plain.id.count("_") >= 1
    with pytest.raises(InvalidSessionId):
        mgr.create(name="bad\x00name")
    with pytest.raises(InvalidSessionId):
        mgr.create(name="n", session_id="x")


@pytest.mark.parametrize(
    ("bad", "rule", "position"),
    [
        # bytes: the byte offset in the given bytes, after multibyte characters too
        (b"\xc3\xa9\x01", "control_character", 2),
        ("日本".encode() + b"\x7f", "control_character", 6),
        (b"a" + "あ".encode() * 85, "too_long", 253),  # the last あ starts at byte 253
        (b"ok\xff\xfe", "invalid_utf8", 2),
        # str: the code point index
        ("é\x01", "control_character", 1),
        ("日本\x7f", "control_character", 2),
        ("a" + "あ" * 85, "too_long", 85),
    ],
    ids=[
        "bytes-control-after-e-acute",
        "bytes-del-after-cjk",
        "bytes-too-long",
        "bytes-not-utf8",
        "str-control-after-e-acute",
        "str-del-after-cjk",
        "str-too-long",
    ],
)
def test_position_is_a_byte_offset_for_bytes_and_a_code_point_index_for_str(
    bad: str | bytes, rule: str, position: int
) -> None:
    with pytest.raises(InvalidSessionId) as info:
        validate_id(bad)
    assert (info.value.rule, info.value.position) == (rule, position)
    unit = "byte" if isinstance(bad, bytes) else "position"
    assert f"{unit} {position}" in str(info.value)


def test_name_room_is_computed_from_the_id_limit() -> None:
    from torpor._ids import MAX_NAME_BYTES

    token = generate_id().removeprefix("session_")
    assert MAX_NAME_BYTES == torpor.MAX_ID_BYTES - len("session_") - len("_") - len(token) == 224


def test_a_name_of_224_bytes_is_accepted() -> None:
    for name in ("n" * 224, "é" * 112, "日" * 74 + "ab"):
        assert len(name.encode()) == 224
        sid = generate_id(name)
        assert sid.startswith(f"session_{name}_") and len(sid.encode()) == 255
        assert validate_id(sid) == sid


def test_a_too_long_name_is_refused_about_the_name() -> None:
    with pytest.raises(InvalidSessionId) as info:
        generate_id("n" * 225)
    assert info.value.rule == "too_long" and info.value.position == 224
    message = str(info.value)
    assert message.startswith("session name is 225 bytes") and "224" in message
    assert "session id" not in message  # it is about the name, not a generated id
    with pytest.raises(InvalidSessionId) as info:
        generate_id("é" * 113)  # 226 bytes: the 113th é (index 112) crosses the limit
    assert info.value.position == 112


def test_a_bad_name_gives_its_position_in_the_name() -> None:
    with pytest.raises(InvalidSessionId) as info:
        generate_id("abc\x01def")
    assert info.value.rule == "control_character" and info.value.position == 3
    assert "name" in str(info.value) and "position 3" in str(info.value)
    with pytest.raises(InvalidSessionId) as info:
        generate_id("日本\ud800")
    assert (info.value.rule, info.value.position) == ("surrogate", 2)
    with pytest.raises(InvalidSessionId) as info:
        generate_id("")
    assert info.value.rule == "empty" and "name" in str(info.value)


def test_create_with_a_bad_name_reports_the_name(mgr: torpor.Manager) -> None:
    with pytest.raises(InvalidSessionId) as info:
        mgr.create({}, name="x" * 225)
    assert info.value.position == 224 and "session name" in str(info.value)
    assert len(mgr) == 0
    assert mgr.create({}, name="x" * 224).id.startswith("session_" + "x" * 224 + "_")
