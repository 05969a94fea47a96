"""Swarm memory: a key-value store shared by every project and process, on LMDB.

Layout (named databases in one environment):

* ``mem``  ``namespace \\0 key`` -> ``0xC1`` + flags (1 byte) + CRC-32 (4 bytes,
  big-endian, over the full key and everything after it) + [8-byte big-endian
  expiry in ms, when flags say TTL] + the msgpack value.  The checksum is why a
  flipped bit is reported (:class:`CorruptValue`, naming the key) instead of
  returned as a wrong value; 0xC1 is the one byte msgpack never uses, so an entry
  can never be mistaken for bare msgpack.  Stores written before the checksum are
  rewritten once, when first opened (``meta`` ``format``)
* ``exp``  ``expires_at (8-byte big-endian ms) namespace \\0 key`` -> ``b""``, so the
  TTL sweep reads only what is due
* ``feed`` the change feed the bus turns into ``memory.changed`` events (see
  :mod:`store.feed`, which also says when a change's record is written)
* ``meta`` ``format`` -> the entry format of ``mem`` (``b"2"``)

Readers never block (LMDB MVCC); writers are serialized by LMDB across processes,
which is what makes :meth:`Memory.cas` and :meth:`Memory.incr` lost-update free.
"""

from __future__ import annotations

import math
import os
import struct
import threading
import time
import weakref
import zlib
from typing import Any, Iterator

import lmdb
import msgpack

from . import env as E
from . import feed as F
from .errors import CorruptValue, InvalidArgument, InvalidKey, NotSerializable, StoreError, ValueTooLarge

SEP = F.SEP  # namespace \0 key: one definition, shared with the feed that decodes it
MAX_KEY_BYTES = 480          # LMDB's key limit is 511; leave room for the expiry prefix
DEFAULT_MAX_VALUE = 64 * 1024 * 1024
MAX_TTL = 100 * 365 * 86400.0  # a century: beyond it a TTL is a mistake, not a wish
FEED_PER_TXN = F.FEED_PER_TXN
FULL_KEY_CACHE = 65_536      # validated keys remembered per namespace (then forgotten at once)
FULL_KEY_NAMESPACES = 256    # namespaces whose keys are remembered
_U64 = struct.Struct(">Q")
MARK = 0xC1                  # never used by msgpack: every entry starts with it
F_V2, F_TTL = 0x10, 0x01     # flags: checksummed format; carries an expiry
_PLAIN, _WITH_TTL = F_V2, F_V2 | F_TTL
_HDR = struct.Struct(">BBI")  # mark, flags, crc32
_HDR_SIZE = _HDR.size         # 6
_CRC = struct.Struct(">I")
FORMAT = b"2"
OP_PUT, OP_DELETE, OP_EXPIRE = F.OP_PUT, F.OP_DELETE, F.OP_EXPIRE
_FORKS = E.fork_generation
_unpackb = msgpack.unpackb
_crc32 = zlib.crc32
_INSTANCES: "weakref.WeakSet[Memory]" = weakref.WeakSet()
_NO_KEYS: dict[str, bytes] = {}
_RETRY = object()
_packers = threading.local()


def _packb(value: Any) -> bytes:
    """msgpack.packb builds a Packer per call (~0.3 µs); reuse one per thread instead.
    A Packer resets its buffer when packing fails, so a bad value leaves it usable."""
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(value)


def seal(full: bytes, body: bytes, expires_ms: int = 0) -> bytes:
    """The stored entry for ``body`` under ``full``: header, checksum, optional expiry."""
    if expires_ms:
        rest = _U64.pack(expires_ms) + body
        return _HDR.pack(MARK, _WITH_TTL, _crc32(rest, _crc32(full))) + rest
    return _HDR.pack(MARK, _PLAIN, _crc32(body, _crc32(full))) + body


def unseal(full: bytes, data: bytes) -> tuple[int, bytes]:
    """``(expires_ms, msgpack body)`` of a stored entry; CorruptValue naming the key if
    its header or checksum is wrong."""
    if len(data) >= _HDR_SIZE:
        mark, flags, crc = _HDR.unpack_from(data)
        if mark == MARK and flags in (_PLAIN, _WITH_TTL) and _crc32(data[_HDR_SIZE:], _crc32(full)) == crc:
            if flags == _PLAIN:
                return 0, data[_HDR_SIZE:]
            if len(data) >= _HDR_SIZE + 8:
                return _U64.unpack_from(data, _HDR_SIZE)[0], data[_HDR_SIZE + 8:]
    raise CorruptValue(f"stored value for {full.replace(SEP, b'/')!r} is damaged (bad header or checksum)",
                       key=full)


