"""Encoding of session data and of stored records (docs/contract.md §1).

Data is MessagePack (msgspec) and the hibernated form is zstd-compressed.  Both were
picked by measurement on a 3 KB chat-like payload (see docs/design-decisions.md):
msgspec encodes in 0.9 µs against 2.3 µs for msgpack, and zstd compresses in 10 µs
against 21 µs for zlib at a similar ratio.

What may be stored is checked by an explicit walk before encoding, because msgspec
would otherwise accept sets, UUIDs, dataclasses or datetimes and hand back something
else.  pickle is never used.

A stored record (a *blob*) is an envelope that names its format::

    b"TP"  format-version (1 byte)  flags (1 byte)  msgpack array:
        version 2: [id, created_at, last_accessed, timeout_ms, version, hibernated,
                    incarnation, payload]
        version 1: the same without incarnation (torpor 0.1); read side by side, its
                   incarnation is taken to be created_at

Decoding is bounded: a damaged or hostile blob gives ``SerializationError``, never a
``MemoryError``, ``RecursionError`` or a raw ``TypeError``.  Every metadata field is
type-checked, a compressed payload may not inflate past the caller's limit (its
``max_session_bytes``), and data may nest at most ``MAX_DEPTH`` containers deep.

``payload`` is the msgpack encoding of ``data``, zstd-compressed when the flags say
so (which is exactly when the session is hibernated).  The metadata sits outside the
compressed part, so a backend can read idleness and expiry without decompressing.
"""

from __future__ import annotations

import secrets
import threading
import weakref
from collections.abc import Callable
from typing import Annotated, Any, Final

import msgspec
import zstandard

from torpor.errors import SerializationError, TorporError

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_DEPTH",
    "add_resolver",
    "compress",
    "compressed_saving",
    "copy_data",
    "decode_data",
    "decode_envelope",
    "decode_value",
    "decompress",
    "encode_data",
    "encode_envelope",
    "encode_trusted",
    "encode_value",
    "envelope_fields",
]

MAGIC: Final = b"TP"
FORMAT_VERSION: Final = 2
_READABLE_VERSIONS: Final = (1, 2)
_INT_LIMIT: Final = 2**62  # stored times, timeouts and versions stay well inside int64
MAX_DEPTH: Final = 256
"""How deeply session data and messages may nest (containers inside containers).
Deeper data, and data that contains itself, is a ``SerializationError``."""
FLAG_COMPRESSED: Final = 0x01
_HEADER_LEN: Final = 4

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()
_SCALARS: Final = frozenset({str, int, float, bool, bytes, type(None)})
_CONTAINERS: Final = frozenset({dict, list, tuple})

EnvelopeMeta = tuple[str, int, int, int | None, int, bool, int]
"""id, created_at, last_accessed, timeout_ms, version, hibernated, incarnation"""


def encode_data(data: object) -> bytes:
    """Encode session data, or raise ``SerializationError`` naming the bad value."""
    if type(data) is not dict:
        raise SerializationError(
            f"session data must be a dict with str keys, not {type(data).__name__}"
        )
    return encode_value(data, "data")


def encode_value(value: object, what: str = "message") -> bytes:
    """Encode any storable value (a mailbox message, say); same rules as data."""
    if type(value) not in _SCALARS and not _ok(value, MAX_DEPTH):
        raise SerializationError(_describe_problem(value, what, MAX_DEPTH))
    try:
        return _encoder.encode(value)
    except (OverflowError, msgspec.EncodeError) as exc:
        raise SerializationError(f"{what} cannot be encoded: {exc}") from None
    except UnicodeEncodeError:  # a lone surrogate: text UTF-8 cannot hold
        raise SerializationError(
            f"{what} holds a str with a lone surrogate, which UTF-8 cannot encode"
        ) from None


def encode_trusted(data: dict[str, Any]) -> bytes:
    """Encode data that was already validated (live data held by a backend)."""
    return _encoder.encode(data)


