"""The hash chain over a session's log: its MAC, its key and the values that anchor it
(docs/FORMAT.md 3.4).

A chained log carries, in each frame, a chain value: the MAC of every byte of its segment
from the first frame up to that value (``chain_frames.py`` writes them, ``chain_check.py``
checks them). The MAC is SHA-256 (*unkeyed*: anyone can recompute it, so it shows damage
and edits that were not followed by a recomputation) or HMAC-SHA256 under a key kept
outside the store (*keyed*: without the key, no one can produce a value that verifies).
Every use of the MAC starts with a 16-byte domain tag of its own, so a value made for one
purpose (a frame, a genesis, a fork junction) can never stand for another. A writer
hashes frames through ``_chainhash`` (C, optional: see setup.py) where it was built,
readers through hashlib: the same SHA-256, the same values.

The first segment of a log anchors on its *genesis* value, made of the uid in that
segment's header and the log's first seq; a fork's first own segment anchors on a
*junction* value, made of the parent's link value where it forked and the fork's uid.
Binding the uid, never the session id: forks share their ancestors' files, and a folder
copied under another id keeps them.

A key is 32 to 64 bytes, given as hex: ``FSSTORE_CHAIN_KEY`` (the key itself) or
``FSSTORE_CHAIN_KEY_FILE`` (a file holding it), or :class:`ChainKey` built by the caller.
A key file inside the store is refused: whoever can change the store could then read
the key, and the key would travel with every copy of the store. Its ``key_id`` (the
first 8 bytes of ``HMAC(K, "fsstore key id")``, hex) names it in files and messages
without revealing it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from .errors import ChainKeyMismatch, ChainKeyRequired, InvalidSetting
from .fsio import FileIO

# hashlib and hmac load OpenSSL (about 10 ms): imported where a MAC is first made, so that
# reading a session without a chain (and every quick command) does without.

#: The size of a chain value (and of an anchor, a genesis, a junction): SHA-256's.
CHAIN_SIZE = 32
MIN_KEY_BYTES = 32
#: HMAC-SHA256 hashes a longer key down to 32 bytes first: a longer one adds nothing.
MAX_KEY_BYTES = 64
KEY_ENV = "FSSTORE_CHAIN_KEY"
KEY_FILE_ENV = "FSSTORE_CHAIN_KEY_FILE"
#: The ``alg`` of an unkeyed and of a keyed chain (manifests name it).
UNKEYED = "sha256"
KEYED = "hmac-sha256"
_KEY_ID_MESSAGE = b"fsstore key id"
_MAX_KEY_FILE = 4096  # hex of 64 bytes, a newline and room for whitespace
_U64 = struct.Struct("<Q")


def _tag(name: str) -> bytes:
    tag = f"fsstore.{name}".encode()
    assert len(tag) <= 16, name
    return tag.ljust(16, b"\0")


# Domain tags: each 16 bytes, each MAC input starts with one. Fixed length, so no input
# of one domain is a prefix-shifted input of another.
DOM_FRAME = _tag("frame")  # a frame's chain value
DOM_GENESIS = _tag("genesis")  # the anchor of a log's first segment
DOM_FORK = _tag("fork")  # the anchor of a fork's first own segment
DOMAINS = (DOM_FRAME, DOM_GENESIS, DOM_FORK)
# A vector collection's (vectors/collection_chain.py): its WAL's genesis, its manifest.
DOM_WAL = _tag("wal")
DOM_COLLECTION = _tag("collect")
DOM_SNAPSHOT = _tag("snapshot")  # a snapshot's or checkpoint's MAC (chain_bindings.py)
DOM_MANIFEST = _tag("manifest")  # session.json's MAC (chain_bindings.py)
# The anchor a base written by an import passes on (import_chain.py): the chain value
# after a history the import does not hold.
DOM_IMPORT = _tag("import")
BINDING_DOMAINS = (DOM_SNAPSHOT, DOM_MANIFEST)


class HashState(Protocol):
    """What a running MAC offers: ``hashlib`` and ``hmac`` objects both are one."""

    def update(self, data: bytes | memoryview, /) -> None: ...

    def copy(self) -> HashState: ...

    def digest(self) -> bytes: ...


class Mac:
    """The chain's MAC: SHA-256 when ``key`` is None, else HMAC-SHA256 under ``key``.

    :meth:`value` is the MAC of one domain's input; :meth:`frame_state` a running MAC of
    the frame domain, which a writer (``RunState``) feeds frame after frame and copies to
    get each frame's value without hashing what came before it again."""

    __slots__ = ("_frame", "_key", "_outer", "_pads", "_step", "_writer_frame", "alg",
                 "key_id")

    def __init__(self, key: bytes | None = None) -> None:
        import hashlib

        self._key = key
        self.alg = UNKEYED if key is None else KEYED
        self.key_id = None if key is None else _key_id(key)
        self._pads: tuple[HashState, HashState] | None = None
        inner_start, outer_start = b"", None
        if key is not None:
            if len(key) > MAX_KEY_BYTES:
                raise ValueError(f"a chain key is at most {MAX_KEY_BYTES} bytes")
            # HMAC (RFC 2104) as its two SHA-256 states, the key schedule paid once
            padded = key.ljust(64, b"\0")
            inner_start = bytes(b ^ 0x36 for b in padded)
            outer_start = bytes(b ^ 0x5C for b in padded)
            self._pads = (hashlib.sha256(inner_start), hashlib.sha256(outer_start))
        # each frame run starts from a copy of this
        self._frame = self.start(DOM_FRAME)
        # A writer's run (frame_parts): the same MAC, through _chainhash's SHA-256 when
        # it was built (a digest there costs a struct copy, where hashlib's allocates an
        # EVP context, which was most of what a chained append cost over a plain one).
        fast = writer_sha256()
        self._step: FrameStep
        if fast is None:
            self._writer_frame = (self._frame._inner if isinstance(self._frame, _Hmac)
                                  else self._frame)
            self._outer = None if self._pads is None else self._pads[1]
            self._step = _hashlib_step
        else:
            self._writer_frame = fast(inner_start + DOM_FRAME)
            self._outer = None if outer_start is None else fast(outer_start)
            self._step = fast.step

    def __repr__(self) -> str:
        return f"Mac({self.alg!r}{'' if self.key_id is None else f', key {self.key_id}'})"

    @property
    def keyed(self) -> bool:
        return self._key is not None

    def start(self, domain: bytes) -> HashState:
        """A running MAC of ``domain``, its tag already fed."""
        if len(domain) != 16:
            raise ValueError("a domain tag is 16 bytes")
        if self._pads is None:
            import hashlib

            return hashlib.sha256(domain)
        inner = self._pads[0].copy()
        inner.update(domain)
        return _Hmac(inner, self._pads[1])

    def value(self, domain: bytes, *parts: bytes | memoryview) -> bytes:
        """The MAC of ``domain`` followed by ``parts``."""
        state = self._frame.copy() if domain == DOM_FRAME else self.start(domain)
        for part in parts:
            state.update(part)
        return state.digest()

    def frame_state(self) -> HashState:
        """A running MAC of the frame domain, nothing fed after the tag yet."""
        return self._frame.copy()

    def frame_parts(self) -> WriterHash:
        """:meth:`frame_state` as a writer's hot path wants it (``chain_frames.RunState``):
        the running SHA-256 (HMAC's inner one, keyed), the step that hashes a frame and
        makes its value, and HMAC's outer hash (None unkeyed). Values are
        :meth:`frame_state`'s; the state is not a ``hashlib`` object when ``_chainhash``
        was built."""
        return WriterHash(self._writer_frame.copy(), self._step, self._outer)


