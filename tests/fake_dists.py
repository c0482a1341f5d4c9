"""Installs throwaway distributions (dist-info + module) into a folder on sys.path, so
entry-point discovery is exercised through the real importlib.metadata."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def make_dist(
    root: Path, dist: str, module: str, source: str, entry_points: dict[str, dict[str, str]]
) -> None:
    (root / f"{module}.py").write_text(source, encoding="utf-8")
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in eps.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    importlib.invalidate_caches()
    sys.modules.pop(module, None)
