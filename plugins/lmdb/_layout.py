"""The named databases of one namespace, and the marker that says they belong together.

A namespace ``<ns>`` (default ``torpor``) owns these named databases::

    <ns>.sessions   id -> stored record (the envelope bytes)
    <ns>.meta       id -> last_accessed, expiry time, version, flags, incarnation
    <ns>.idle       last_accessed (8 bytes, big-endian) + id -> ''   active sessions only
    <ns>.expiry     expiry time (8 bytes, big-endian) + id -> ''     sessions with a timeout
    <ns>.fields     BLAKE2b-16(field) -> field                       create_index() calls
    <ns>.index      hash(field) + hash(value) + id -> ''             see _index.py
    <ns>.entries    id -> its index keys, to remove them on rewrite
    <ns>.mail       id 0x00 lane seq -> message                      see _mailbox.py
    <ns>.counters   name -> 8-byte counter (the mail sequence)
    <ns>.tombs      time (ns) + id 0x00 incarnation -> ''            cancellations, by age
    <ns>.tomb_ids   id 0x00 incarnation -> time (ns) + reason        the same, by session

and a *marker* in the environment's main database, ``torpor-layout:<ns>`` -> JSON
naming the layout version and the databases.  On open:

* marker present: every database it lists must exist.  They are opened without
  ``create``: a missing one means the store is damaged (``BackendUnavailable`` naming
  it), and nothing is written, so the damage is left as found for recovery.  A layout
  newer than this torpor knows is a ``ConfigError``.
* no marker, no database: a new namespace; everything is created with the marker, in
  one transaction.
* no marker but the databases of torpor 0.1 (which wrote none): the store is adopted
  in one transaction: the two tombstone databases are created, 0.1's ``cancels`` is
  dropped, the field list is converted and the indexes rebuilt with
  ``torpor.indexing`` keys, and the marker is written.  Metadata entries in 0.1's
  shorter format are read as they are (the incarnation comes from the record).
* anything else (some databases, no marker): damaged, ``BackendUnavailable``.

Database names are matched exactly (namespace, a dot, a name of the list above), never
by prefix: namespaces may contain dots, and ``app.v2.sessions`` belongs to ``app.v2``.

What cannot be checked: damaged pages
-------------------------------------
LMDB keeps no checksums of its pages.  What torpor checks at open is cheap and whole-
file: the data file must not be cut short of its last page or of LMDB's two meta pages
(``_env.py``: reading past the end of the map would raise SIGBUS, and LMDB would start
a fresh store over an empty file), the layout marker and the databases it lists must
be there (this module), and LMDB itself picks the intact one of its two meta pages
(bit flips in them were all caught in testing).  Damage *inside* the file, a flipped
bit in a B-tree page or a page overwritten with zeros by a failing disk or a copy
taken mid-write, is not detected by LMDB: following a bad page pointer or an
inconsistent page can crash the process (SIGSEGV, or an assertion ``abort()`` in
``mdb.c``) instead of raising an error, at open or at any later read.  Catching it
would mean reading and verifying every page (a full ``mdb_dump`` of the store), which
an open must not cost; torpor does not try.  The remedy is operational: trusted local
storage (preferably with checksums: ZFS, btrfs), backups made with ``mdb_copy`` (or
``lmdb.Environment.copy``) rather than by copying a file in use, and a restore when a
process dies in ``mdb.c`` on a store (check a copy with ``mdb_stat -a``/``mdb_dump``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Final

import lmdb

from torpor.errors import BackendUnavailable, ConfigError
from torpor.indexing import KEY_FORMAT
from torpor.plugins.lmdb._env import Db, Txn

__all__ = ["LAYOUT_VERSION", "NAMES", "Dbs", "field_key", "open_layout"]

LAYOUT_VERSION: Final = 1
NAMES: Final = (
    "sessions", "meta", "idle", "expiry", "fields", "index", "entries", "mail", "counters",
    "tombs", "tomb_ids",
)  # fmt: skip
_V01_NAMES: Final = (
    "sessions", "meta", "idle", "expiry", "fields", "index", "entries", "mail", "cancels",
    "counters",
)  # fmt: skip


class Dbs:
    """The handles of one namespace's databases.  The attributes are replaced when the
    environment is reopened, so always read them at the point of use."""

    sessions: Db
    meta: Db
    idle: Db
    expiry: Db
    fields: Db
    index: Db
    entries: Db
    mail: Db
    counters: Db
    tombs: Db
    tomb_ids: Db

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def name(self, db: str) -> str:
        return f"{self.namespace}.{db}"


def field_key(field: str) -> bytes:
    """The key of ``field`` in the ``fields`` database (any length, any code points)."""
    return hashlib.blake2b(field.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _marker_key(namespace: str) -> bytes:
    # ':' cannot occur in a namespace or a database name, so this never collides.
    return f"torpor-layout:{namespace}".encode()


def _marker() -> bytes:
    return json.dumps(
        {"layout": LAYOUT_VERSION, "databases": list(NAMES), "index_keys": KEY_FORMAT}
    ).encode()


_KNOWN: Final = tuple(dict.fromkeys((*NAMES, *_V01_NAMES)))  # every name a layout used


def _present(txn: Txn, namespace: str) -> set[str]:
    """Names of the namespace's databases that exist (their keys in the main db).

    Exact names only: namespaces may contain dots, so ``app.v2.sessions`` (namespace
    ``app.v2``) must not count as a database of namespace ``app``."""
    return {n for n in _KNOWN if txn.get(f"{namespace}.{n}".encode()) is not None}


def _damaged(dbs: Dbs, missing: list[str], why: str) -> BackendUnavailable:
    names = ", ".join(repr(dbs.name(n)) for n in missing)
    return BackendUnavailable(
        f"the LMDB store is damaged: database(s) {names} missing ({why}).  torpor left the "
        "file unchanged; restore it from a backup"
    )


def open_layout(
    env: lmdb.Environment, txn: Txn, namespace: str, *, adopt: Callable[[Txn, Dbs], None]
) -> Dbs:
    """Open (or create, or adopt) the namespace's databases in ``txn``, a write
    transaction with no other transaction of the process running."""
    dbs = Dbs(namespace)
    raw = txn.get(_marker_key(namespace))
    present = _present(txn, namespace)
    if raw is not None:
        _check_marker(raw)
        missing = [n for n in NAMES if n not in present]
        if missing:
            raise _damaged(dbs, missing, "the store's layout marker lists them")
        _open_all(env, txn, dbs, create=False)
        return dbs
    if not present:
        _open_all(env, txn, dbs, create=True)
        txn.put(_marker_key(namespace), _marker())
        return dbs
    expected = _V01_NAMES if "cancels" in present or "tombs" not in present else NAMES
    missing = [n for n in expected if n not in present]
    if missing:
        raise _damaged(dbs, missing, "the others exist")
    _open_all(env, txn, dbs, create=True)
    if "cancels" in present:  # torpor 0.1's tombstones: superseded by tombs/tomb_ids
        txn.drop(env.open_db(dbs.name("cancels").encode(), txn=txn), delete=True)
    adopt(txn, dbs)
    txn.put(_marker_key(namespace), _marker())
    return dbs


def reopen_layout(env: lmdb.Environment, txn: Txn, dbs: Dbs) -> None:
    """Open the handles again on a reopened environment (the layout was checked)."""
    _open_all(env, txn, dbs, create=False)


def _open_all(env: lmdb.Environment, txn: Txn, dbs: Dbs, *, create: bool) -> None:
    for n in NAMES:
        setattr(dbs, n, env.open_db(dbs.name(n).encode(), txn=txn, create=create))


def _check_marker(raw: bytes) -> None:
    try:
        marker = json.loads(raw)
        version = marker["layout"]
        if type(version) is not int:
            raise TypeError(version)
    except (ValueError, KeyError, TypeError) as exc:
        raise BackendUnavailable(
            f"the LMDB store is damaged: its layout marker is unreadable ({exc!r}); "
            "restore it from a backup"
        ) from None
    if version > LAYOUT_VERSION:
        raise ConfigError(
            f"this LMDB store was written by a newer torpor (layout {version}; this torpor "
            f"knows layout {LAYOUT_VERSION}); upgrade torpor to open it"
        )
    if version < 1:
        raise BackendUnavailable(f"the LMDB store's layout marker names layout {version}")
