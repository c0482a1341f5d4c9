"""Damaged and foreign data (DESIGN §11): a bad record is an error on a point read,
is removable, and never stops a walk, a count, a find or a sweep.  Bounded decoding:
no MemoryError, no RecursionError, nothing raw, whatever bytes are stored."""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

import torpor
from tests.minimal_backend import MinimalBackend
from torpor import Record, codec
from torpor.errors import SerializationError

NOW = 1_700_000_000_000


def blob_of(sid: str, data: dict[str, object] | None = None, **fields: object) -> bytes:
    payload = codec.encode_data(data or {"v": sid})
    values = {"created": NOW, "accessed": NOW, "timeout": None, "hibernated": False, "inc": 1}
    values.update(fields)
    if values["hibernated"] and "payload" not in fields:
        payload = codec.compress(payload)
    raw = fields.get("payload", payload)
    assert isinstance(raw, bytes)
    return Record(
        sid, values["created"], values["accessed"], values["timeout"], 1,  # type: ignore[arg-type]
        values["hibernated"], values["inc"], raw,  # type: ignore[arg-type]
    ).blob  # fmt: skip


def bomb(size: int) -> bytes:
    """A small zstd frame that inflates to ``size`` bytes."""
    return zstandard.ZstdCompressor(level=19).compress(b"\x00" * size)


def forged_size_frame(claimed: int) -> bytes:
    """A valid frame for 100 bytes whose header claims ``claimed`` bytes."""
    frame = zstandard.ZstdCompressor().compress(b"x" * 100)
    assert frame[4] == 0x20  # single segment, one-byte content size
    return frame[:4] + bytes([0xE0]) + struct.pack("<Q", claimed) + frame[6:]


DAMAGED = {
    "foreign": b"hello, not a torpor record",
    "truncated": blob_of("truncated")[:20],
    "future": b"TP\x09\x00" + blob_of("future")[4:],
    "wrong-types": b"TP\x02\x00" + codec.encode_value([1, 2, 3, 4, 5, 6, 7, 8]),
    "imposter": blob_of("victim", {"owner": "victim"}),  # a copy under another key
}
PAYLOAD_DAMAGED = {
    "bad-payload": blob_of("bad-payload", payload=b"\xc1\xc1\xc1"),
    "bomb": blob_of("bomb", hibernated=True, payload=bomb(128 << 20)),
    "claims-1tb": blob_of("claims-1tb", hibernated=True, payload=forged_size_frame(1 << 40)),
}


@pytest.fixture
def planted(clock: torpor.ManualClock) -> Iterator[tuple[torpor.Manager, MinimalBackend]]:
    backend = MinimalBackend()
    mgr = torpor.open(backend, clock=clock, sweeper=False, sweep_batch_size=2)
    mgr.create({"owner": "victim"}, session_id="victim", timeout_ms=None)
    for i in range(5):
        mgr.create({"i": i}, session_id=f"good-{i}", timeout_ms=1000)
    backend.blobs.update(DAMAGED)
    backend.blobs.update(PAYLOAD_DAMAGED)
    backend.blobs[b"\xff\xfe-not-utf8"] = b"TP"  # type: ignore[index]
    yield mgr, backend
    mgr.close()


@pytest.mark.parametrize("sid", sorted({**DAMAGED, **PAYLOAD_DAMAGED}))
def test_point_reads_name_the_id(planted: tuple[torpor.Manager, MinimalBackend], sid: str) -> None:
    mgr, backend = planted
    before = dict(backend.blobs)
    for call in (
        mgr.get,
        mgr.peek,
        lambda s: mgr.update(s, lambda d: {**d, "x": 1}),
        mgr.touch,
        lambda s: mgr.set_timeout(s, 5),
        lambda s: mgr.save(torpor.Session(s, {}, 0, 0, None, 1)),
    ):
        with pytest.raises(SerializationError, match=sid):
            call(sid)
    assert backend.blobs == before  # nothing rewritten, nothing inflated and written back
    assert mgr.get("victim").data == {"owner": "victim"}  # type: ignore[union-attr]


def test_an_imposter_record_never_lets_update_touch_the_session_it_names(
    planted: tuple[torpor.Manager, MinimalBackend],
) -> None:
    mgr, _ = planted
    with pytest.raises(SerializationError, match="another id"):
        mgr.update("imposter", lambda d: {"owner": "mallory"})
    assert mgr.peek("victim").data == {"owner": "victim"}  # type: ignore[union-attr]