def copy_data(data: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of data that was already validated (no second walk).

    A msgspec round trip is the fastest deep copy we measured for session data:
    6 µs for 3 KB, against 22 µs for ``copy.deepcopy``.
    """
    return _decoder.decode(_encoder.encode(data))  # type: ignore[no-any-return]


def decode_value(payload: bytes, what: str = "stored value") -> Any:
    """Decode what :func:`encode_value` produced."""
    try:
        return _decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError, ValueError) as exc:  # ValueError: bad UTF-8
        raise SerializationError(f"{what} is corrupt: {exc}") from None


def decode_data(payload: bytes, what: str = "stored session data") -> dict[str, Any]:
    """Decode what :func:`encode_data` produced."""
    data = decode_value(payload, what)
    if type(data) is not dict:
        raise SerializationError(f"{what} is corrupt: not a map")
    return data


def _ok(value: Any, depth: int) -> bool:
    # Fast walk; on the first problem, _describe_problem walks again for a readable path.
    # ``depth`` counts down: self-referencing data runs out of it instead of the stack.
    # Plain loops, not all(<generator>): this runs on every write (10% faster).
    kind = type(value)
    if kind is dict:
        if not depth:
            return False
        depth -= 1
        for key, item in value.items():
            if type(key) is not str:
                return False
            if type(item) not in _SCALARS and not _ok(item, depth):
                return False
        return True
    if kind is list or kind is tuple:
        if not depth:
            return False
        depth -= 1
        for item in value:  # noqa: SIM110 (see above)
            if type(item) not in _SCALARS and not _ok(item, depth):
                return False
        return True
    return kind in _SCALARS


def _describe_problem(value: Any, path: str, depth: int) -> str:
    kind = type(value)
    if kind in _CONTAINERS and not depth:
        return (
            f"{path} nests deeper than {MAX_DEPTH} levels (or contains itself); flatten it "
            "or store a reference instead"
        )
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return (
                    f"{path} has a key {key!r} of type {type(key).__name__}; dict keys must be str"
                )
            if not _ok(item, depth - 1):
                return _describe_problem(item, f"{path}[{key!r}]", depth - 1)
    elif kind is list or kind is tuple:
        for index, item in enumerate(value):
            if not _ok(item, depth - 1):
                return _describe_problem(item, f"{path}[{index}]", depth - 1)
    return (
        f"{path} is a {kind.__name__}, which is not msgpack-able; allowed: None, bool, "
        "int, float, str, bytes, list, tuple and dict with str keys (convert it first, "
        "e.g. a set to a list, a datetime to an int or str)"
    )


class _Zstd(threading.local):
    """zstd contexts are not thread-safe; keep one pair per thread."""

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=3)
        self.decompressor = zstandard.ZstdDecompressor()


_zstd = _Zstd()


def _exact(frame: bytes) -> bytes:
    """python-zstandard returns a frame in a buffer sized for the worst case (about
    3.4 KB held for a 1 KB chat-like frame, by tracemalloc); copying it through a
    memoryview (``bytes()`` of a bytes object would return the same object) keeps only
    the frame, which is what a hibernated session held in memory should cost."""
    return bytes(memoryview(frame))


def compress(payload: bytes) -> bytes:
    """The compact (hibernated) form of an encoded payload, in bytes of its own size."""
    return _exact(_zstd.compressor.compress(payload))


class Dictionary:
    """A zstd dictionary trained on a store's own sessions: chat-like sessions share
    most of their structure and vocabulary, and compressed against a dictionary of it
    they come out ~35% smaller than on their own (``torpor bench``).

    A frame compressed with it names the dictionary's id in its header (zstd's own
    field), and :func:`decompress` finds the dictionary by that id among those
    registered in this process.  So the dictionary versions its blobs, and blobs
    without one stay readable.  A store whose blobs never leave the process keeps its
    dictionary in memory (:meth:`register`); a store shared by processes keeps one in
    the store itself, which every process adopts (:meth:`shared`) and asks for when a
    frame names an id it does not have yet (:func:`add_resolver`).  See
    ``torpor._compaction``.
    """

    def __init__(self, data: zstandard.ZstdCompressionDict) -> None:
        self.data = data
        self.id: int = data.dict_id()
        self._local = threading.local()
        self._holds = 0  # registrations not yet undone; guarded by _registry

    @classmethod
    def train(
        cls, samples: list[bytes | bytearray | memoryview], size: int = 16_384
    ) -> Dictionary | None:
        """A dictionary of at most ``size`` bytes from encoded payloads; None if zstd
        finds too little in them to build one."""
        # A random id, not zstd's hash of the content: two stores that trained on the
        # same sessions still register two dictionaries, and closing one keeps the other.
        dict_id = secrets.randbits(31) | 1
        try:
            return cls(zstandard.train_dictionary(size, samples, dict_id=dict_id))
        except zstandard.ZstdError:
            return None

    @classmethod
    def shared(cls, data: bytes) -> Dictionary | None:
        """The registered dictionary of ``data`` (a dictionary's bytes as a store keeps
        them): one already registered with the same bytes, or a new one registered now.
        Either way one more registration, undone by :meth:`unregister`, so that every
        store holding it keeps it readable until the last one goes.  None if ``data``
        is not a zstd dictionary, or another dictionary holds its id."""
        try:
            parsed = zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_FULLDICT)
            parsed.precompute_compress(level=3)  # refuses damaged entropy tables
        except zstandard.ZstdError:
            return None
        if not parsed.dict_id():
            return None
        with _registry:
            found = _dictionaries.get(parsed.dict_id())
            if found is None:
                found = _dictionaries[parsed.dict_id()] = cls(parsed)
            elif found.data.as_bytes() != data:
                return None
            found._holds += 1
            return found

    def register(self) -> bool:
        """Make frames naming this dictionary readable in this process.  False if
        another dictionary holds its id (a 31-bit draw): then it must not be used."""
        with _registry:
            if _dictionaries.setdefault(self.id, self) is not self:
                return False
            self._holds += 1
            return True

    def unregister(self) -> None:
        """Undo one registration (:meth:`register` or :meth:`shared`); the last one
        makes frames naming it unreadable in this process.  Nothing if this object is
        not the registered one."""
        with _registry:
            if _dictionaries.get(self.id) is self:
                self._holds -= 1
                if self._holds <= 0:
                    del _dictionaries[self.id]

    def compress(self, payload: bytes) -> bytes:
        """Like :func:`compress`, against this dictionary."""
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = self._local.compressor = zstandard.ZstdCompressor(
                level=3, dict_data=self.data
            )
        return _exact(compressor.compress(payload))

    def decompressor(self) -> zstandard.ZstdDecompressor:
        decompressor = getattr(self._local, "decompressor", None)
        if decompressor is None:
            decompressor = self._local.decompressor = zstandard.ZstdDecompressor(
                dict_data=self.data
            )
        return decompressor


_dictionaries: dict[int, Dictionary] = {}
_registry = threading.Lock()
_resolvers: list[weakref.WeakMethod[Callable[[int], object]]] = []


def add_resolver(resolver: Callable[[int], object]) -> None:
    """Have :func:`decompress` call ``resolver(dict_id)`` when a frame names a
    dictionary this process has not registered, before it gives up on the frame: a
    store shared by processes registers the dictionary another process stored after
    this one asked (:meth:`Dictionary.shared`).  ``resolver`` is a bound method, held
    weakly: it goes with its object.  Only frames naming an unknown id pay for it.

    A resolver that cannot tell (its store is unreachable) raises a torpor error; the
    frame's read then raises it too, unless another resolver found the dictionary."""
    with _registry:
        _resolvers[:] = [ref for ref in _resolvers if ref() is not None]
        _resolvers.append(weakref.WeakMethod(resolver))


