"""The "argument not given" marker of ``create(timeout_ms=...)``, where ``None`` means
"never expires" and so cannot mean "not given"."""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT", "Default"]


class Default:
    def __repr__(self) -> str:
        return "<default>"


DEFAULT: Final = Default()
