"""The UTF-8 id corpus: ids every backend must keep exactly, and ids none may accept."""

from __future__ import annotations

import unicodedata

__all__ = ["INVALID_IDS", "VALID_IDS"]

_CAFE_NFC = unicodedata.normalize("NFC", "café-session")
_CAFE_NFD = unicodedata.normalize("NFD", "café-session")

VALID_IDS: dict[str, str] = {
    "ascii": "plain-session_01",
    "japanese": "日本語のセッション",
    "chinese": "中文会话标识",
    "korean_hangul": "한국어세션",
    "arabic": "جلسة-عربية",
    "hebrew": "מזהה-הפעלה",
    "devanagari": "सत्र-पहचान",
    "thai": "เซสชันภาษาไทย",
    "emoji": "😀🎉",
    "astral_math": "𝒮𝑒𝓈𝓈𝒾𝑜𝓃",
    "zwj_family": "👩\u200d👩\u200d👧\u200d👦",
    "zwj_flag": "🏳️\u200d🌈",
    "skin_tone": "👋🏽",
    "combining_marks": "e\u0301\u0302\u0323",
    "nfc": _CAFE_NFC,
    "nfd": _CAFE_NFD,
    "max_3_byte_tail": "a" * 252 + "あ",  # 255 bytes ending in a 3-byte character
    "max_4_byte_tail": "a" * 251 + "😀",  # 255 bytes ending in a 4-byte character
    "max_all_3_byte": "語" * 85,  # 255 bytes
    "single_byte": "x",
    "space_inside": "with space",
    "private_use": "\ue000\uf8ff",
    "noncharacter": "\ufdd0\uffff",
}
assert _CAFE_NFC != _CAFE_NFD
assert all(1 <= len(v.encode()) <= 255 for v in VALID_IDS.values())

INVALID_IDS: dict[str, object] = {
    "empty": "",
    "nul": "a\x00b",
    "c0_control": "tab\tinside",
    "newline": "line\nbreak",
    "del": "del\x7f",
    "c1_control": "c1\x85",
    "lone_high_surrogate": "x\ud800",
    "lone_low_surrogate": "\udc00y",
    "bytes_not_utf8": b"caf\xe9",
    "bytes_truncated": "日".encode()[:2],
    "too_long_3_byte_boundary": "a" * 253 + "あ",  # 256 bytes
    "too_long_4_byte_boundary": "a" * 252 + "😀",  # 256 bytes
    "not_a_string": 42,
}
