"""The durable task journal behind the broker's :class:`bus.journal.Journal` seam.

Its own LMDB environment (default ``$ORCHFLOW_HOME/journal``), separate from swarm
memory so its fsync policy is its own.  The broker stages records as it handles a
batch of messages and calls :meth:`TaskJournal.commit` once per loop turn: one
transaction, one fsync, for however many tasks arrived (group commit).

* ``tasks``    ``id`` -> msgpack row ``[ROW_FORMAT, *fields]`` of the task's latest state
  (:meth:`bus.task.Task.to_row`; records of the older dict format are still read)
* ``finished`` ``finished_ms (8-byte big-endian) + txn id (8-byte)`` -> msgpack list of the
  ids that finished in that ms, one entry per ms per commit rather than one per task:
  what compaction walks.  (Older entries: ``finished_ms + id`` -> ``b""``.)
* ``quarantine`` ``id`` -> msgpack ``{"reason", "at", "row"}``: records replay could not
  restore, moved aside (kept for inspection, counted in STATUS) so that one poisoned
  record never stops a broker from starting
* ``meta``     small broker records (``schedule\0<project>\0<name>`` -> msgpack map),
  written in the same transaction as the tasks staged with them

One broker per journal: the journal holds an exclusive ``flock`` on ``broker.lock`` in
its directory for as long as it is open (:class:`JournalLocked` names the holder).
A second broker on the same journal would replay and run the same tasks twice.

Rows, per-ms index entries and ``putmulti`` took a record's cost from 3.1 to 1.0 µs
(4.7-5.7 to 2.1-2.3 µs with fsync) in 500-record commits; ``python bench/store.py``
shows the effect on the broker as durable vs in-memory journal throughput.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import time
from typing import Any, Iterable, Iterator

import lmdb
import msgpack

from bus.journal import Journal
from bus.protocol import State
from bus.task import ROW_FINISHED, ROW_STATE, Task, record_from_row

from . import env as E
from .errors import InvalidKey, JournalLocked

log = logging.getLogger("orchflow.journal")
_U64 = struct.Struct(">Q")
_FINAL = State.FINAL


MAX_KEY = 511  # LMDB's key limit, in bytes


def _lock_exclusively(path: str) -> int:
    fd = os.open(os.path.join(path, "broker.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise JournalLocked(f"the journal at {path} is in use by another broker (pid {holder}); "
                            f"one broker per journal: stop it first (orchflow-launch stop)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class TaskJournal(Journal):
    def __init__(self, path: str | None = None, sync: bool = True, map_size: int | None = None,
                 exclusive: bool = True) -> None:
        if map_size is None:  # the journal starts bigger than the memory: it is written on every task
            map_size = int(os.environ.get("ORCHFLOW_MAP_SIZE") or 256 * 1024 * 1024)
        self.path = os.path.abspath(path or os.path.join(E.orchflow_home(), "journal"))
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        self._lock_fd = _lock_exclusively(self.path) if exclusive else None
        try:
            self._shared = E.open_env(self.path, map_size, sync)
        except BaseException:
            self._unlock()
            raise
        self.env = self._shared.env
        self._tasks = self._shared.db(b"tasks")
        self._finished = self._shared.db(b"finished")
        self._quarantine = self._shared.db(b"quarantine")
        self._meta = self._shared.db(b"meta")
        self._staged: dict[str, tuple[Any, ...]] = {}
        self._staged_meta: dict[bytes, bytes | None] = {}
        self._pack = msgpack.Packer(use_bin_type=True).pack  # one Packer, not one per record
        self.corrupt = 0

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def write(self, task: Task) -> None:
        if not 0 < len(task.id.encode()) <= MAX_KEY:  # the protocol refuses such ids; never stage one
            raise InvalidKey(f"task id of {len(task.id.encode())} bytes cannot be journaled (1..{MAX_KEY})")
        self._staged[task.id] = task.to_row()  # several changes in one batch: last one wins

    def write_meta(self, key: str, value: Any) -> None:
        raw = key.encode()
        if not 0 < len(raw) <= MAX_KEY:
            raise InvalidKey(f"meta key of {len(raw)} bytes cannot be journaled (1..{MAX_KEY})")
        self._staged_meta[raw] = None if value is None else self._pack(value)

    def read_meta(self, prefix: str) -> dict[str, Any]:
        start = prefix.encode()

        def scan(txn: lmdb.Transaction) -> dict[str, Any]:
            out = {}
            cur = txn.cursor(self._meta)
            if cur.set_range(start):
                for key, data in cur:
                    if not key.startswith(start):
                        break
                    try:
                        out[key.decode()] = msgpack.unpackb(data, raw=False)
                    except Exception as exc:  # a damaged record is reported, the rest still read
                        log.error("journal meta record %r unreadable (%s); skipped", key[:64], exc)
            return out

        return self._shared.read(scan)

    def staged(self) -> int:
        return len(self._staged) + len(self._staged_meta)

    def commit(self) -> None:
        if not self._staged and not self._staged_meta:
            return
        pack = self._pack
        rows: list[tuple[bytes, bytes]] = []
        finished: dict[int, list[bytes]] = {}
        now = None
        for tid, row in self._staged.items():
            key = tid.encode()
            rows.append((key, pack(row)))
            if row[ROW_STATE] in _FINAL:
                at = row[ROW_FINISHED] or now or (now := time.time())
                finished.setdefault(int(at * 1000), []).append(key)

        meta = self._staged_meta

        def txn_fn(txn: lmdb.Transaction) -> None:
            if rows:
                txn.cursor(self._tasks).putmulti(rows)  # one C loop, not a Python call per row
            if finished:
                suffix = _U64.pack(txn.id())
                txn.cursor(self._finished).putmulti(
                    [(_U64.pack(ms) + suffix, pack(keys)) for ms, keys in finished.items()])
            for key, value in meta.items():
                if value is None:
                    txn.delete(key, db=self._meta)
                else:
                    txn.put(key, value, db=self._meta)

        self._shared.write(txn_fn)
        self._staged = {}
        self._staged_meta = {}

    @staticmethod
    def _decode(key: bytes, data: bytes) -> dict[str, Any]:
        stored = msgpack.unpackb(data, raw=False, strict_map_key=False)
        rec = stored if isinstance(stored, dict) else record_from_row(stored)  # dict: the older format
        if rec.get("id") != key.decode():
            raise ValueError("record does not match its key")
        return rec

    def replay(self) -> Iterator[dict[str, Any]]:
        bad: list[tuple[bytes, str]] = []

        def scan(txn: lmdb.Transaction) -> list[dict[str, Any]]:
            out = []
            for key, data in txn.cursor(db=self._tasks):
                try:
                    rec = self._decode(key, data)
                except Exception as exc:  # keep going: one bad record must not lose the rest
                    bad.append((key, f"unreadable: {type(exc).__name__}: {exc}"))
                    continue
                out.append(rec)
            return out

        records = self._shared.read(scan)
        for key, reason in bad:
            self.corrupt += 1
            self._quarantine_key(key, reason)
        return iter(records)

    def quarantine(self, task_id: str, reason: str) -> None:
        """Move a record replay could not restore out of the way, keeping it for inspection."""
        self._staged.pop(task_id, None)
        self._quarantine_key(task_id.encode(errors="surrogatepass"), reason)

    def _quarantine_key(self, key: bytes, reason: str) -> None:
        log.error("journal record %r quarantined: %s", key[:64], reason[:200])

        def txn_fn(txn: lmdb.Transaction) -> None:
            row = txn.pop(key, db=self._tasks)
            if row is not None:
                txn.put(key, self._pack({"reason": reason[:1000], "at": time.time(), "row": row}), db=self._quarantine)

        if 0 < len(key) <= MAX_KEY:
            self._shared.write(txn_fn)

    def quarantined(self) -> dict[str, str]:
        """id -> reason of every quarantined record."""
        def scan(txn: lmdb.Transaction) -> dict[str, str]:
            out = {}
            for key, data in txn.cursor(db=self._quarantine):
                try:
                    out[key.decode(errors="replace")] = msgpack.unpackb(data, raw=False).get("reason", "?")
                except Exception:
                    out[key.decode(errors="replace")] = "?"
            return out

        return self._shared.read(scan)

    def lookup(self, task_id: str) -> dict[str, Any] | None:
        try:
            key = task_id.encode()
        except (AttributeError, UnicodeEncodeError):
            return None
        if not 0 < len(key) <= MAX_KEY:
            return None  # no such key can exist
        data = self._shared.read(lambda txn: txn.get(key, db=self._tasks))
        if data is None:
            return None
        try:
            return self._decode(key, data)
        except Exception as exc:
            log.error("journal record %r unreadable (%s)", key[:64], exc)
            return None

    def lookup_many(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """:meth:`lookup` for many ids in one read transaction: a SUBMIT of 256
        client-made ids is checked for earlier runs with one, not 256 (4-5 µs each)."""
        keys = []
        for task_id in ids:
            try:
                key = task_id.encode()
            except (AttributeError, UnicodeEncodeError):
                continue
            if 0 < len(key) <= MAX_KEY:
                keys.append((task_id, key))
        if not keys:
            return {}

        def get_all(txn: lmdb.Transaction) -> list[tuple[str, bytes, bytes]]:
            get, db = txn.get, self._tasks
            return [(task_id, key, data) for task_id, key in keys if (data := get(key, db=db)) is not None]

        found = {}
        for task_id, key, data in self._shared.read(get_all):
            try:
                found[task_id] = self._decode(key, data)
            except Exception as exc:
                log.error("journal record %r unreadable (%s)", key[:64], exc)
        return found

    def compact(self, finished_before: float) -> int:
        """Drop the records of tasks finished before the cutoff; returns how many."""
        cutoff = _U64.pack(int(finished_before * 1000))

        def txn_fn(txn: lmdb.Transaction) -> int:
            removed = 0
            cur = txn.cursor(self._finished)
            while cur.first() and cur.key() < cutoff:
                entry, ids = cur.key(), cur.value()
                try:
                    keys = msgpack.unpackb(ids) if ids else [entry[8:]]  # b"": one id in the key
                except Exception:
                    log.error("journal index entry %r unreadable; dropped", entry[:16])
                    keys = []
                for key in keys:
                    if isinstance(key, bytes) and txn.delete(key, db=self._tasks):
                        removed += 1
                cur.delete()
            return removed

        return self._shared.write(txn_fn)

    def __len__(self) -> int:
        return self._shared.read(lambda txn: txn.stat(self._tasks)["entries"])

    def close(self) -> None:
        try:
            self.commit()
            self._shared.sync()
        finally:
            self._unlock()
