"""The UTF-8 session id rules (docs/contract.md §2) and id generation.

An id is a ``str`` of 1 to 255 bytes once encoded as UTF-8, free of control
characters (C0, DEL and C1) and lone surrogates.  Nothing is normalised: NFC and NFD
spellings are two ids.  ``bytes`` are accepted and decoded as strict UTF-8.
"""

from __future__ import annotations

import re
import secrets

from torpor.errors import InvalidSessionId

__all__ = [
    "MAX_ID_BYTES",
    "MAX_NAME_BYTES",
    "generate_id",
    "is_valid_id",
    "key_to_id",
    "validate_id",
]

MAX_ID_BYTES = 255

# Generated ids: ``session_<token>`` or ``session_<name>_<token>``.
_PREFIX = "session_"
_SEPARATOR = "_"
_TOKEN_BYTES = 16  # 128 bits
_TOKEN_CHARS = len(secrets.token_urlsafe(_TOKEN_BYTES))  # 22: unpadded URL-safe base64
# The room a name has once the prefix, separator and token are in (224 bytes).
MAX_NAME_BYTES = MAX_ID_BYTES - len(_PREFIX.encode()) - len(_SEPARATOR.encode()) - _TOKEN_CHARS

# One pass finds the first forbidden code point: C0 controls, DEL, C1 controls and
# the surrogate range (only lone surrogates can occur in a Python str).
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def validate_id(session_id: object) -> str:
    """Return ``session_id`` as a valid ``str`` id or raise ``InvalidSessionId``.

    The error names the rule and the position: the code point index when the id was a
    ``str``, the byte offset in the given bytes when it was ``bytes``.
    """
    if (  # the hot path: a short, clean str (every manager call validates its id)
        type(session_id) is str
        and session_id
        and len(session_id) * 4 <= MAX_ID_BYTES
        and _FORBIDDEN.search(session_id) is None
    ):
        return session_id
    return _validate(session_id, what="session id", limit=MAX_ID_BYTES, limit_why="")


def _validate(value: object, *, what: str, limit: int, limit_why: str) -> str:
    """The id rules applied to ``value`` (an id, or the name part of a generated id);
    messages say ``what`` it is."""
    raw: bytes | None = None
    if type(value) is not str:
        if isinstance(value, bytes | bytearray | memoryview):
            raw = bytes(value)
            try:
                value = raw.decode("utf-8", errors="strict")
            except UnicodeDecodeError as exc:
                raise InvalidSessionId(
                    f"{what} is not valid UTF-8: byte {exc.start} "
                    f"(0x{raw[exc.start]:02x}) cannot be decoded; pass a str or UTF-8 bytes",
                    rule="invalid_utf8",
                    position=exc.start,
                ) from None
        elif isinstance(value, str):
            value = str(value)
        else:
            raise InvalidSessionId(
                f"{what} must be a str (or UTF-8 bytes), not {type(value).__name__}",
                rule="type",
            )
    assert isinstance(value, str)
    text = value
    if not text:
        raise InvalidSessionId(f"{what} is empty; it needs 1 to {limit} bytes", rule="empty")
    bad = _FORBIDDEN.search(text)
    if bad is not None:
        code = ord(text[bad.start()])
        at, pos = _where(text, bad.start(), raw)
        if 0xD800 <= code <= 0xDFFF:
            raise InvalidSessionId(
                f"{what} has a lone surrogate U+{code:04X} at {at}; ids must be valid Unicode text",
                rule="surrogate",
                position=pos,
            )
        raise InvalidSessionId(
            f"{what} has control character U+{code:04X} at {at}; "
            "control characters (U+0000-U+001F, U+007F-U+009F) are not allowed",
            rule="control_character",
            position=pos,
        )
    # Cheap bound first: a str of n code points encodes to at most 4n bytes.
    if len(text) * 4 > limit:
        size = len(raw) if raw is not None else len(text.encode("utf-8"))
        if size > limit:
            at, pos = _where(text, _first_code_point_past(text, limit), raw)
            raise InvalidSessionId(
                f"{what} is {size} bytes in UTF-8; the limit is {limit}{limit_why}; "
                f"the character at {at} crosses it",
                rule="too_long",
                position=pos,
            )
    return text


def _where(text: str, index: int, raw: bytes | None) -> tuple[str, int]:
    """Wording and value of the position of code point ``index``: for an id given as
    bytes, the byte offset in those bytes (strict UTF-8 re-encodes to exactly them)."""
    if raw is None:
        return f"position {index}", index
    offset = len(text[:index].encode("utf-8"))
    return f"byte {offset}", offset


def _first_code_point_past(text: str, limit: int) -> int:
    total = 0
    for index, char in enumerate(text):
        total += len(char.encode("utf-8"))
        if total > limit:
            return index
    return len(text)  # pragma: no cover - only called when over the limit


def key_to_id(key: object) -> str | None:
    """A stored key as a session id, or None for a foreign key.  A backend should give
    keys as ``str``; valid UTF-8 ``bytes`` are read as the id they spell."""
    if isinstance(key, bytes):
        try:
            key = key.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return key if isinstance(key, str) and is_valid_id(key) else None


def is_valid_id(session_id: object) -> bool:
    """True if ``session_id`` passes the id rules."""
    try:
        validate_id(session_id)
    except InvalidSessionId:
        return False
    return True


def generate_id(name: str | None = None) -> str:
    """A new id carrying 128 random bits from ``secrets``.

    Without a name: ``session_<token>``; with one: ``session_<name>_<token>``.  The
    token is 22 URL-safe characters, so the name may use up to ``MAX_NAME_BYTES``
    (224) bytes.  A bad name raises ``InvalidSessionId`` about the name: the rules of
    ids, with positions within the name.
    """
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    if name is None:
        return f"{_PREFIX}{token}"
    why = (
        f" for a name (a generated id is {_PREFIX}<name>{_SEPARATOR}<{_TOKEN_CHARS}-character"
        f" token>, at most {MAX_ID_BYTES} bytes)"
    )
    name = _validate(name, what="session name", limit=MAX_NAME_BYTES, limit_why=why)
    return f"{_PREFIX}{name}{_SEPARATOR}{token}"