class FrameStep(Protocol):
    """``step(state, head, body, anchor, trailer, outer)``: feed ``head``, ``body`` and
    ``anchor`` to ``state``; the value is its digest, or with ``outer`` (HMAC's outer
    hash, fed the key) HMAC's value; feed the value, then ``trailer``; return the value.
    One call per frame (``_chainhash.Sha256.step``, or :func:`_hashlib_step`)."""

    def __call__(self, state: HashState, head: bytes, body: bytes, anchor: bytes,
                 trailer: bytes, outer: HashState | None, /) -> bytes: ...


class WriterHash(NamedTuple):
    """A writer's running chain hash (see :meth:`Mac.frame_parts`)."""

    state: HashState
    step: FrameStep
    outer: HashState | None


def writer_sha256() -> Any:
    """``_chainhash.Sha256`` (the C running SHA-256 a writer hashes frames with), or
    None when it was not built: fsstore then hashes through hashlib, the same bytes."""
    global _writer_sha256
    if _writer_sha256 is False:
        try:
            from ._chainhash import Sha256
        except ImportError:
            _writer_sha256 = None
        else:
            _writer_sha256 = Sha256
    return _writer_sha256


_writer_sha256: object = False  # not looked for yet


def _hashlib_step(state: HashState, head: bytes, body: bytes, anchor: bytes, trailer: bytes,
                  outer: HashState | None, /) -> bytes:
    """:class:`FrameStep` through hashlib (where ``_chainhash`` was not built)."""
    state.update(head)
    state.update(body)
    state.update(anchor)
    value = state.digest()
    if outer is not None:
        final = outer.copy()
        final.update(value)
        value = final.digest()
    state.update(value)
    state.update(trailer)
    return value


