"""Swarm memory: a key-value store shared by every project and process, on LMDB.

Layout (named databases in one environment):

* ``mem``  ``namespace \\0 key`` -> msgpack ``[expires_at | nil, value]``
* ``exp``  ``expires_at (8-byte big-endian ms) namespace \\0 key`` -> ``b""``, so the
  TTL sweep reads only what is due
* ``feed`` ``seq (8-byte big-endian)`` -> msgpack ``{seq, ns, key, op, ts}``: the change
  feed the bus turns into ``memory.changed`` events

Readers never block (LMDB MVCC); writers are serialized by LMDB across processes,
which is what makes :meth:`Memory.cas` and :meth:`Memory.incr` lost-update free.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Any, Iterator

import lmdb
import msgpack

from . import env as E
from .errors import CorruptValue, InvalidKey, NotSerializable, StoreError, ValueTooLarge

SEP = b"\x00"
MAX_KEY_BYTES = 480          # LMDB's key limit is 511; leave room for the expiry prefix
DEFAULT_MAX_VALUE = 64 * 1024 * 1024
FEED_KEEP = 100_000          # change-feed entries kept; older ones are trimmed
_U64 = struct.Struct(">Q")
_MISSING = object()


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
        self._pid = -1
        self._open()

    def _open(self) -> None:
        self.env = E.open_env(self.path, self.map_size, self.sync)
        self._mem = self.env.open_db(b"mem")
        self._exp = self.env.open_db(b"exp")
        self._feed = self.env.open_db(b"feed")
        self._pid = os.getpid()

    def _check_fork(self) -> lmdb.Environment:
        if self._pid != os.getpid():
            self._open()
        return self.env

    # ------------------------------------------------------------------ encoding

    @staticmethod
    def _key(namespace: str, key: str) -> bytes:
        if not isinstance(namespace, str) or not namespace or "\x00" in namespace:
            raise InvalidKey(f"namespace must be a non-empty string without NUL, got {namespace!r}")
        if not isinstance(key, str) or not key or "\x00" in key:
            raise InvalidKey(f"key must be a non-empty string without NUL, got {key!r:.80}")
        full = namespace.encode() + SEP + key.encode()
        if len(full) > MAX_KEY_BYTES:
            raise InvalidKey(f"namespace+key is {len(full)} bytes; the limit is {MAX_KEY_BYTES}")
        return full

    def _encode(self, value: Any, expires: float | None) -> bytes:
        try:
            data = msgpack.packb([expires, value], use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise NotSerializable(f"value of type {type(value).__name__} cannot be stored: {exc}") from None
        if len(data) > self.max_value:
            raise ValueTooLarge(len(data), self.max_value)
        return data

    @staticmethod
    def _decode(full_key: bytes, data: bytes) -> tuple[float | None, Any]:
        try:
            expires, value = msgpack.unpackb(data, raw=False, strict_map_key=False)
            return expires, value
        except Exception:
            raise CorruptValue(f"stored value for {full_key.replace(SEP, b'/')!r} does not decode") from None

    @staticmethod
    def _live(expires: float | None, now: float) -> bool:
        return expires is None or expires > now

    def _index_expiry(self, txn: lmdb.Transaction, full: bytes, old: bytes | None, expires: float | None) -> None:
        if old is not None:
            old_exp = self._decode(full, old)[0]
            if old_exp is not None:
                txn.delete(_U64.pack(int(old_exp * 1000)) + full, db=self._exp)
        if expires is not None:
            txn.put(_U64.pack(int(expires * 1000)) + full, b"", db=self._exp)

    def _log(self, txn: lmdb.Transaction, namespace: str, key: str, op: str) -> None:
        cur = txn.cursor(db=self._feed)
        seq = _U64.unpack(cur.key())[0] + 1 if cur.last() else 1
        txn.put(_U64.pack(seq), msgpack.packb({"seq": seq, "ns": namespace, "key": key, "op": op,
                                                "ts": time.time()}), db=self._feed)
        if seq > FEED_KEEP and seq % 1000 == 0:  # trim in chunks, not on every write
            cur.first()
            while cur.key() and _U64.unpack(cur.key())[0] <= seq - FEED_KEEP:
                cur.delete()

    # ------------------------------------------------------------------ API

    def put(self, namespace: str, key: str, value: Any, ttl: float | None = None) -> None:
        full = self._key(namespace, key)
        if ttl is not None and not (isinstance(ttl, (int, float)) and ttl > 0):
            raise StoreError(f"ttl must be a positive number of seconds, got {ttl!r}")
        expires = time.time() + ttl if ttl is not None else None
        data = self._encode(value, expires)  # before the transaction: bad input changes nothing

        def txn_fn(txn: lmdb.Transaction) -> None:
            old = txn.get(full, db=self._mem)
            self._index_expiry(txn, full, old, expires)
            txn.put(full, data, db=self._mem)
            self._log(txn, namespace, key, "put")

        E.write(self._check_fork(), txn_fn)

    def get(self, namespace: str, key: str, default: Any = None) -> Any:
        full = self._key(namespace, key)
        data = E.read(self._check_fork(), lambda txn: txn.get(full, db=self._mem))
        if data is None:
            return default
        expires, value = self._decode(full, data)
        return value if self._live(expires, time.time()) else default

    def delete(self, namespace: str, key: str) -> bool:
        full = self._key(namespace, key)

        def txn_fn(txn: lmdb.Transaction) -> bool:
            old = txn.get(full, db=self._mem)
            if old is None:
                return False
            self._index_expiry(txn, full, old, None)
            txn.delete(full, db=self._mem)
            self._log(txn, namespace, key, "delete")
            return True

        return E.write(self._check_fork(), txn_fn)

    def cas(self, namespace: str, key: str, expected: Any, new: Any, ttl: float | None = None) -> bool:
        """Set ``new`` only if the current value equals ``expected`` (``None`` = absent)."""
        full = self._key(namespace, key)
        expires = time.time() + ttl if ttl is not None else None
        data = self._encode(new, expires)

        def txn_fn(txn: lmdb.Transaction) -> bool:
            old = txn.get(full, db=self._mem)
            current = None
            if old is not None:
                old_exp, value = self._decode(full, old)
                current = value if self._live(old_exp, time.time()) else None
            if current != expected:
                return False
            self._index_expiry(txn, full, old, expires)
            txn.put(full, data, db=self._mem)
            self._log(txn, namespace, key, "put")
            return True

        return E.write(self._check_fork(), txn_fn)

    def incr(self, namespace: str, key: str, delta: int | float = 1) -> int | float:
        """Atomically add ``delta`` (absent counts as 0) and return the new value."""
        full = self._key(namespace, key)

        def txn_fn(txn: lmdb.Transaction) -> int | float:
            old = txn.get(full, db=self._mem)
            current, expires = 0, None
            if old is not None:
                expires, current = self._decode(full, old)
                if not self._live(expires, time.time()):
                    current, expires = 0, None
            if not isinstance(current, (int, float)) or isinstance(current, bool):
                raise StoreError(f"cannot increment a {type(current).__name__}")
            value = current + delta
            txn.put(full, self._encode(value, expires), db=self._mem)
            self._log(txn, namespace, key, "put")
            return value

        return E.write(self._check_fork(), txn_fn)

    def items(self, namespace: str, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """Live ``(key, value)`` pairs of a namespace whose key starts with ``prefix``, in key order."""
        start = self._key(namespace, "x")[:-1] + prefix.encode()
        skip = len(namespace.encode()) + 1
        now = time.time()

        def scan(txn: lmdb.Transaction) -> list[tuple[str, Any]]:
            out = []
            cur = txn.cursor(db=self._mem)
            if not cur.set_range(start):
                return out
            for full, data in cur:
                if not full.startswith(start):
                    break
                expires, value = self._decode(full, data)
                if self._live(expires, now):
                    out.append((full[skip:].decode(), value))
            return out

        return iter(E.read(self._check_fork(), scan))

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

        return E.read(self._check_fork(), scan)

    def sweep(self, now: float | None = None) -> int:
        """Delete entries whose TTL has passed; returns how many."""
        now = time.time() if now is None else now
        limit = _U64.pack(int(now * 1000))

        def txn_fn(txn: lmdb.Transaction) -> int:
            cur = txn.cursor(db=self._exp)
            removed = 0
            if not cur.first():
                return 0
            while cur.key() and cur.key()[:8] <= limit:
                full = cur.key()[8:]
                data = txn.get(full, db=self._mem)
                if data is not None and not self._live(self._decode(full, data)[0], now):
                    txn.delete(full, db=self._mem)
                    ns, key = full.split(SEP, 1)
                    self._log(txn, ns.decode(), key.decode(), "expire")
                    removed += 1
                if not cur.delete():
                    break
            return removed

        return E.write(self._check_fork(), txn_fn)

    def changes(self, since: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Change-feed entries with ``seq > since``, oldest first."""
        def scan(txn: lmdb.Transaction) -> list[dict[str, Any]]:
            out, cur = [], txn.cursor(db=self._feed)
            if not cur.set_range(_U64.pack(since + 1)):
                return out
            for _, data in cur:
                out.append(msgpack.unpackb(data, raw=False))
                if len(out) >= limit:
                    break
            return out

        return E.read(self._check_fork(), scan)

    def stats(self) -> dict[str, Any]:
        env = self._check_fork()
        return {"path": self.path, "map_size": env.info()["map_size"],
                "entries": E.read(env, lambda txn: txn.stat(self._mem)["entries"])}
