"""The capability matrix printed after a kit run (and optionally written as JSON)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torpor import Capability
from torpor.conformance._areas import AREAS

__all__ = ["Matrix"]

OUTCOMES = ("passed", "failed", "xfailed", "skipped")


@dataclass
class Matrix:
    backend: str
    capabilities: frozenset[Capability] | None = None
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)
    skips: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """Per area, each skipped test (its name, parameters included) and the reason."""

    def record(self, area: str, outcome: str, test: str, *, reason: str | None = None) -> None:
        self.counts.setdefault(area, Counter())[outcome] += 1
        if outcome == "failed":
            self.failures.setdefault(area, []).append(test)
        elif outcome == "skipped":
            name = test.rsplit("::", 1)[-1]
            self.skips.setdefault(area, []).append((name, reason or "no reason given"))

    def mode(self, area: str) -> str:
        spec = AREAS[area]
        if spec.capability is None:
            return "core"
        if self.capabilities is None:
            return "unknown"
        if spec.capability in self.capabilities:
            return "native"
        return "fallback" if spec.fallback else "missing"

    def status(self, area: str) -> str:
        counts = self.counts.get(area, Counter())
        if counts["failed"]:
            return "failing"
        if not counts["passed"] and not counts["xfailed"]:
            return "missing" if counts["skipped"] else "not run"
        return self.mode(area)

    @property
    def failing_areas(self) -> list[str]:
        return [a for a in AREAS if self.counts.get(a, Counter())["failed"]]

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"area": a, "status": self.status(a), "mode": self.mode(a)}
            | {o: self.counts.get(a, Counter())[o] for o in OUTCOMES}
            | {
                "skipped_tests": [
                    {"test": test, "reason": reason} for test, reason in self.skips.get(a, [])
                ]
            }
            for a in AREAS
            if a in self.counts
        ]

    def render(self) -> str:
        head = f"{'area':<13}{'status':<10}{'mode':<10}" + "".join(f"{o:>9}" for o in OUTCOMES)
        lines = [f"torpor conformance matrix: {self.backend}", head, "-" * len(head)]
        for row in self.rows():
            lines.append(
                f"{row['area']:<13}{row['status']:<10}{row['mode']:<10}"
                + "".join(f"{row[o]:>9}" for o in OUTCOMES)
            )
        skipped = [(a, test, reason) for a in AREAS for test, reason in self.skips.get(a, [])]
        if skipped:
            lines.append(f"SKIPPED ({len(skipped)}):")
            width = max(len(test) for _, test, _ in skipped)
            for area, test, reason in skipped:
                lines.append(f"  {area:<13}{test:<{width}}  {reason}")
        if self.failing_areas:
            lines.append(f"FAILING AREAS: {', '.join(self.failing_areas)}")
            for area in self.failing_areas:
                for test in self.failures[area][:5]:
                    lines.append(f"  {area}: {test}")
        return "\n".join(lines)

    def write_json(self, path: Path) -> None:
        payload = {
            "backend": self.backend,
            "capabilities": sorted(c.value for c in self.capabilities or ()),
            "areas": self.rows(),
            "failing_areas": self.failing_areas,
        }
        path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