class _Hmac:
    """A running HMAC-SHA256 kept as its inner SHA-256 state and the outer one before
    it is fed: a copy (one per frame a writer encodes) copies the inner state only, at
    about half what ``hmac.HMAC.copy`` costs."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, inner: HashState, outer: HashState) -> None:
        self._inner = inner
        self._outer = outer  # never fed: shared by every copy

    def update(self, data: bytes | memoryview, /) -> None:
        self._inner.update(data)

    def copy(self) -> _Hmac:
        return _Hmac(self._inner.copy(), self._outer)

    def digest(self) -> bytes:
        outer = self._outer.copy()
        outer.update(self._inner.digest())
        return outer.digest()


def genesis(mac: Mac, uid: int, log_start: int) -> bytes:
    """The anchor of the segment a log starts with: ``MAC(DOM_GENESIS || uid ||
    log_start)``, ``uid`` being the one in that segment's header (u64s little-endian)."""
    return mac.value(DOM_GENESIS, _U64.pack(uid), _U64.pack(log_start))


def junction(mac: Mac, link: bytes, fork_uid: int, fork_seq: int) -> bytes:
    """The anchor of a fork's first own segment (which starts at ``fork_seq + 1``):
    ``MAC(DOM_FORK || link || fork_uid || fork_seq)``, ``link`` being the parent's link
    value after ``fork_seq``. Two forks of one parent at one seq get different chains, and
    the parent's records after ``fork_seq`` do not continue the fork's."""
    if len(link) != CHAIN_SIZE:
        raise ValueError(f"a link value is {CHAIN_SIZE} bytes")
    return mac.value(DOM_FORK, link, _U64.pack(fork_uid), _U64.pack(fork_seq))


def _key_id(key: bytes) -> str:
    import hmac

    return hmac.new(key, _KEY_ID_MESSAGE, "sha256").digest()[:8].hex()


def _same(a: bytes, b: bytes) -> bool:
    """``a == b`` in a time that does not tell where they differ (key material)."""
    import hmac

    return hmac.compare_digest(a, b)


