"""A backend with only the four required hooks, storing opaque blobs in a dict.

It claims no capability, so every manager call goes through the core's fallbacks:
iteration by id snapshot, generic hibernation and expiry by scan, the in-process
mailbox, find by scan, and the core's per-id locks for atomic writes.
"""

from __future__ import annotations

import threading

from torpor import Record


class MinimalBackend:
    name = "minimal"

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.closed = False

    def torpor_fetch(self, session_id: str) -> bytes | None:
        return self.blobs.get(session_id)

    def torpor_store(self, record: Record) -> None:
        blob = record.blob
        with self.lock:
            self.blobs[record.id] = blob

    def torpor_delete(self, session_id: str) -> bool:
        with self.lock:
            return self.blobs.pop(session_id, None) is not None

    def torpor_ids(self) -> list[str | bytes]:
        with self.lock:
            return list(self.blobs)

    def conformance_plant(self, key: bytes, value: bytes) -> None:
        """For the conformance kit: store ``value`` under ``key`` as something else
        sharing the store would, unchecked.  A UTF-8 key is kept as ``str``, like the
        ids the hooks get; any other as ``bytes``, as ``torpor_ids`` may return it."""
        try:
            stored: str | bytes = key.decode("utf-8")
        except UnicodeDecodeError:
            stored = key
        with self.lock:
            self.blobs[stored] = value  # type: ignore[index]
