"""Where a namespace's data lives in the keyspace.

Every key of a namespace carries the hash tag ``{<namespace>}``, so on a Cluster all of
them fall in one slot and every hook stays one atomic server-side step (a configurable
bucket count will split a namespace over several tags when Cluster support lands).

``torpor:{ns}:r:<id>``  the record: ``Record.blob`` as the manager encoded it
``torpor:{ns}:ids``     sorted set, every id with score 0: walked BYLEX (ids ordered by
                        their UTF-8 bytes), so a walk is exactly-once where SCAN is not
``torpor:{ns}:idle``    sorted set, active (not hibernated) ids by ``last_accessed``
``torpor:{ns}:exp``     sorted set, ids with a timeout by ``Record.expires_at()``
``torpor:{ns}:t:<hex>`` the token of a recent conditional write (expires in 60 s)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Keys"]


@dataclass(frozen=True)
class Keys:
    namespace: str

    @property
    def prefix(self) -> bytes:
        return b"torpor:{" + self.namespace.encode("utf-8") + b"}:"

    @property
    def record_prefix(self) -> bytes:
        return self.prefix + b"r:"

    @property
    def ids(self) -> bytes:
        return self.prefix + b"ids"

    @property
    def idle(self) -> bytes:
        return self.prefix + b"idle"

    @property
    def expiry(self) -> bytes:
        return self.prefix + b"exp"

    @property
    def indexes(self) -> list[bytes]:
        """The keys every write script takes first, in this order."""
        return [self.ids, self.idle, self.expiry]

    def token(self, token: str) -> bytes:
        return self.prefix + b"t:" + token.encode("ascii")

    def record(self, member: bytes) -> bytes:
        return self.record_prefix + member