class ChainKey:
    """A key for a keyed chain (32 to 64 bytes). Its repr shows the ``key_id`` only."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, (bytes, bytearray)):
            raise InvalidSetting(f"a chain key is bytes, not {type(key).__name__}")
        if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
            raise InvalidSetting(
                f"a chain key of {len(key)} bytes is refused: it takes {MIN_KEY_BYTES} to "
                f"{MAX_KEY_BYTES} random bytes (make one with `openssl rand -hex 32`)")
        self._key = bytes(key)

    @classmethod
    def from_hex(cls, text: str, source: str = "the key") -> ChainKey:
        """The key ``text`` spells in hex (whitespace around it ignored); ``source`` names
        where it came from in the error."""
        try:
            key = bytes.fromhex(text.strip())
        except ValueError:
            raise InvalidSetting(f"{source} is not a chain key in hex (64 to 128 hex "
                                 "digits, as `openssl rand -hex 32` prints)") from None
        try:
            return cls(key)
        except InvalidSetting as exc:
            raise InvalidSetting(f"{source}: {exc}") from None

    @classmethod
    def from_file(cls, path: str, *, store_root: str | None = None,
                  io: FileIO | None = None) -> ChainKey:
        """The key a file holds in hex. Refused when the file, its symlinks followed,
        is inside ``store_root``."""
        real = os.path.realpath(path)
        if store_root is not None:
            root = os.path.realpath(store_root)
            if os.path.commonpath([root, real]) == root:
                raise InvalidSetting(
                    f"chain key file {path} is inside the store {store_root}: a key kept "
                    "with the store protects nothing (whoever can change the store reads "
                    "it, and every copy carries it); keep it outside the store")
        # read where the symlinks lead (FileIO follows none: it opens store files)
        try:
            raw = (io or FileIO()).read_file(real, _MAX_KEY_FILE)
        except ValueError:
            raise InvalidSetting(f"chain key file {path} is larger than a key in hex"
                                 ) from None
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            text = "not hex"
        return cls.from_hex(text, f"chain key file {path}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 store_root: str | None = None, io: FileIO | None = None) -> ChainKey | None:
        """The key ``FSSTORE_CHAIN_KEY`` (hex) or ``FSSTORE_CHAIN_KEY_FILE`` (a key file,
        see :meth:`from_file`) gives, None when neither is set. Both set is refused: which
        one was meant cannot be told."""
        env = os.environ if environ is None else environ
        text, path = env.get(KEY_ENV), env.get(KEY_FILE_ENV)
        if text and path:
            raise InvalidSetting(f"both {KEY_ENV} and {KEY_FILE_ENV} are set; set one")
        if text:
            return cls.from_hex(text, KEY_ENV)
        if path:
            return cls.from_file(path, store_root=store_root, io=io)
        return None

    @property
    def key_id(self) -> str:
        """The first 8 bytes of ``HMAC(K, "fsstore key id")``, hex: names the key."""
        return _key_id(self._key)

    def mac(self) -> Mac:
        """The keyed MAC under this key."""
        return Mac(self._key)

    def __repr__(self) -> str:
        return f"ChainKey(key_id={self.key_id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChainKey) and _same(self._key, other._key)

    def __hash__(self) -> int:
        return hash(self.key_id)


def mac_for(alg: str, key_id: str | None, key: ChainKey | None) -> Mac:
    """The MAC of a chain declared as ``alg`` (and ``key_id``, when keyed), given the
    key at hand: ChainKeyRequired when a keyed chain has no key here, ChainKeyMismatch
    when the key is another; a key given for an unkeyed chain is not used."""
    if alg == UNKEYED:
        return Mac()
    if alg != KEYED or key_id is None:
        raise ValueError(f"no chain algorithm {alg!r} (with key id {key_id!r})")
    if key is None:
        raise ChainKeyRequired(
            f"the chain is keyed (key {key_id}) and no key was given: set {KEY_ENV} or "
            f"{KEY_FILE_ENV} to the key (or give it to open_store(chain_key=...))")
    if not _same(key.key_id.encode(), key_id.encode()):
        raise ChainKeyMismatch(
            f"the chain was made with key {key_id}, the key given is {key.key_id}: give "
            "the key this store was written with")
    return key.mac()
