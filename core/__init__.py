"""torpor: pluggable session storage.

>>> import torpor
>>> with torpor.open() as sessions:               # the in-process ets_like backend
...     s = sessions.create({"user": "ada"}, name="日本語")
...     sessions.get(s.id).data
{'user': 'ada'}

See docs/guide.md for the user guide, docs/contract.md for what every backend
guarantees, and ``torpor.hookspecs`` (with docs/plugin-authors.md) for writing one.
"""

from torpor import codec, errors, hookspecs, sample
from torpor._capabilities import BackendStats, Capability, Stats
from torpor._clock import Clock, ManualClock, system_clock
from torpor._config import parse_int, parse_path
from torpor._events import EventKind, LifecycleEvent
from torpor._fallbacks import LocalMailbox
from torpor._ids import MAX_ID_BYTES, generate_id, is_valid_id, validate_id
from torpor._mailbox import Mailbox, closed_while_waiting, gone_while_waiting
from torpor._manager import Manager, SessionId
from torpor._open import check_backend_options, open
from torpor._receivers import LocalReceivers, Receiver
from torpor._record import Record
from torpor._registry import (
    FactoryMetadata,
    backend_factory,
    describe_factory,
    load_backend_factory,
)
from torpor._session import Session
from torpor._transaction import BackendTransaction, Transaction
from torpor._version import __version__
from torpor.errors import (
    BackendNotFound,
    BackendUnavailable,
    ConfigError,
    Conflict,
    InvalidArgument,
    InvalidSessionId,
    ManagerClosed,
    MissingDependency,
    ReentrantCall,
    SerializationError,
    SessionCancelled,
    SessionExists,
    SessionNotFound,
    SessionTooLarge,
    TorporError,
    TransactionConflict,
    UnsupportedOperation,
)
from torpor.hookspecs import CANCEL, DELETE, EXPIRE, Expired, Removal, hookimpl

__all__ = [
    "CANCEL",
    "DELETE",
    "EXPIRE",
    "MAX_ID_BYTES",
    "BackendNotFound",
    "BackendStats",
    "BackendTransaction",
    "BackendUnavailable",
    "Capability",
    "Clock",
    "ConfigError",
    "Conflict",
    "EventKind",
    "Expired",
    "FactoryMetadata",
    "InvalidArgument",
    "InvalidSessionId",
    "LifecycleEvent",
    "LocalMailbox",
    "LocalReceivers",
    "Mailbox",
    "Manager",
    "ManagerClosed",
    "ManualClock",
    "MissingDependency",
    "Receiver",
    "Record",
    "ReentrantCall",
    "Removal",
    "SerializationError",
    "Session",
    "SessionCancelled",
    "SessionExists",
    "SessionId",
    "SessionNotFound",
    "SessionTooLarge",
    "Stats",
    "TorporError",
    "Transaction",
    "TransactionConflict",
    "UnsupportedOperation",
    "__version__",
    "backend_factory",
    "check_backend_options",
    "closed_while_waiting",
    "codec",
    "describe_factory",
    "errors",
    "generate_id",
    "gone_while_waiting",
    "hookimpl",
    "hookspecs",
    "is_valid_id",
    "load_backend_factory",
    "open",
    "parse_int",
    "parse_path",
    "sample",
    "system_clock",
    "validate_id",
]