def _resolve(dict_id: int) -> Dictionary | None:
    """The dictionary ``dict_id`` once every resolver has had its chance."""
    with _registry:
        resolvers = [r for ref in _resolvers if (r := ref()) is not None]
    failure: TorporError | None = None
    for resolver in resolvers:
        try:
            resolver(dict_id)
        except TorporError as exc:
            failure = failure or exc
        found = _dictionaries.get(dict_id)
        if found is not None:
            return found
    if failure is not None:
        raise failure
    return None


def compressed_saving(payload: bytes) -> int:
    """Bytes saved by compressing: the size the frame announces minus its own."""
    return max(zstandard.frame_content_size(payload), 0) - len(payload)


def decompress(payload: bytes, limit: int, what: str = "stored hibernated session") -> bytes:
    """Inverse of :func:`compress` (and :meth:`Dictionary.compress`), refusing to
    produce more than ``limit`` bytes.

    A zstd frame may announce its size (ours always do): one larger than ``limit`` is
    refused before anything is allocated.  A frame that does not announce it is
    inflated through a bounded reader.
    """
    try:
        frame = zstandard.get_frame_parameters(payload)
        decompressor = _zstd.decompressor
        if frame.dict_id:
            dictionary = _dictionaries.get(frame.dict_id) or _resolve(frame.dict_id)
            if dictionary is None:
                raise SerializationError(
                    f"{what} was compressed with zstd dictionary {frame.dict_id}, which "
                    "neither this process nor any store it has open has (a store keeps one "
                    "dictionary: the frame is damaged, or was written into this store by "
                    "another)"
                )
            decompressor = dictionary.decompressor()
        announced = frame.content_size
        if 0 <= announced <= limit:
            raw = decompressor.decompress(payload)
        elif announced > limit and announced != zstandard.CONTENTSIZE_UNKNOWN:
            raise SerializationError(
                f"{what} claims {announced} bytes, over the limit of {limit} "
                "(max_session_bytes); refusing to inflate it"
            )
        else:
            raw = decompressor.stream_reader(payload).read(limit + 1)
    except zstandard.ZstdError as exc:
        raise SerializationError(f"{what} is corrupt: {exc}") from None
    if len(raw) > limit:
        raise SerializationError(
            f"{what} inflates past the limit of {limit} bytes (max_session_bytes); "
            "refusing to inflate it"
        )
    return raw


