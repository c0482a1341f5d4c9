"""``Record``: what crosses the seam between the manager and a backend.

The manager owns every rule (ids, expiry, versions, hibernation); a backend only keeps
records.  A record carries the session's metadata plus its data in one or both of two
forms:

* ``payload``: the encoded data (msgpack; zstd-compressed iff ``hibernated``);
* ``data``: the live ``dict``, for in-process backends that keep Python objects.

Persistent backends store :attr:`Record.blob` and give the bytes back from ``fetch``;
in-process backends may keep the record itself.

``incarnation`` tells two lives of one id apart: ``create`` draws 63 random bits for
it, and every later version of that session keeps it.  A session deleted (or expired)
and created again under the same id is a new incarnation, so nothing written for the
old one (a stale ``Session`` copy, mail, index entries) can reach the new one.

Whatever a backend keeps, the manager never hands a backend-held ``dict`` to a user:
:meth:`Record.to_session` always builds an independent copy.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torpor import codec
from torpor._session import Session, make_session

__all__ = ["Record"]

_tuple_new = tuple.__new__


class Record(NamedTuple):
    """One stored session.  Immutable; derive new records with the helpers.

    Invariants (kept by the helpers, which are the only way the core builds records):
    at least one of ``payload`` and ``data`` is set, and a hibernated record has its
    compressed ``payload`` and no ``data``.  A NamedTuple because records are built on
    every read: a frozen dataclass costs 0.9 µs to construct, a tuple a fraction.
    """

    id: str
    created_at: int
    last_accessed: int
    timeout_ms: int | None
    version: int
    hibernated: bool
    incarnation: int
    payload: bytes | None = None
    data: dict[str, Any] | None = None

    # -- reading -----------------------------------------------------------------
    @classmethod
    def from_blob(cls, blob: bytes) -> Record:
        """Parse a stored blob.  The payload stays encoded until it is needed.
        ``SerializationError`` if it is not an intact torpor record."""
        meta, payload, _compressed = codec.decode_envelope(blob)
        return _tuple_new(cls, (*meta, payload, None))  # skips NamedTuple's Python __new__

    @property
    def blob(self) -> bytes:
        """The self-describing bytes a persistent backend stores."""
        return codec.encode_envelope(
            (
                self.id,
                self.created_at,
                self.last_accessed,
                self.timeout_ms,
                self.version,
                self.hibernated,
                self.incarnation,
            ),
            self.encoded_payload(),
            compressed=self.hibernated,
        )

    def encoded_payload(self) -> bytes:
        """The payload, encoding live data if this record has none yet."""
        if self.payload is not None:
            return self.payload
        assert self.data is not None
        return codec.encode_trusted(self.data)

    def is_expired(self, now: int) -> bool:
        return self.timeout_ms is not None and now - self.last_accessed > self.timeout_ms

    def check(self, limit: int) -> None:
        """``SerializationError`` unless the data decodes (within ``limit`` when
        hibernated).  Free for live data; a msgpack decode for an encoded payload."""
        if self.payload is not None:
            what = f"stored data of session {self.id!r}"
            raw = codec.decompress(self.payload, limit, what) if self.hibernated else self.payload
            codec.decode_data(raw, what)

    def to_session(self, limit: int) -> Session:
        """A ``Session`` whose data shares nothing with this record.  ``limit`` bounds
        what a hibernated payload may inflate to (``max_session_bytes``)."""
        if self.payload is None:
            assert self.data is not None
            data = codec.copy_data(self.data)
        else:
            what = f"stored data of session {self.id!r}"
            raw = codec.decompress(self.payload, limit, what) if self.hibernated else self.payload
            data = codec.decode_data(raw, what)
        return make_session(
            self.id,
            data,
            self.created_at,
            self.last_accessed,
            self.timeout_ms,
            self.version,
            self.hibernated,
            self.incarnation,
        )

    # -- deriving ----------------------------------------------------------------
    # Plain constructor calls: dataclasses.replace costs ~1 µs more, on the hot path.
    def touched(self, now: int) -> Record:
        return Record(
            self.id, self.created_at, now, self.timeout_ms, self.version, self.hibernated,
            self.incarnation, self.payload, self.data,
        )  # fmt: skip

    def rewritten(self, payload: bytes, now: int) -> Record:
        """The next version with new data (stored active, touched at ``now``)."""
        return Record(
            self.id, self.created_at, max(now, self.last_accessed), self.timeout_ms,
            self.version + 1, False, self.incarnation, payload, None,
        )  # fmt: skip

    def with_timeout(self, timeout_ms: int | None) -> Record:
        return Record(
            self.id, self.created_at, self.last_accessed, timeout_ms, self.version,
            self.hibernated, self.incarnation, self.payload, self.data,
        )  # fmt: skip

    def compacted(self, payload: bytes | None = None) -> Record:
        """The hibernated form: compressed payload, no live data.  Pass ``payload``
        (this record's :meth:`encoded_payload`) if you already have it."""
        if self.hibernated:
            return self
        return Record(
            self.id, self.created_at, self.last_accessed, self.timeout_ms, self.version,
            True, self.incarnation,
            codec.compress(self.encoded_payload() if payload is None else payload), None,
        )  # fmt: skip

    def woken(self, limit: int) -> Record:
        """The active form, with the payload decompressed (data not decoded); ``limit``
        as in :meth:`to_session`."""
        if not self.hibernated:
            return self
        assert self.payload is not None
        return Record(
            self.id, self.created_at, self.last_accessed, self.timeout_ms, self.version,
            False, self.incarnation,
            codec.decompress(self.payload, limit, f"stored data of session {self.id!r}"), None,
        )  # fmt: skip

    def live(self) -> Record:
        """The form in-process backends keep for active sessions: decoded data only."""
        if self.hibernated or self.data is not None:
            return self
        assert self.payload is not None
        return Record(
            self.id, self.created_at, self.last_accessed, self.timeout_ms, self.version,
            False, self.incarnation, None, codec.decode_data(self.payload),
        )  # fmt: skip
