"""The public ``Record`` helpers a native backend reads records with: ``Record.of``,
``session_data`` and ``expires_at`` (docs/plugin-authors.md, "Reading records")."""

from __future__ import annotations

from typing import Any

import pytest

import torpor
from tests.minimal_backend import MinimalBackend
from torpor import Record, codec
from torpor.conformance.helpers import expect_raises, expect_returns

LIMIT = 1 << 20
DATA: dict[str, Any] = {"user": "ada", "n": [1, 2.5, None], "blob": b"\x00\xff"}


def live(**fields: Any) -> Record:
    base: dict[str, Any] = {
        "id": "s",
        "created_at": 1000,
        "last_accessed": 2000,
        "timeout_ms": 500,
        "version": 1,
        "hibernated": False,
        "incarnation": 7,
        "payload": None,
        "data": dict(DATA),
    }
    return Record(**{**base, **fields})


def test_of_takes_a_record_as_it_is() -> None:
    record = live()
    assert Record.of(record) is record
    assert Record.of(record, "s") is record


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_of_parses_stored_bytes_of_any_buffer_type(kind: type) -> None:
    blob = live().blob
    record = Record.of(kind(blob), "s")
    assert record == Record.from_blob(blob)
    assert record.data is None and record.payload is not None  # the data stays encoded
    assert (record.id, record.last_accessed, record.timeout_ms) == ("s", 2000, 500)


def test_of_refuses_a_record_stored_under_another_key() -> None:
    blob = live().blob
    expect_raises(torpor.SerializationError, Record.of, blob, "t", match="another id")
    expect_raises(torpor.SerializationError, Record.of, live(), "t", match="another id")
    assert Record.of(blob).id == "s"  # without a key there is nothing to compare


@pytest.mark.parametrize(
    "value",
    [b"", b"not a record", b"TP\x09\x00", live().blob[:-3], "a str", 42, None],
    ids=["empty", "foreign", "future-format", "truncated", "str", "int", "None"],
)
def test_of_refuses_what_is_not_an_intact_record(value: object) -> None:
    expect_raises(torpor.SerializationError, Record.of, value)  # type: ignore[arg-type]


def test_session_data_of_a_live_record_is_its_own_dict() -> None:
    record = live()
    assert record.session_data(LIMIT) is record.data  # no copy for an index to pay for


@pytest.mark.parametrize("hibernated", [False, True])
def test_session_data_decodes_a_stored_record(hibernated: bool) -> None:
    record = live().compacted() if hibernated else live()
    stored = Record.of(record.blob, "s")
    assert stored.hibernated is hibernated and stored.data is None
    assert stored.session_data(LIMIT) == DATA


def test_session_data_of_a_damaged_payload_is_a_serialization_error() -> None:
    active = live(data=None, payload=b"\xc1")  # 0xc1: never valid msgpack
    expect_raises(torpor.SerializationError, active.session_data, LIMIT)
    not_a_map = live(data=None, payload=codec.encode_value([1, 2]))
    expect_raises(torpor.SerializationError, not_a_map.session_data, LIMIT, match="not a map")
    asleep = live(data=None, payload=b"\x28\xb5\x2f\xfd garbage", hibernated=True)
    expect_raises(torpor.SerializationError, asleep.session_data, LIMIT)


def test_session_data_never_inflates_past_the_limit() -> None:
    bomb = live(data={"x": "a" * 200_000}).compacted()
    assert len(bomb.payload or b"") < 1000  # it compresses to almost nothing
    expect_raises(torpor.SerializationError, bomb.session_data, 100_000, match="max_session_bytes")
    assert bomb.session_data(LIMIT) == {"x": "a" * 200_000}


def test_expires_at_is_the_last_live_millisecond() -> None:
    record = live(last_accessed=2000, timeout_ms=500)
    expect_returns(2500, record.expires_at)
    assert not record.is_expired(2500) and record.is_expired(2501)
    expect_returns(None, live(timeout_ms=None).expires_at)