def encode_envelope(meta: EnvelopeMeta, payload: bytes, *, compressed: bool) -> bytes:
    """Wrap metadata and an (optionally compressed) payload into a stored record."""
    header = MAGIC + bytes((FORMAT_VERSION, FLAG_COMPRESSED if compressed else 0))
    return header + _encoder.encode((*meta, payload))


def _corrupt(detail: str) -> SerializationError:
    return SerializationError(f"stored record is corrupt: {detail}")


def decode_envelope(blob: bytes) -> tuple[EnvelopeMeta, bytes, bool]:
    """Split a stored record into (metadata, payload, compressed).

    Raises ``SerializationError`` for something that is not a torpor record, a damaged
    one, or one that a newer torpor wrote in a format this one does not know.
    """
    if type(blob) is not bytes:
        blob = bytes(blob)
    found = envelope_fields(blob)  # the current format, checked in C: ~2.4x faster
    if found is not None:
        meta, payload = found
        return meta, payload, meta[5]
    # Anything else is read (format 1) or refused with a message saying what is wrong.
    if blob[:2] != MAGIC or len(blob) < _HEADER_LEN:
        raise SerializationError(
            "stored value is not a torpor record (bad magic); was it written by something "
            "else into torpor's namespace?"
        )
    version = blob[2]
    if version not in _READABLE_VERSIONS:
        raise SerializationError(
            f"stored record uses format version {version}, but this torpor reads only "
            f"versions {', '.join(map(str, _READABLE_VERSIONS))}; upgrade torpor to read it"
        )
    flags = blob[3]
    try:
        fields = _decoder.decode(memoryview(blob)[_HEADER_LEN:])
    except (msgspec.DecodeError, RecursionError, ValueError) as exc:  # ValueError: bad UTF-8
        raise _corrupt(str(exc)) from None
    if type(fields) is not list or len(fields) != (8 if version == 2 else 7):
        raise _corrupt("wrong number of fields")
    if version == 1:  # torpor 0.1: no incarnation; created_at stands in for it
        fields.insert(6, fields[1])
    sid, created, accessed, timeout, version_, hibernated, incarnation, payload = fields
    if not (
        type(sid) is str
        and type(created) is int
        and type(accessed) is int
        and (timeout is None or (type(timeout) is int and timeout >= 0))
        and type(version_) is int
        and 1 <= version_ < _INT_LIMIT
        and abs(created) < _INT_LIMIT
        and abs(accessed) < _INT_LIMIT
        and (timeout is None or timeout < _INT_LIMIT)
        and type(hibernated) is bool
        and type(incarnation) is int
        and type(payload) is bytes
    ):
        raise _corrupt("a metadata field has the wrong type")
    compressed = bool(flags & FLAG_COMPRESSED)
    if compressed != hibernated:
        raise _corrupt(f"hibernated={hibernated} but compressed={compressed}")
    return (sid, created, accessed, timeout, version_, hibernated, incarnation), payload, compressed


_Time = Annotated[int, msgspec.Meta(gt=-_INT_LIMIT, lt=_INT_LIMIT)]
_Timeout = Annotated[int, msgspec.Meta(ge=0, lt=_INT_LIMIT)]
_Version = Annotated[int, msgspec.Meta(ge=1, lt=_INT_LIMIT)]
_V2_MAGIC: Final = MAGIC + b"\x02"
_envelope_v2 = msgspec.msgpack.Decoder(
    tuple[str, _Time, _Time, _Timeout | None, _Version, bool, int, bytes]
)


def envelope_fields(blob: bytes | memoryview) -> tuple[EnvelopeMeta, bytes] | None:
    """(metadata, payload) of a current-format envelope that :func:`decode_envelope`
    would accept, checked by one typed msgspec decode (types and ranges in C: ~5 times
    faster than :func:`decode_envelope`, for a backend that reads envelopes on a hot
    path).  None for anything else, including format-1 envelopes, which
    :func:`decode_envelope` still reads (and whose errors say what is wrong)."""
    if blob[:3] != _V2_MAGIC or len(blob) < _HEADER_LEN:
        return None
    try:
        fields = _envelope_v2.decode(memoryview(blob)[_HEADER_LEN:])
    except (msgspec.DecodeError, RecursionError, ValueError):  # ValidationError is a DecodeError
        return None
    if bool(blob[3] & FLAG_COMPRESSED) != fields[5]:
        return None
    return fields[:7], fields[7]