@pytest.mark.parametrize("sid", sorted({**DAMAGED, **PAYLOAD_DAMAGED}))
def test_delete_removes_a_damaged_record(
    planted: tuple[torpor.Manager, MinimalBackend], sid: str
) -> None:
    mgr, backend = planted
    assert mgr.delete(sid) is True
    assert sid not in backend.blobs and mgr.delete(sid) is False


def test_walks_counts_and_find_skip_damage_and_count_it(
    planted: tuple[torpor.Manager, MinimalBackend], caplog: pytest.LogCaptureFixture
) -> None:
    mgr, _ = planted
    good = {"victim", *(f"good-{i}" for i in range(5))}
    with caplog.at_level(logging.WARNING, logger="torpor"):
        for _ in range(2):
            assert set(mgr.ids(batch_size=2)) == good  # payload damage is damage too
            assert {s.id for s in mgr.sessions(batch_size=2)} == good
            assert len(mgr) == len(good)  # counts agree with ids()
            assert [s.id for s in mgr.find(owner="victim")] == ["victim"]
    stats = mgr.stats()
    # Every damaged record, and the non-UTF-8 key.
    assert stats.damaged == len(DAMAGED) + len(PAYLOAD_DAMAGED) + 1
    assert stats.sessions == len(good)
    assert stats.stored == stats.sessions + stats.damaged + stats.expired_pending
    for sid in {**DAMAGED, **PAYLOAD_DAMAGED}:  # logged once, however often walked past
        assert sum(repr(sid) in r.getMessage() for r in caplog.records) == 1, sid


def test_sweeps_go_past_damage(
    planted: tuple[torpor.Manager, MinimalBackend], clock: torpor.ManualClock
) -> None:
    mgr, backend = planted
    before = {k: backend.blobs[k] for k in {**DAMAGED, **PAYLOAD_DAMAGED}}
    clock.advance(500)
    assert mgr.hibernate_idle(100) == 6  # the good ones; nothing damaged is compressed
    clock.advance(1000)
    assert mgr.cleanup_expired() == 5
    assert set(mgr.ids()) == {"victim"}
    mgr.run_maintenance()  # the sweeper's pass: no exception either
    assert {k: backend.blobs[k] for k in before} == before  # never rewritten


@pytest.mark.parametrize(
    "data",
    [
        pytest.param("self", id="self-reference"),
        pytest.param("deep", id="1000-deep"),
    ],
)
def test_data_too_deep_or_cyclic_is_refused(mgr: torpor.Manager, data: str) -> None:
    value: dict[str, object] = {}
    if data == "self":
        value["me"] = value
    else:
        inner = value
        for _ in range(1000):
            inner["x"] = {}
            inner = inner["x"]  # type: ignore[assignment]
    with pytest.raises(SerializationError, match="deeper than"):
        mgr.create(value)
    s = mgr.create({})
    with pytest.raises(SerializationError, match="deeper than"):
        mgr.send(s.id, [value])
    assert len(mgr) == 1 and mgr.pending(s.id) == 0


def test_the_depth_limit_is_exact(mgr: torpor.Manager) -> None:
    def nested(depth: int) -> dict[str, object]:
        value: dict[str, object] = {}
        for _ in range(depth - 1):
            value = {"x": value}
        return value

    s = mgr.create(nested(codec.MAX_DEPTH))
    assert mgr.get(s.id).data == nested(codec.MAX_DEPTH)  # type: ignore[union-attr]
    with pytest.raises(SerializationError):
        mgr.create(nested(codec.MAX_DEPTH + 1))


def test_deep_foreign_data_is_a_serialization_error_not_a_recursion_error() -> None:
    deep = b"\x91" * 100_000 + b"\xc0"  # msgpack: 100,000 nested one-element arrays
    blob = blob_of("deep", payload=b"\x81\xa1x" + deep)
    with pytest.raises(SerializationError):
        Record.from_blob(blob).to_session(1 << 20)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_damage_to_a_blob_is_a_serialization_error_or_a_valid_record(
    data: st.DataObject,
) -> None:
    hibernated = data.draw(st.booleans())
    blob = bytearray(
        blob_of("fuzz", {"a": [1, "ü", b"\x00"], "b": {"c": 2.5}}, hibernated=hibernated)
    )
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, len(blob) - 1))
        if kind == "flip":
            blob[at] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del blob[at:]
            if not blob:
                blob = bytearray(b"T")
        else:
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        record = Record.from_blob(bytes(blob))
        record.to_session(1 << 20)
    except SerializationError:
        pass  # the one error a damaged record may give