class IndexingBackend(MinimalBackend):
    """What a native backend keeps per stored record, read only through the public
    helpers: the fields an index needs, and a field index over the data."""

    def __init__(self) -> None:
        super().__init__()
        self.limit = LIMIT
        self.seen: dict[str, tuple[int, int | None, bool, dict[str, Any]]] = {}

    def torpor_open(self, clock: torpor.Clock, options: dict[str, Any]) -> None:
        self.limit = options["max_session_bytes"]

    def torpor_store(self, record: Record) -> None:
        super().torpor_store(record)
        stored = Record.of(self.blobs[record.id], record.id)  # as read back from storage
        data = stored.session_data(self.limit)
        self.seen[record.id] = (stored.last_accessed, stored.expires_at(), stored.hibernated, data)


def test_a_backend_reads_every_state_a_session_goes_through() -> None:
    clock = torpor.ManualClock()
    backend = IndexingBackend()
    with torpor.open(backend, clock=clock, sweeper=False, max_session_bytes=65536) as mgr:
        assert backend.limit == 65536  # from torpor_open's options
        start = clock()
        s = mgr.create({"team": "blue"}, timeout_ms=60_000)
        assert backend.seen[s.id] == (start, start + 60_000, False, {"team": "blue"})
        clock.advance(1000)
        assert mgr.hibernate_idle(500) == 1
        assert backend.seen[s.id] == (start, start + 60_000, True, {"team": "blue"})
        clock.advance(1000)
        mgr.get(s.id)  # wakes and touches
        assert backend.seen[s.id] == (start + 2000, start + 62_000, False, {"team": "blue"})
        mgr.update(s.id, lambda d: {**d, "team": "red"})
        mgr.set_timeout(s.id, None)
        assert backend.seen[s.id] == (start + 2000, None, False, {"team": "red"})


# -- codec.envelope_fields: decode_envelope's fast path for the current format -----------
def _v2(fields: list[Any], *, compressed: bool = False) -> bytes:
    """A format-2 envelope around any ``fields`` (``codec`` would not write most)."""
    return codec.MAGIC + bytes((2, 1 if compressed else 0)) + codec.encode_value(fields)


GOOD_ENVELOPES = {
    "active": live().blob,
    "hibernated": live().compacted().blob,
    "no timeout": live(timeout_ms=None).blob,
    "extreme times": live(created_at=-(2**62) + 1, last_accessed=2**62 - 1).blob,
    "long id": live(id="x" * 255).blob,
}
BAD_ENVELOPES = {
    "foreign": b"not a record",
    "empty": b"",
    "magic only": b"TP\x02",
    "truncated": live().blob[:-3],
    "future format": b"TP\x09\x00" + live().blob[4:],
    "version 0": _v2(["s", 1, 2, None, 0, False, 7, b"\x80"]),
    "negative timeout": _v2(["s", 1, 2, -1, 1, False, 7, b"\x80"]),
    "time out of range": _v2(["s", 1, 2**62, None, 1, False, 7, b"\x80"]),
    "bool for an int": _v2(["s", True, 2, None, 1, False, 7, b"\x80"]),
    "str payload": _v2(["s", 1, 2, None, 1, False, 7, "x"]),
    "a field too many": _v2(["s", 1, 2, None, 1, False, 7, b"\x80", 0]),
    "compressed but active": _v2(["s", 1, 2, None, 1, False, 7, b"\x80"], compressed=True),
    "hibernated, not compressed": _v2(["s", 1, 2, None, 1, True, 7, b"\x80"]),
}


@pytest.mark.parametrize("blob", list(GOOD_ENVELOPES.values()), ids=list(GOOD_ENVELOPES))
def test_envelope_fields_reads_what_decode_envelope_reads(blob: bytes) -> None:
    meta, payload, _compressed = codec.decode_envelope(blob)
    assert codec.envelope_fields(blob) == (meta, payload)
    assert codec.envelope_fields(memoryview(blob)) == (meta, payload)


@pytest.mark.parametrize("blob", list(BAD_ENVELOPES.values()), ids=list(BAD_ENVELOPES))
def test_envelope_fields_refuses_what_decode_envelope_refuses(blob: bytes) -> None:
    expect_raises(torpor.SerializationError, codec.decode_envelope, blob)
    assert codec.envelope_fields(blob) is None


def test_envelope_fields_leaves_the_older_format_to_decode_envelope() -> None:
    v1 = b"TP\x01\x00" + codec.encode_value(["s", 1, 2, None, 1, False, b"\x80"])
    assert codec.decode_envelope(v1)[0] == ("s", 1, 2, None, 1, False, 1)  # readable
    assert codec.envelope_fields(v1) is None