def _legacy_to_v2(full: bytes, data: bytes) -> bytes:
    """An entry of the format before checksums: bare msgpack, or 0xC1 + expiry + msgpack."""
    if data[:1] == bytes([MARK]) and len(data) >= 9 and data[1] == 0:
        return seal(full, data[9:], _U64.unpack_from(data, 1)[0])
    return seal(full, data) if data[:1] != bytes([MARK]) else data  # undecodable: left to be reported


def check_ttl(ttl: Any) -> float | None:
    """The expiry time for ``ttl`` seconds from now (None: none); InvalidArgument otherwise."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not (0 < ttl <= MAX_TTL):
        raise InvalidArgument(f"ttl must be a number of seconds in (0, {MAX_TTL:.0f}], got {ttl!r:.40}")
    return time.time() + ttl


def _reopen_after_fork() -> None:
    """In a forked child, reopen every Memory at once: the hot get() then needs no fork check."""
    for memory in list(_INSTANCES):
        try:
            memory._open()
        except Exception:  # reported on first use by _env() instead
            memory._generation = -1


os.register_at_fork(after_in_child=_reopen_after_fork)


def project_namespace(project: str) -> str:
    return f"project:{project}"


SHARED = "shared"


class Memory:
    def __init__(self, path: str | None = None, map_size: int = E.DEFAULT_MAP_SIZE,
                 max_value: int = DEFAULT_MAX_VALUE, sync: bool = True) -> None:
        self.path = os.path.abspath(path or os.path.join(E.orchflow_home(), "memory"))
        self.map_size = map_size
        self.max_value = max_value
        self.sync = sync
        self._prefixes: dict[str, bytes] = {}
        # namespace -> key -> full LMDB key, for keys already validated: the hot paths
        # then do two dict lookups instead of checks, encode and concatenation.
        self._full_keys: dict[str, dict[str, bytes]] = {}
        self._open()
        _INSTANCES.add(self)

    def _open(self) -> None:
        shared = E.open_env(self.path, self.map_size, self.sync)
        self._shared = shared
        self.env = shared.env
        self._gate = shared.gate
        self._inside = shared.gate.inside
        self._mem = shared.db(b"mem")
        self._exp = shared.db(b"exp")
        self._feed = shared.db(b"feed")
        self._meta = shared.db(b"meta")
        self._generation = E.fork_generation[0]
        if shared.read(lambda txn: txn.get(b"format", db=self._meta)) != FORMAT:
            shared.write(self._upgrade)

    def _upgrade(self, txn: lmdb.Transaction) -> None:
        """Give every entry of an older store its checksum, once (inside one write
        transaction, so two processes opening an old store at once do it once)."""
        if txn.get(b"format", db=self._meta) == FORMAT:
            return
        rows = [(k, _legacy_to_v2(k, v)) for k, v in txn.cursor(db=self._mem)]
        if rows:
            txn.cursor(db=self._mem).putmulti(rows)
        txn.put(b"format", FORMAT, db=self._meta)

    def _env(self) -> E.SharedEnv:
        if self._generation != E.fork_generation[0]:  # we are a forked child: reopen
            self._open()
        return self._shared

    # ------------------------------------------------------------------ encoding

    def _key(self, namespace: str, key: str) -> bytes:
        """The LMDB key for ``namespace``/``key``, validated once and then remembered
        (up to FULL_KEY_CACHE keys per namespace, then that namespace starts over)."""
        try:
            ns_keys = self._full_keys.get(namespace)
            full = ns_keys.get(key) if ns_keys is not None else None
        except TypeError:  # unhashable
            return self._validate(namespace, key)  # raises InvalidKey
        if full is not None:
            return full
        full = self._validate(namespace, key)
        if type(key) is str:  # not a subclass: its hash may differ
            if ns_keys is None:
                if type(namespace) is not str or len(self._full_keys) >= FULL_KEY_NAMESPACES:
                    return full
                ns_keys = self._full_keys[namespace] = {}
            elif len(ns_keys) >= FULL_KEY_CACHE:
                ns_keys.clear()
            ns_keys[key] = full
        return full

    def _validate(self, namespace: str, key: str) -> bytes:
        prefix = self._prefixes.get(namespace) if type(namespace) is str else None
        if prefix is None:
            if not isinstance(namespace, str) or not namespace or "\x00" in namespace:
                raise InvalidKey(f"namespace must be a non-empty string without NUL, got {namespace!r:.80}")
            try:
                prefix = namespace.encode() + SEP
            except UnicodeEncodeError:
                raise InvalidKey("namespace is not valid UTF-8 (lone surrogate)") from None
            if len(prefix) > MAX_KEY_BYTES:
                raise InvalidKey(f"namespace is {len(prefix) - 1} bytes; the limit is {MAX_KEY_BYTES - 2}")
            self._prefixes[namespace] = prefix
        if (type(key) is not str and not isinstance(key, str)) or not key or "\x00" in key:
            raise InvalidKey(f"key must be a non-empty string without NUL, got {key!r:.80}")
        try:
            full = prefix + key.encode()
        except UnicodeEncodeError:
            raise InvalidKey("key is not valid UTF-8 (lone surrogate)") from None
        if len(full) > MAX_KEY_BYTES:
            raise InvalidKey(f"namespace+key is {len(full)} bytes; the limit is {MAX_KEY_BYTES}")
        return full

    def _body(self, value: Any) -> bytes:
        try:
            body = _packb(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise NotSerializable(f"value of type {type(value).__name__} cannot be stored: {exc}") from None
        if len(body) > self.max_value:
            raise ValueTooLarge(len(body), self.max_value)
        return body

    def _encode(self, full: bytes, value: Any, expires: float | None) -> bytes:
        return seal(full, self._body(value), int(expires * 1000) if expires is not None else 0)

    @staticmethod
    def _expiry_ms(data: bytes) -> int:
        return _U64.unpack_from(data, _HDR_SIZE)[0] if len(data) >= 14 and data[1] == _WITH_TTL else 0

    @staticmethod
    def _decode(full: bytes, body: bytes) -> Any:
        try:
            return msgpack.unpackb(body, raw=False, strict_map_key=False)
        except Exception:
            raise CorruptValue(f"stored value for {full.replace(SEP, b'/')!r} does not decode", key=full) from None

    def _value(self, full: bytes, data: bytes) -> Any:
        return self._decode(full, unseal(full, data)[1])

    @staticmethod
    def _live(expires_ms: int, now: float) -> bool:
        return expires_ms == 0 or expires_ms > now * 1000

    def _reindex(self, txn: lmdb.Transaction, full: bytes, old: bytes | None, new_ms: int) -> None:
        old_ms = self._expiry_ms(old) if old is not None else 0
        if old_ms:
            txn.delete(_U64.pack(old_ms) + full, db=self._exp)
        if new_ms:
            txn.put(_U64.pack(new_ms) + full, b"", db=self._exp)

    def _log(self, txn: lmdb.Transaction, full: bytes, op: int, index: int = 0) -> None:
        F.log(txn, self._feed, full, op, index)

    def _write(self, fn: Any, *args: Any) -> Any:
        return self._env().write(fn, *args)

    def _read(self, fn: Any) -> Any:
        return self._env().read(fn)

    # ------------------------------------------------------------------ API

    def put(self, namespace: str, key: str, value: Any, ttl: float | None = None) -> None:
        if ttl is not None:
            return self.put_many(namespace, [(key, value)], ttl)
        # The hot write path, kept flat.  The key is remembered: what was written is
        # what gets read.
        full = self._key(namespace, key)
        try:
            body = _packb(value)
        except (TypeError, ValueError, OverflowError):
            body = self._body(value)  # raises NotSerializable with the reason
        if len(body) > self.max_value:
            raise ValueTooLarge(len(body), self.max_value)
        data = _HDR.pack(MARK, _PLAIN, _crc32(body, _crc32(full))) + body  # seal(), inlined
        env = self.env if self._generation == _FORKS[0] else self._env().env
        inside = self._inside
        inside.append(None)  # the gate (store.env.Gate.enter), inlined for the common case
        txn = None
        try:
            if self._gate.closed:
                raise lmdb.MapResizedError("gate closed")  # a map change is under way: slow path
            txn = env.begin(self._mem, None, True)  # positional: py-lmdb's keyword parsing
            txn.put(full, data)                    # costs ~5% of a put
            F.log(txn, self._feed, full, OP_PUT)  # _put_txn's lines, not a call to it: 3-4%
            txn.commit()
            return
        except (lmdb.MapFullError, lmdb.MapResizedError):
            pass
        except lmdb.Error as exc:
            raise E.translate(exc, self.path) from None
        finally:
            if txn is not None:
                txn.abort()  # a no-op after commit
            inside.pop()
        self._write(self._put_txn, full, data)  # grows or adopts the map, then retries

    def _put_txn(self, txn: lmdb.Transaction, full: bytes, data: bytes) -> None:
        """One entry without a TTL and its feed record.  A plain put, not a replace:
        if the old entry had a TTL, its index entry stays until due, and the sweep
        then finds the entry alive (no TTL now) and leaves it."""
        txn.put(full, data, db=self._mem)
        self._log(txn, full, OP_PUT)

    def put_many(self, namespace: str, items: list[tuple[str, Any]], ttl: float | None = None) -> None:
        """Store many entries in one write transaction (one commit for the batch)."""
        expires = check_ttl(ttl)
        keyed = [(self._key(namespace, k), v) for k, v in items]  # validate first
        encoded = [(full, self._encode(full, v, expires)) for full, v in keyed]
        new_ms = self._expiry_ms(encoded[0][1]) if encoded else 0
        mem = self._mem

        def txn_fn(txn: lmdb.Transaction) -> None:
            for index, (full, data) in enumerate(encoded):
                old = txn.replace(full, data, db=mem)
                if new_ms or (old and len(old) > 1 and old[1] == _WITH_TTL):
                    self._reindex(txn, full, old, new_ms)
                self._log(txn, full, OP_PUT, index=index % (FEED_PER_TXN - 1))

        if encoded:
            self._write(txn_fn)

    def get(self, namespace: str, key: str, default: Any = None) -> Any:
        # The hot read path, kept flat: cached key inline, one transaction, one decode.
        try:  # .get chains: a miss must not cost an exception
            full = self._full_keys.get(namespace, _NO_KEYS).get(key)
        except TypeError:
            full = None
        if full is None:
            full = self._key(namespace, key)  # validates (raises InvalidKey) and remembers
        inside = self._inside
        inside.append(None)  # the gate, inlined (see put)
        try:  # no fork check here: _reopen_after_fork already reopened us in a child
            # No `with`: a read-only transaction is aborted when its last reference goes,
            # here at the end of this statement; the context manager would cost ~0.2 µs.
            data = _RETRY if self._gate.closed else self.env.begin(self._mem).get(full)
        except lmdb.Error:
            data = _RETRY
        finally:
            inside.pop()
        if data is _RETRY:  # a map change, or damage: the general path remaps or says which
            data = self._read(lambda txn: txn.get(full, db=self._mem))
        if data is None:
            return default
        try:  # the common entry: no TTL, checksum right, plain msgpack with string keys
            if data[1] == _PLAIN:
                body = data[6:]
                if _crc32(body, _crc32(full)) == _CRC.unpack_from(data, 2)[0]:
                    return _unpackb(body)  # no keyword arguments: msgpack parses them per call
        except Exception:
            pass
        return self._slow_value(full, data, default)

    def _slow_value(self, full: bytes, data: bytes, default: Any) -> Any:
        """What get returns for an entry the fast path passed on: one with a TTL, a map
        with non-string keys (refused by msgpack's strict_map_key default), or a damaged
        one (CorruptValue naming the key)."""
        expires_ms, body = unseal(full, data)
        if not self._live(expires_ms, time.time()):
            return default
        return self._decode(full, body)

    def delete(self, namespace: str, key: str) -> bool:
        full = self._key(namespace, key)

        def txn_fn(txn: lmdb.Transaction) -> bool:
            old = txn.pop(full, db=self._mem)
            if old is None:
                return False
            self._reindex(txn, full, old, 0)
            self._log(txn, full, OP_DELETE)
            return True

        return self._write(txn_fn)

    def _current(self, txn: lmdb.Transaction, full: bytes) -> tuple[bytes | None, Any]:
        old = txn.get(full, db=self._mem)
        if old is None:
            return None, None
        expires_ms, body = unseal(full, old)
        if not self._live(expires_ms, time.time()):
            return old, None
        return old, self._decode(full, body)

    def cas(self, namespace: str, key: str, expected: Any, new: Any, ttl: float | None = None) -> bool:
        """Set ``new`` only if the current value equals ``expected`` (``None`` = absent)."""
        full = self._key(namespace, key)
        data = self._encode(full, new, check_ttl(ttl))

        def txn_fn(txn: lmdb.Transaction) -> bool:
            old, current = self._current(txn, full)
            if current != expected:
                return False
            self._reindex(txn, full, old, self._expiry_ms(data))
            txn.put(full, data, db=self._mem)
            self._log(txn, full, OP_PUT)
            return True

        return self._write(txn_fn)

    def incr(self, namespace: str, key: str, delta: int | float = 1) -> int | float:
        """Atomically add ``delta`` (absent counts as 0) and return the new value; TTL is kept."""
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or \
                (isinstance(delta, float) and not math.isfinite(delta)):
            raise InvalidArgument(f"delta must be a finite number, got {delta!r:.40}")
        full = self._key(namespace, key)

        def txn_fn(txn: lmdb.Transaction) -> int | float:
            old, current = self._current(txn, full)
            if current is None:
                current, old = 0, None
            if not isinstance(current, (int, float)) or isinstance(current, bool):
                raise InvalidArgument(f"cannot increment a {type(current).__name__}")
            value = current + delta
            if isinstance(value, float) and not math.isfinite(value):
                raise InvalidArgument(f"incrementing {current!r} by {delta!r} overflows")
            keep_ms = self._expiry_ms(old) if old is not None else 0
            txn.put(full, seal(full, self._body(value), keep_ms), db=self._mem)
            self._log(txn, full, OP_PUT)
            return value

        return self._write(txn_fn)

    def items(self, namespace: str, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """Live ``(key, value)`` pairs of a namespace whose key starts with ``prefix``, in key order."""
        ns_prefix = self._key(namespace, "x")[:-1]
        if not isinstance(prefix, str):
            raise InvalidKey(f"prefix must be a string, got {type(prefix).__name__}")
        try:
            start = ns_prefix + prefix.encode()
        except UnicodeEncodeError:
            raise InvalidKey("prefix is not valid UTF-8 (lone surrogate)") from None
        skip = len(ns_prefix)
        now = time.time()

        def scan(txn: lmdb.Transaction) -> list[tuple[str, Any]]:
            out = []
            cur = txn.cursor(db=self._mem)
            if not cur.set_range(start):
                return out
            for full, data in cur:
                if not full.startswith(start):
                    break
                if self._live(self._expiry_ms(data), now):
                    out.append((full[skip:].decode(), self._value(full, data)))
            return out

        return iter(self._read(scan))

    def search(self, namespace: str, text: str) -> list[tuple[str, Any]]:
        """Entries whose key, or string value, contains ``text`` (case-insensitive)."""
        if not isinstance(text, str):
            raise InvalidArgument(f"search text must be a string, got {type(text).__name__}")
        needle = text.lower()
        return [(k, v) for k, v in self.items(namespace)
                if needle in k.lower() or (isinstance(v, str) and needle in v.lower())]

    def namespaces(self) -> list[str]:
        def scan(txn: lmdb.Transaction) -> list[str]:
            out, cur = [], txn.cursor(db=self._mem)
            found = cur.first()
            while found:
                ns = cur.key().split(SEP, 1)[0]
                out.append(ns.decode())
                found = cur.set_range(ns + b"\x01")  # jump past this namespace
            return out

        return self._read(scan)

    def sweep(self, now: float | None = None) -> int:
        """Delete entries whose TTL has passed; returns how many."""
        now = time.time() if now is None else now

        def txn_fn(txn: lmdb.Transaction) -> int:
            removed = 0
            for full in E.pop_due(txn, self._exp, int(now * 1000) + 1, limit=FEED_PER_TXN - 1):
                data = txn.get(full, db=self._mem)
                if data is not None and not self._live(self._expiry_ms(data), now):
                    txn.delete(full, db=self._mem)
                    removed += 1
                    self._log(txn, full, OP_EXPIRE, index=removed)
            return removed

        return self._write(txn_fn)

    def changes(self, since: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Change-feed entries with ``seq > since``, oldest first."""
        return self._read(lambda txn: F.read(txn, self._feed, since, limit))

    def last_change(self) -> int:
        """The newest change-feed seq (0 if none): where a new watcher starts."""
        return self._read(lambda txn: F.last_seq(txn, self._feed))

    def stats(self) -> dict[str, Any]:
        shared = self._env()
        return {"path": self.path, "map_size": shared.map_size(), "file_size": shared.file_size(),
                "entries": shared.read(lambda txn: txn.stat(self._mem)["entries"])}
