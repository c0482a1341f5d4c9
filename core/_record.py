"""``Record``: what crosses the seam between the manager and a backend.

The manager owns every rule (ids, expiry, versions, hibernation); a backend only keeps
records.  A record carries the session's metadata plus its data in one or both of two
forms:

* ``payload``: the encoded data (msgpack; zstd-compressed iff ``hibernated``);
* ``data``: the live ``dict``, for in-process backends that keep Python objects.

Persistent backends store :attr:`Record.blob` and give the bytes back from ``fetch``;
in-process backends may keep the record itself.  A backend that indexes records
reads them with :meth:`Record.of` (bytes or a record, checked) and
:meth:`Record.session_data` (the data, live or hibernated), never by decoding the
bytes itself; ``docs/plugin-authors.md`` ("Reading records") shows how.

``incarnation`` tells two lives of one id apart: ``create`` draws 63 random bits for
it, and every later version of that session keeps it.  A session deleted (or expired)
and created again under the same id is a new incarnation, so nothing written for the
old one (a stale ``Session`` copy, mail, index entries) can reach the new one.

Whatever a backend keeps, the manager never hands a backend-held ``dict`` to a user:
:meth:`Record.to_session` always builds an independent copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from torpor import codec
from torpor._session import Session, make_session
from torpor.errors import SerializationError

__all__ = ["Record"]

_tuple_new = tuple.__new__


class Record(NamedTuple):
    """One stored session.  Immutable; derive new records with the helpers.

    Fields (the metadata is readable without decoding the data):

    ``id``
        the session id (a valid id: see ``docs/contract.md``, "Session ids").
    ``created_at``, ``last_accessed``
        milliseconds on the manager's clock.  ``last_accessed`` is what idleness
        (``last_accessed < cutoff``) and expiry are measured from.
    ``timeout_ms``
        ``None``: never expires; else expired iff ``now - last_accessed >
        timeout_ms`` (:meth:`is_expired`; :meth:`expires_at` is the last live ms).
    ``version``
        counts writes of the data (1 at create); touches, wakes, hibernation and
        timeout changes keep it, so an index of the data need only be rebuilt when
        ``version`` or ``incarnation`` changes.
    ``hibernated``
        the compact form: ``payload`` is compressed and ``data`` is None.
    ``incarnation``
        which life of the id this is (see the module docstring).
    ``payload``, ``data``
        the data, encoded and/or live: read it with :meth:`session_data`.

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

    @classmethod
    def of(cls, value: Record | bytes | bytearray | memoryview, key: str | None = None) -> Record:
        """The record in ``value``, which is what a backend keeps or gets back from its
        engine: a ``Record`` as it is, stored bytes parsed (:meth:`from_blob`; the
        data stays encoded).

        ``SerializationError`` if ``value`` is not an intact torpor record, or, when
        ``key`` is given (the id it is stored under), if the record names another id
        (copied or written there by something else).  The manager treats such values as
        damaged; an index should skip them."""
        if isinstance(value, Record):
            record = value
        elif isinstance(value, bytes | bytearray | memoryview):
            record = cls.from_blob(bytes(value))
        else:
            raise SerializationError(
                f"the stored value is a {type(value).__name__}, not a torpor record"
            )
        if key is not None and record.id != key:
            raise SerializationError(
                f"the record stored under {key!r} names another id ({record.id!r}); "
                "it was copied or written there by something else"
            )
        return record

    def session_data(self, limit: int) -> dict[str, Any]:
        """The session's data, whether this record is live or hibernated: for a backend
        that indexes data fields (``torpor_find``) without decoding bytes itself.

        Read-only: for a record that holds live ``data`` this *is* that dict (no copy),
        which other records may share.  An encoded payload is decoded, inflating a
        hibernated one to at most ``limit`` bytes (pass ``max_session_bytes``, which
        ``torpor_open`` gets in its options).  ``SerializationError`` if the payload is
        damaged or would inflate past ``limit``."""
        if self.data is not None:
            return self.data
        assert self.payload is not None
        what = f"stored data of session {self.id!r}"
        raw = codec.decompress(self.payload, limit, what) if self.hibernated else self.payload
        return codec.decode_data(raw, what)

    def expires_at(self) -> int | None:
        """The last millisecond at which the session is still alive (``last_accessed +
        timeout_ms``), or None if it never expires: the key of an expiry index, which
        ``torpor_expired_ids(now_ms, ...)`` reads below ``now_ms``."""
        return None if self.timeout_ms is None else self.last_accessed + self.timeout_ms

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
        """Expired iff it has a timeout and strictly more than that has passed."""
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

    def written_session(self, limit: int) -> Session:
        """The ``Session`` a write returns: for a record the manager just encoded, its
        data decodes when first read (see ``torpor._session._LazySession``)."""
        if self.hibernated or self.payload is None:
            return self.to_session(limit)
        return make_session(
            self.id, self.payload, self.created_at, self.last_accessed, self.timeout_ms,
            self.version, False, self.incarnation,
        )  # fmt: skip

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

    def compacted(
        self, payload: bytes | None = None, compress: Callable[[bytes], bytes] = codec.compress
    ) -> Record:
        """The hibernated form: compressed payload, no live data.  Pass ``payload``
        (this record's :meth:`encoded_payload`) if you already have it; the manager
        passes its ``compress`` (``torpor._compaction``)."""
        if self.hibernated:
            return self
        return Record(
            self.id, self.created_at, self.last_accessed, self.timeout_ms, self.version,
            True, self.incarnation,
            compress(self.encoded_payload() if payload is None else payload), None,
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
