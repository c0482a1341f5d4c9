"""Password-protected test servers: ``requirepass`` for the default user, or a named
ACL user (the default user then disabled), and what the harness's own clients and a
test's URL need to authenticate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote


@dataclass(frozen=True)
class Auth:
    password: str
    username: str | None = None  # None: the default user, with requirepass

    def __repr__(self) -> str:
        # Tests assert that passwords never show; the harness's own reprs keep to that.
        return f"Auth(username={self.username!r}, password='***')"

    def server_config(self) -> list[str]:
        if self.username is None:
            return [f'requirepass "{self.password}"']
        return [
            f"user {self.username} on >{self.password} ~* &* +@all",
            "user default off",
        ]

    def replica_config(self) -> list[str]:
        """What a replica needs to sync from a primary protected by this."""
        lines = [f'masterauth "{self.password}"']
        if self.username is not None:
            lines.append(f"masteruser {self.username}")
        return lines

    def sentinel_config(self, service_name: str) -> list[str]:
        """What a sentinel needs to monitor data servers protected by this."""
        lines = [f'sentinel auth-pass {service_name} "{self.password}"']
        if self.username is not None:
            lines.append(f"sentinel auth-user {service_name} {self.username}")
        return lines

    def client_options(self) -> dict[str, Any]:
        return {"username": self.username, "password": self.password}

    def userinfo(self) -> str:
        """``user:password@`` for a URL (quoted)."""
        return f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
