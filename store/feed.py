"""The change feed of swarm memory: one record per change, read by watchers.

Record: ``seq`` (8-byte big-endian) -> op (1 byte) + time (8-byte double) +
``namespace \\0 key``.  Packed by hand, not msgpack: it is written for every change.
``seq`` is the LMDB write transaction id shifted left 16 bits plus the change's
index in that transaction: monotonic across processes, and free (no cursor seek).

Namespaces under ``routing:`` are not recorded: they hold the broker's learning data
(an outcome per finished task, expiring a week later), written at task rate.  Recorded,
they drowned the ``memory.changed`` events people watch and could outrun the feed's
window (FEED_KEEP records) before a watcher read them.

The record is written in the transaction that makes the change, so a watcher sees
every committed change and nothing else.  That is the price of a put: a second
B-tree write, which measured 0.6-1 µs of a non-durable put's ~3 µs.  Deferring it
(buffered per process, packed one record per batch, written by a background thread)
was measured too: raw py-lmdb with even the cheapest such buffer runs at 83-88% of
its value-only rate, before any of Memory's own work, and a killed writer would
lose notifications.  So the record stays transactional.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import lmdb
import msgpack


SEP = b"\x00"
FEED_KEEP = 100_000          # records kept; older ones are trimmed
FEED_PER_TXN = 1 << 16       # records one transaction may write (the seq's low 16 bits)
UNRECORDED = b"routing:"     # namespaces with this prefix are not in the feed (see above)
OP_PUT, OP_DELETE, OP_EXPIRE = 1, 2, 3
OP_NAMES = {OP_PUT: "put", OP_DELETE: "delete", OP_EXPIRE: "expire"}
_U64 = struct.Struct(">Q")
_HEAD = struct.Struct(">Bd")  # op code, time.time()


def log(txn: lmdb.Transaction, db: Any, full: bytes, op: int, index: int = 0) -> None:
    """Write one record in ``txn``; every 1000th transaction also trims the feed."""
    if full.startswith(UNRECORDED):
        return
    txn_id = txn.id()
    seq = _U64.pack((txn_id << 16) | index)
    entry = _HEAD.pack(op, time.time()) + full
    if not txn.put(seq, entry, True, True, True, db):  # append=True: seqs only grow, so it
        txn.put(seq, entry, db=db)                    # is the fast path, never a wrong one
    if txn_id % 1000 == 0 and index == 0:  # trim now and then, not on every write
        trim(txn, db)


def trim(txn: lmdb.Transaction, db: Any) -> None:
    excess = txn.stat(db)["entries"] - FEED_KEEP
    cur = txn.cursor(db=db)
    if excess > 0 and cur.first():
        for _ in range(excess):
            if not cur.delete():
                break


def read(txn: lmdb.Transaction, db: Any, since: int, limit: int) -> list[dict[str, Any]]:
    """Records with ``seq > since``, oldest first."""
    out, cur = [], txn.cursor(db=db)
    if not cur.set_range(_U64.pack(since + 1)):
        return out
    for key, data in cur:
        ns, name, op, ts = decode(data)
        out.append({"seq": _U64.unpack(key)[0], "ns": ns, "key": name, "op": op, "ts": ts})
        if len(out) >= limit:
            break
    return out


def last_seq(txn: lmdb.Transaction, db: Any) -> int:
    cur = txn.cursor(db=db)
    return _U64.unpack(cur.key())[0] if cur.last() else 0


def decode(data: bytes) -> tuple[str, str, str, float]:
    if data[:1] == b"\x94":  # written by orchflow before the packed format: msgpack (ns, key, op, ts)
        return tuple(msgpack.unpackb(data, raw=False))  # type: ignore[return-value]
    op, ts = _HEAD.unpack_from(data)
    ns, key = data[_HEAD.size:].split(SEP, 1)
    return ns.decode(), key.decode(), OP_NAMES.get(op, "unknown"), ts
