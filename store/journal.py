"""The durable task journal behind the broker's :class:`bus.journal.Journal` seam.

Its own LMDB environment (default ``$ORCHFLOW_HOME/journal``), separate from swarm
memory so its fsync policy is its own.  The broker stages records as it handles a
batch of messages and calls :meth:`TaskJournal.commit` once per loop turn: one
transaction, one fsync, for however many tasks arrived (group commit).

* ``tasks``    ``id`` -> msgpack task record (latest state)
* ``finished`` ``finished_ms (8-byte big-endian) id`` -> ``b""``: what compaction walks
"""

from __future__ import annotations

import logging
import os
import struct
import time
from typing import Any, Iterator

import lmdb
import msgpack

from bus.journal import Journal
from bus.protocol import State

from . import env as E

log = logging.getLogger("orchflow.journal")
_U64 = struct.Struct(">Q")


class TaskJournal(Journal):
    def __init__(self, path: str | None = None, sync: bool = True, map_size: int = 256 * 1024 * 1024) -> None:
        self.path = os.path.abspath(path or os.path.join(E.orchflow_home(), "journal"))
        self.env = E.open_env(self.path, map_size, sync)
        self._tasks = self.env.open_db(b"tasks")
        self._finished = self.env.open_db(b"finished")
        self._staged: dict[str, dict[str, Any]] = {}
        self.corrupt = 0

    def write(self, record: dict[str, Any]) -> None:
        self._staged[record["id"]] = record  # several changes in one batch: last one wins

    def commit(self) -> None:
        if not self._staged:
            return
        staged = self._staged
        packed = [(tid.encode(), msgpack.packb(rec, use_bin_type=True), rec) for tid, rec in staged.items()]

        def txn_fn(txn: lmdb.Transaction) -> None:
            put = txn.put
            for key, data, rec in packed:
                put(key, data, db=self._tasks)
                if rec.get("state") in State.FINAL:
                    put(_U64.pack(int((rec.get("finished") or time.time()) * 1000)) + key, b"", db=self._finished)

        E.write(self.env, txn_fn)
        self._staged = {}

    def replay(self) -> Iterator[dict[str, Any]]:
        def scan(txn: lmdb.Transaction) -> list[dict[str, Any]]:
            out = []
            for key, data in txn.cursor(db=self._tasks):
                try:
                    rec = msgpack.unpackb(data, raw=False, strict_map_key=False)
                    if not isinstance(rec, dict) or rec.get("id") != key.decode():
                        raise ValueError("record does not match its key")
                except Exception as exc:  # keep going: one bad record must not lose the rest
                    self.corrupt += 1
                    log.error("journal record %r unreadable (%s); skipped", key[:64], exc)
                    continue
                out.append(rec)
            return out

        return iter(E.read(self.env, scan))

    def lookup(self, task_id: str) -> dict[str, Any] | None:
        data = E.read(self.env, lambda txn: txn.get(task_id.encode(), db=self._tasks))
        if data is None:
            return None
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception:
            return None

    def compact(self, finished_before: float) -> int:
        def txn_fn(txn: lmdb.Transaction) -> int:
            removed = 0
            for key in E.pop_due(txn, self._finished, int(finished_before * 1000)):
                txn.delete(key, db=self._tasks)
                removed += 1
            return removed

        return E.write(self.env, txn_fn)

    def __len__(self) -> int:
        return E.read(self.env, lambda txn: txn.stat(self._tasks)["entries"])

    def close(self) -> None:
        self.commit()
        self.env.sync(True)
