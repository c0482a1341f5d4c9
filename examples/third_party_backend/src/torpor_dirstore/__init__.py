"""dirstore: a torpor backend that keeps each session in its own file.

It implements only the four required hooks, so torpor supplies everything else
(iteration, hibernation, expiry, the mailbox, find, atomic updates within a process)
through its fallbacks.  It claims PERSISTENT, the one capability that needs no hook:
sessions survive closing and reopening the folder.
"""

from __future__ import annotations

import base64
import os
import threading
from pathlib import Path
from typing import Any

import torpor

__all__ = ["DirStore", "create_backend"]

_SUFFIX = ".session"


def _filename(session_id: str | bytes) -> str:
    # Ids are any UTF-8 text (slashes, emoji, NFC vs NFD...): never put them in a path
    # raw.  URL-safe base64 of the exact UTF-8 bytes is reversible and keeps the two
    # spellings of "café" apart.  255 bytes of id make 340 characters, over most file
    # systems' 255-byte name limit, so long ids are split into a folder and a name.
    raw = session_id.encode("utf-8") if isinstance(session_id, str) else session_id
    encoded = base64.urlsafe_b64encode(raw).decode("ascii")
    return (
        encoded[:200] + "/" + encoded[200:] + _SUFFIX if len(encoded) > 200 else encoded + _SUFFIX
    )


def _session_id(relative: str) -> str | bytes:
    raw = base64.urlsafe_b64decode(relative.replace("/", "").removesuffix(_SUFFIX))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw  # torpor skips (and logs) keys that are not valid ids


class DirStore:
    """Sessions as files under ``path``."""

    name = "dirstore"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()  # guards the temporary-file names

    # torpor calls this once to learn what the backend does natively.
    def torpor_capabilities(self) -> list[torpor.Capability]:
        return [torpor.Capability.PERSISTENT]

    def torpor_fetch(self, session_id: str) -> bytes | None:
        try:
            return (self.root / _filename(session_id)).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:  # never let a raw engine error reach the user
            raise torpor.BackendUnavailable(f"dirstore cannot read a session: {exc}") from exc

    def torpor_store(self, record: torpor.Record) -> None:
        target = self.root / _filename(record.id)
        try:
            target.parent.mkdir(exist_ok=True, mode=0o700)
            with self._lock:
                temporary = target.with_name(target.name + f".{threading.get_ident()}.tmp")
            # 0600 from the start, then an atomic rename: a reader sees the old record
            # or the new one, never half of one.
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(record.blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temporary, target)
        except OSError as exc:
            raise torpor.BackendUnavailable(f"dirstore cannot write a session: {exc}") from exc

    def torpor_delete(self, session_id: str) -> bool:
        try:
            (self.root / _filename(session_id)).unlink()
        except FileNotFoundError:
            return False
        return True

    def torpor_ids(self) -> list[str | bytes]:
        return [
            _session_id(p.relative_to(self.root).as_posix()) for p in self.root.rglob("*" + _SUFFIX)
        ]

    # Optional, not a hook: lets the conformance kit check that files torpor did not
    # write (foreign or damaged ones) are skipped and counted, never a crash.
    def conformance_plant(self, key: bytes, value: bytes) -> None:
        target = self.root / _filename(key)
        target.parent.mkdir(exist_ok=True, mode=0o700)
        target.write_bytes(value)


# Static metadata, read without building a backend: `torpor backends` lists the
# capabilities, and the conformance kit gives each test its own folder for `path`
# (`{storage}/sessions`), so `torpor conformance dirstore` needs no options.
@torpor.backend_factory(
    capabilities={torpor.Capability.PERSISTENT}, storage_options={"path": "sessions"}
)
def create_backend(**options: Any) -> DirStore:
    """Entry point ``dirstore``.  Option: ``path``, the folder (required)."""
    torpor.check_backend_options("dirstore", options, {"path"}, required={"path"})
    return DirStore(options["path"])
