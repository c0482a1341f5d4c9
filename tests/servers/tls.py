"""TLS for test servers: a throwaway CA and a server certificate for 127.0.0.1, made
with the ``openssl`` command line (Debian has it; the ``cryptography`` package is not
a test dependency), and the server's TLS settings."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.servers.ports import HOST

# What a server built without TLS says when given a tls-port (Valkey 8, Redis 7.2+);
# Redis 7.0 without TLS refuses the tls-* directives themselves.
UNSUPPORTED_MARKERS = (
    "Failed finding TLS support",
    "Missing implement of connection type tls",
    "TLS is not supported",
    "not compiled with TLS",
)


class TlsUnavailable(RuntimeError):
    """Certificates cannot be made here: no ``openssl`` command."""


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the CA certificate a client trusts (ssl_ca_certs)
    cert: Path
    key: Path

    def server_config(self, port: int) -> list[str]:
        """Config lines that move the server to TLS only, on ``port``."""
        return [
            "port 0",  # no plain TCP listener: a client that skips TLS cannot connect
            f"tls-port {port}",
            f'tls-cert-file "{self.cert}"',
            f'tls-key-file "{self.key}"',
            f'tls-ca-cert-file "{self.ca}"',
            "tls-auth-clients no",
        ]

    def client_options(self) -> dict[str, Any]:
        """redis-py options for a client of such a server."""
        return {"ssl": True, "ssl_ca_certs": str(self.ca)}


def make_tls_files(folder: Path) -> TlsFiles:
    """A CA and a server certificate signed by it (for ``127.0.0.1`` and ``localhost``,
    valid two days), written into ``folder``.  EC keys: made in milliseconds."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TlsUnavailable("no openssl command on PATH to make test certificates with")
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(folder / "ca.crt", folder / "server.crt", folder / "server.key")
    ca_key, csr = folder / "ca.key", folder / "server.csr"
    extensions = folder / "server.ext"
    extensions.write_text(
        f"subjectAltName = IP:{HOST}, DNS:localhost\n"
        "basicConstraints = CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n",
        encoding="utf-8",
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for argv in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", files.ca, "-days", "2",
         "-subj", "/CN=torpor test CA",
         "-addext", "basicConstraints = critical, CA:TRUE",
         "-addext", "keyUsage = critical, keyCertSign, cRLSign"],
        ["req", "-new", *ec, "-keyout", files.key, "-out", csr, "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", csr, "-CA", files.ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", files.cert, "-days", "2", "-extfile", extensions],
    ):  # fmt: skip
        done = subprocess.run(
            [openssl, *map(str, argv)], capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"openssl {argv[0]} failed: {done.stderr.strip()}")
    return files