def test_a_value_of_another_type_is_damage_not_a_stopped_store(clock: torpor.ManualClock) -> None:
    backend = MinimalBackend()
    with torpor.open(backend, clock=clock, sweeper=False) as mgr:
        mgr.create({}, session_id="doomed", timeout_ms=10)
        backend.blobs["odd"] = "a str, not bytes"  # type: ignore[assignment]
        clock.advance(11)
        assert list(mgr.ids()) == [] and mgr.stats().damaged == 1
        assert mgr.cleanup_expired() == 1  # the sweep went past it
        with pytest.raises(SerializationError, match="odd"):
            mgr.get("odd")
        assert mgr.delete("odd") and "odd" not in backend.blobs


class BytesKeys(MinimalBackend):
    """Gives every key back as bytes, valid UTF-8 or not."""

    def torpor_ids(self) -> list[str | bytes]:
        return [k.encode("utf-8") if isinstance(k, str) else k for k in super().torpor_ids()]


def test_keys_given_as_utf8_bytes_are_read_as_ids(clock: torpor.ManualClock) -> None:
    backend = BytesKeys()
    with torpor.open(backend, clock=clock, sweeper=False) as mgr:
        s = mgr.create({"a": 1}, name="日本語", timeout_ms=10)
        backend.blobs[b"\xff\xfe"] = b"TP"  # type: ignore[index]
        assert list(mgr.ids()) == [s.id] and len(mgr) == 1
        assert mgr.list_utf8_ids() == [s.id]
        clock.advance(11)
        assert mgr.cleanup_expired() == 1


class StaleExpiryIndex(MinimalBackend):
    """An expiry index whose first 1,500 answers are stale: sessions that no longer
    qualify (or no longer exist), as an index a crash left behind would give."""

    def __init__(self) -> None:
        super().__init__()
        self.stale = [f"stale-{i:04}" for i in range(1500)]

    def torpor_capabilities(self) -> list[torpor.Capability]:
        return [torpor.Capability.NATIVE_EXPIRY]

    def torpor_expired_ids(self, now_ms: int, limit: int) -> list[str]:
        expired = [
            k
            for k, blob in self.blobs.items()
            if (r := Record.from_blob(blob)).timeout_ms is not None
            and now_ms - r.last_accessed > r.timeout_ms
        ]
        return (self.stale + sorted(expired))[:limit]


def test_a_front_of_stale_index_entries_never_stops_a_sweep(clock: torpor.ManualClock) -> None:
    backend = StaleExpiryIndex()
    with torpor.open(backend, clock=clock, sweeper=False, sweep_batch_size=100) as mgr:
        for i in range(1000):
            mgr.create({}, session_id=f"fresh-{i}", timeout_ms=None)  # never expire
        backend.stale += [f"fresh-{i}" for i in range(1000)]  # offered, never qualifying
        for i in range(50):
            mgr.create({}, session_id=f"old-{i}", timeout_ms=10)
        clock.advance(11)
        assert mgr.cleanup_expired() == 50
        assert mgr.stats().expired_pending == 0


def test_a_damaged_message_never_loses_the_others_taken_with_it(
    mgr: torpor.Manager, caplog: pytest.LogCaptureFixture
) -> None:
    s = mgr.create({})
    mgr.send(s.id, "first")
    mgr._mailbox.send(s.id, s.incarnation, b"\xc1", False)  # damaged bytes in the queue
    mgr.send(s.id, "third")
    with caplog.at_level(logging.ERROR, logger="torpor"):
        assert mgr.receive(s.id, max_messages=10) == ["first", "third"]
    assert "damaged message" in caplog.text and mgr.pending(s.id) == 0


def test_damage_past_the_log_limit_is_summed_up_once_and_still_counted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from torpor import _iteration

    monkeypatch.setattr(_iteration, "_LOGGED_LIMIT", 5)  # 10,000 in production
    backend = MinimalBackend()
    with torpor.open(backend, sweeper=False) as mgr:
        good = mgr.create({}).id
        for i in range(8):
            backend.blobs[f"junk-{i}"] = b"not a torpor record"
        with caplog.at_level(logging.WARNING, logger="torpor"):
            for _ in range(2):  # walked past twice: logged once all the same
                assert list(mgr.ids(batch_size=3)) == [good]
        assert mgr.stats().damaged == 8  # the log is capped, the count is not
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("torpor")]
    skipped = [m for m in messages if m.startswith("skipping stored value under 'junk-")]
    assert len(skipped) == 5, messages
    assert messages.count("more than 5 damaged or foreign records; no longer logging each") == 1
