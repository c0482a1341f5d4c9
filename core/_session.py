"""The session record handed to users."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from torpor import codec

__all__ = ["Session", "make_session"]


@dataclass(frozen=True, slots=True, eq=False)
class Session:
    """An immutable snapshot of one session.

    ``data`` belongs to the caller: torpor never keeps a reference to a dict it handed
    out or was handed, so mutating it changes nothing stored.  Write changes back with
    ``Manager.update`` (atomic read-modify-write) or ``Manager.save`` (optimistic).

    ``version`` counts writes of ``data`` (create, update, save).  Touching, waking,
    hibernating and ``set_timeout`` leave it alone, so that two readers never make each
    other's ``save`` conflict.

    ``incarnation`` identifies this life of the id: a session deleted or expired and
    created again under the same id has another one, and ``save`` of a copy from the
    old life raises ``SessionNotFound`` instead of overwriting the new session.
    """

    id: str
    data: dict[str, Any]
    created_at: int
    last_accessed: int
    timeout_ms: int | None
    version: int
    hibernated: bool = False
    incarnation: int = 0

    def is_expired(self, now: int) -> bool:
        """Expired iff it has a timeout and strictly more than that has passed."""
        return self.timeout_ms is not None and now - self.last_accessed > self.timeout_ms

    def expires_at(self) -> int | None:
        """The last millisecond at which the session is still alive, or None."""
        return None if self.timeout_ms is None else self.last_accessed + self.timeout_ms

    def _fields(self) -> tuple[object, ...]:
        return (
            self.id, self.data, self.created_at, self.last_accessed, self.timeout_ms,
            self.version, self.hibernated, self.incarnation,
        )  # fmt: skip

    def __eq__(self, other: object) -> bool:
        # Written out (not the dataclass's) so that a session whose data is decoded on
        # first read (_LazySession) equals the same session built any other way.
        if not isinstance(other, Session):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # data is a dict, as with eq=True


class _LazySession(Session):
    """A Session whose data stays encoded until it is first read.

    ``create``, ``update`` and ``save`` return one: the manager has just encoded the
    data (to check and store it), so the bytes are known to decode, and a caller who
    only wanted the id or the version never pays the decode.  Reads (``get``,
    ``peek``) decode at once, so that damaged stored data raises there."""

    __slots__ = ("_payload",)

    @property
    def data(self) -> dict[str, Any]:
        try:
            return _get_data(self)  # type: ignore[no-any-return]
        except AttributeError:
            pass
        with _decoding:  # two threads reading it first must get the same dict
            try:
                return _get_data(self)  # type: ignore[no-any-return]
            except AttributeError:
                data = codec.decode_data(_get_payload(self))
                _set_data(self, data)
                _del_payload(self)
                return data

    @data.setter
    def data(self, value: dict[str, Any]) -> None:
        _set_data(self, value)  # dataclasses.replace() builds one through __init__

    def __repr__(self) -> str:
        # The dataclass's repr names the class: a session is a Session to its reader.
        return "Session" + Session.__repr__(self)[len("_LazySession") :]


# Building a Session is on every read.  A frozen dataclass's __init__ goes through
# object.__setattr__ per field (0.8 µs); setting the slots through their descriptors
# gives the same immutable object in 0.45 µs.  Only torpor's own code uses this.
_slot = {name: Session.__dict__[name].__set__ for name in Session.__slots__}
_set_id, _set_data, _set_created = _slot["id"], _slot["data"], _slot["created_at"]
_set_accessed, _set_timeout = _slot["last_accessed"], _slot["timeout_ms"]
_set_version, _set_hibernated = _slot["version"], _slot["hibernated"]
_set_incarnation = _slot["incarnation"]
_get_data = Session.__dict__["data"].__get__
_get_payload = _LazySession.__dict__["_payload"].__get__
_set_payload = _LazySession.__dict__["_payload"].__set__
_del_payload = _LazySession.__dict__["_payload"].__delete__
_decoding = threading.Lock()
_new = object.__new__


def make_session(
    sid: str,
    data: dict[str, Any] | bytes,
    created_at: int,
    last_accessed: int,
    timeout_ms: int | None,
    version: int,
    hibernated: bool,
    incarnation: int,
) -> Session:
    """``Session(...)`` without the frozen-dataclass overhead (same result).  With
    ``data`` as encoded bytes (msgpack that is known to decode), a session that
    decodes them when ``data`` is first read."""
    if isinstance(data, bytes):
        session: Session = _new(_LazySession)
        _set_payload(session, data)
    else:
        session = _new(Session)
        _set_data(session, data)
    _set_id(session, sid)
    _set_created(session, created_at)
    _set_accessed(session, last_accessed)
    _set_timeout(session, timeout_ms)
    _set_version(session, version)
    _set_hibernated(session, hibernated)
    _set_incarnation(session, incarnation)
    return session
