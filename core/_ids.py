"""The UTF-8 session id rules (DESIGN §3) and id generation.

An id is a ``str`` of 1 to 255 bytes once encoded as UTF-8, free of control
characters (C0, DEL and C1) and lone surrogates.  Nothing is normalised: NFC and NFD
spellings are two ids.  ``bytes`` are accepted and decoded as strict UTF-8.
"""

from __future__ import annotations

import re
import secrets

from torpor.errors import InvalidSessionId

__all__ = ["MAX_ID_BYTES", "generate_id", "is_valid_id", "validate_id"]

MAX_ID_BYTES = 255

# One pass finds the first forbidden code point: C0 controls, DEL, C1 controls and
# the surrogate range (only lone surrogates can occur in a Python str).
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def validate_id(session_id: object) -> str:
    """Return ``session_id`` as a valid ``str`` id or raise ``InvalidSessionId``.

    The error names the rule and the position (code point index for ``str``, byte
    offset for ``bytes`` that are not UTF-8).
    """
    if type(session_id) is not str:
        if isinstance(session_id, bytes | bytearray | memoryview):
            raw = bytes(session_id)
            try:
                session_id = raw.decode("utf-8", errors="strict")
            except UnicodeDecodeError as exc:
                raise InvalidSessionId(
                    f"session id is not valid UTF-8: byte {exc.start} "
                    f"(0x{raw[exc.start]:02x}) cannot be decoded; pass a str or UTF-8 bytes",
                    rule="invalid_utf8",
                    position=exc.start,
                ) from None
        elif isinstance(session_id, str):
            session_id = str(session_id)
        else:
            raise InvalidSessionId(
                f"session id must be a str (or UTF-8 bytes), not {type(session_id).__name__}",
                rule="type",
            )
    assert isinstance(session_id, str)
    if not session_id:
        raise InvalidSessionId("session id is empty; ids have 1 to 255 bytes", rule="empty")
    bad = _FORBIDDEN.search(session_id)
    if bad is not None:
        pos = bad.start()
        code = ord(session_id[pos])
        if 0xD800 <= code <= 0xDFFF:
            raise InvalidSessionId(
                f"session id has a lone surrogate U+{code:04X} at position {pos}; "
                "ids must be valid Unicode text",
                rule="surrogate",
                position=pos,
            )
        raise InvalidSessionId(
            f"session id has control character U+{code:04X} at position {pos}; "
            "control characters (U+0000-U+001F, U+007F-U+009F) are not allowed",
            rule="control_character",
            position=pos,
        )
    # Cheap bound first: a str of n code points encodes to at most 4n bytes.
    if len(session_id) * 4 > MAX_ID_BYTES:
        size = len(session_id.encode("utf-8"))
        if size > MAX_ID_BYTES:
            raise InvalidSessionId(
                f"session id is {size} bytes in UTF-8; the limit is {MAX_ID_BYTES}",
                rule="too_long",
                position=_first_code_point_past_limit(session_id),
            )
    return session_id


def _first_code_point_past_limit(session_id: str) -> int:
    total = 0
    for index, char in enumerate(session_id):
        total += len(char.encode("utf-8"))
        if total > MAX_ID_BYTES:
            return index
    return len(session_id)  # pragma: no cover - only called when over the limit


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
    token is 22 URL-safe characters, so the name may use up to 224 bytes.
    """
    token = secrets.token_urlsafe(16)  # 16 bytes = 128 bits
    if name is None:
        return f"session_{token}"
    name = validate_id(name)
    return validate_id(f"session_{name}_{token}")
