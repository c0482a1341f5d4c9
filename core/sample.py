"""Realistic session data for the demo, the benchmarks and the kit: a chat-like history (public)."""

from __future__ import annotations

import random
from typing import Any

_TEXT = (
    "the session agent tool call result please answer context window token model "
    "reply summary file search query user assistant system plan step retry cache "
    "こんにちは 세션 مرحبا नमस्ते 你好 emoji🙂 café naïve"
)
_WORDS = _TEXT.split()
_NAMES = ["日本語", "한국어", "العربية", "हिन्दी", "中文", "emoji🚀", "Ελληνικά", "ไทย"]


def chat_session(rng: random.Random, turns: int = 12) -> dict[str, Any]:
    """About 3 KB of msgpack: a user, some settings and a conversation history."""
    history = [
        {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": " ".join(rng.choice(_WORDS) for _ in range(rng.randint(20, 40))),
            "ts": 1_700_000_000_000 + i * 1_000,
            "tokens": rng.randint(10, 400),
        }
        for i in range(turns)
    ]
    return {
        "user": f"user-{rng.randrange(1_000_000)}",
        "locale": rng.choice(["en", "ja", "ko", "ar", "hi", "zh"]),
        "settings": {"model": "m-large", "temperature": 0.7, "tools": ["search", "files"]},
        "history": history,
    }


def utf8_name(rng: random.Random) -> str:
    return rng.choice(_NAMES)
