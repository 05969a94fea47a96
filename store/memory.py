"""Swarm memory: a key-value store shared by every project and process, on LMDB.

Layout (named databases in one environment):

* ``mem``  ``namespace \\0 key`` -> the msgpack value, or, for an entry with a TTL,
  ``0xC1`` + 8-byte big-endian expiry in ms + the msgpack value.  0xC1 is the one
  byte msgpack never uses, so the common no-TTL entry is plain msgpack (nothing to
  strip on read) and writers see an old entry's expiry without decoding it
* ``exp``  ``expires_at (8-byte big-endian ms) namespace \\0 key`` -> ``b""``, so the
  TTL sweep reads only what is due
* ``feed`` the change feed the bus turns into ``memory.changed`` events (see
  :mod:`store.feed`, which also says when a change's record is written)

Readers never block (LMDB MVCC); writers are serialized by LMDB across processes,
which is what makes :meth:`Memory.cas` and :meth:`Memory.incr` lost-update free.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import weakref
from typing import Any, Iterator

import lmdb
import msgpack

from . import env as E
from . import feed as F
from .errors import CorruptValue, InvalidKey, NotSerializable, StoreError, ValueTooLarge

SEP = F.SEP  # namespace \0 key: one definition, shared with the feed that decodes it
MAX_KEY_BYTES = 480          # LMDB's key limit is 511; leave room for the expiry prefix
DEFAULT_MAX_VALUE = 64 * 1024 * 1024
FEED_PER_TXN = F.FEED_PER_TXN
FULL_KEY_CACHE = 65_536      # validated keys remembered per namespace (then forgotten at once)
FULL_KEY_NAMESPACES = 256    # namespaces whose keys are remembered
_U64 = struct.Struct(">Q")
TTL_MARK = 0xC1             # never used by msgpack: marks an entry carrying an expiry header
_TTL_PREFIX = bytes([TTL_MARK])
OP_PUT, OP_DELETE, OP_EXPIRE = F.OP_PUT, F.OP_DELETE, F.OP_EXPIRE
_FORKS = E.fork_generation
_unpackb = msgpack.unpackb
_INSTANCES: "weakref.WeakSet[Memory]" = weakref.WeakSet()
_NO_KEYS: dict[str, bytes] = {}
_packers = threading.local()


def _packb(value: Any) -> bytes:
    """msgpack.packb builds a Packer per call (~0.3 µs); reuse one per thread instead.
    A Packer resets its buffer when packing fails, so a bad value leaves it usable."""
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(value)


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
        self.env = E.open_env(self.path, self.map_size, self.sync)
        self._mem = self.env.open_db(b"mem")
        self._exp = self.env.open_db(b"exp")
        self._feed = self.env.open_db(b"feed")
        self._generation = E.fork_generation[0]

    def _env(self) -> lmdb.Environment:
        if self._generation != E.fork_generation[0]:  # we are a forked child: reopen
            self._open()
        return self.env

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
                raise InvalidKey(f"namespace must be a non-empty string without NUL, got {namespace!r}")
            prefix = self._prefixes[namespace] = namespace.encode() + SEP
        if (type(key) is not str and not isinstance(key, str)) or not key or "\x00" in key:
            raise InvalidKey(f"key must be a non-empty string without NUL, got {key!r:.80}")
        full = prefix + key.encode()
        if len(full) > MAX_KEY_BYTES:
            raise InvalidKey(f"namespace+key is {len(full)} bytes; the limit is {MAX_KEY_BYTES}")
        return full

    def _encode(self, value: Any, expires: float | None) -> bytes:
        try:
            body = _packb(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise NotSerializable(f"value of type {type(value).__name__} cannot be stored: {exc}") from None
        if len(body) > self.max_value:
            raise ValueTooLarge(len(body), self.max_value)
        if expires is None:
            return body
        return _TTL_PREFIX + _U64.pack(int(expires * 1000)) + body

    @staticmethod
    def _expiry_ms(data: bytes) -> int:
        return _U64.unpack_from(data, 1)[0] if data[:1] == _TTL_PREFIX and len(data) >= 9 else 0

    @staticmethod
    def _value(full_key: bytes, data: bytes) -> Any:
        try:
            return msgpack.unpackb(data[9:] if data[:1] == _TTL_PREFIX else data, raw=False, strict_map_key=False)
        except Exception:
            raise CorruptValue(f"stored value for {full_key.replace(SEP, b'/')!r} does not decode") from None

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
        return E.write(self._env(), fn, *args)

    # ------------------------------------------------------------------ API

    def put(self, namespace: str, key: str, value: Any, ttl: float | None = None) -> None:
        if ttl is not None:
            return self.put_many(namespace, [(key, value)], ttl)
        # The hot write path, kept flat.  The key is remembered: what was written is
        # what gets read.
        full = self._key(namespace, key)
        try:
            data = _packb(value)
        except (TypeError, ValueError, OverflowError):
            data = self._encode(value, None)  # raises NotSerializable with the reason
        if len(data) > self.max_value:
            raise ValueTooLarge(len(data), self.max_value)
        env = self.env if self._generation == _FORKS[0] else self._env()
        txn = None  # E.write's loop inlined for the common case
        try:
            txn = env.begin(self._mem, None, True)  # positional: py-lmdb's keyword parsing
            txn.put(full, data)                    # costs ~5% of a put
            F.log(txn, self._feed, full, OP_PUT)  # _put_txn's lines, not a call to it: 3-4%
            txn.commit()
        except (lmdb.MapFullError, lmdb.MapResizedError):
            if txn is not None:
                txn.abort()
            E.write(env, self._put_txn, full, data)  # grows or adopts the map, then retries
        except BaseException:
            if txn is not None:
                txn.abort()
            raise

    def _put_txn(self, txn: lmdb.Transaction, full: bytes, data: bytes) -> None:
        """One entry without a TTL and its feed record.  A plain put, not a replace:
        if the old entry had a TTL, its index entry stays until due, and the sweep
        then finds the entry alive (no TTL now) and leaves it."""
        txn.put(full, data, db=self._mem)
        self._log(txn, full, OP_PUT)

    def put_many(self, namespace: str, items: list[tuple[str, Any]], ttl: float | None = None) -> None:
        """Store many entries in one write transaction (one commit for the batch)."""
        if ttl is not None and not (isinstance(ttl, (int, float)) and not isinstance(ttl, bool) and ttl > 0):
            raise StoreError(f"ttl must be a positive number of seconds, got {ttl!r}")
        expires = time.time() + ttl if ttl is not None else None
        encoded = [(self._key(namespace, k), self._encode(v, expires)) for k, v in items]  # validate first
        new_ms = self._expiry_ms(encoded[0][1]) if encoded else 0
        mem = self._mem

        def txn_fn(txn: lmdb.Transaction) -> None:
            for index, (full, data) in enumerate(encoded):
                old = txn.replace(full, data, db=mem)
                if new_ms or (old and old[0] == TTL_MARK):
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
        try:  # no fork check here: _reopen_after_fork already reopened us in a child
            # No `with`: a read-only transaction is aborted when its last reference goes,
            # here at the end of this statement; the context manager would cost ~0.2 µs.
            data = self.env.begin(self._mem).get(full)  # positional db: no keyword parsing
        except lmdb.MapResizedError:
            self.env.set_mapsize(0)
            return self.get(namespace, key, default)
        if data is None:
            return default
        try:  # the common entry is plain msgpack with string map keys: decode first, ask later
            return _unpackb(data)  # no keyword arguments: msgpack parses them on every call
        except Exception:
            return self._ttl_or_corrupt(full, data, default)

    def _ttl_or_corrupt(self, full: bytes, data: bytes, default: Any) -> Any:
        """What get returns for an entry the fast decode refused: one with a TTL header
        (0xC1 never starts msgpack, so it always lands here), a map with non-string
        keys (refused by msgpack's strict_map_key default), or a corrupt one."""
        if data[:1] == _TTL_PREFIX and not self._live(self._expiry_ms(data), time.time()):
            return default
        return self._value(full, data)  # strips the TTL header; raises CorruptValue naming the key

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
        if old is None or not self._live(self._expiry_ms(old), time.time()):
            return old, None
        return old, self._value(full, old)

    def cas(self, namespace: str, key: str, expected: Any, new: Any, ttl: float | None = None) -> bool:
        """Set ``new`` only if the current value equals ``expected`` (``None`` = absent)."""
        full = self._key(namespace, key)
        data = self._encode(new, time.time() + ttl if ttl is not None else None)

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
        full = self._key(namespace, key)

        def txn_fn(txn: lmdb.Transaction) -> int | float:
            old, current = self._current(txn, full)
            if current is None:
                current, old = 0, None
            if not isinstance(current, (int, float)) or isinstance(current, bool):
                raise StoreError(f"cannot increment a {type(current).__name__}")
            value = current + delta
            keep_ms = self._expiry_ms(old) if old is not None else 0
            txn.put(full, self._encode(value, keep_ms / 1000 if keep_ms else None), db=self._mem)
            self._log(txn, full, OP_PUT)
            return value

        return self._write(txn_fn)

    def items(self, namespace: str, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """Live ``(key, value)`` pairs of a namespace whose key starts with ``prefix``, in key order."""
        ns_prefix = self._key(namespace, "x")[:-1]
        start = ns_prefix + prefix.encode()
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

        return iter(E.read(self._env(), scan))

    def search(self, namespace: str, text: str) -> list[tuple[str, Any]]:
        """Entries whose key, or string value, contains ``text`` (case-insensitive)."""
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

        return E.read(self._env(), scan)

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
        return E.read(self._env(), lambda txn: F.read(txn, self._feed, since, limit))

    def last_change(self) -> int:
        """The newest change-feed seq (0 if none): where a new watcher starts."""
        return E.read(self._env(), lambda txn: F.last_seq(txn, self._feed))

    def stats(self) -> dict[str, Any]:
        env = self._env()
        return {"path": self.path, "map_size": env.info()["map_size"],
                "entries": E.read(env, lambda txn: txn.stat(self._mem)["entries"])}
