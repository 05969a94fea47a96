"""One LMDB Environment per process per path, reopened after fork, grown when full.

LMDB forbids opening the same environment twice in one process and must not be
used across fork, so every Memory and TaskJournal gets its Environment here.
Writers go through :func:`write`, which turns MapFullError into a doubled map and
a retry, and adopts a map another process grew (MapResizedError).
"""

from __future__ import annotations

import os
import struct
import threading
from typing import Any, Callable, Iterator, TypeVar

import lmdb

from .errors import CorruptStore

T = TypeVar("T")
_U64 = struct.Struct(">Q")

DEFAULT_MAP_SIZE = 64 * 1024 * 1024
MAX_DBS = 16

_lock = threading.Lock()
_envs: dict[str, tuple[int, lmdb.Environment]] = {}

#: Bumped in a forked child, so handles can tell they are stale without a getpid()
#: syscall on every operation.
fork_generation = [0]


def _after_fork_in_child() -> None:
    fork_generation[0] += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


def open_env(path: str, map_size: int = DEFAULT_MAP_SIZE, sync: bool = True) -> lmdb.Environment:
    """The process's Environment for ``path`` (created 0700 if absent)."""
    path = os.path.abspath(path)
    pid = os.getpid()
    with _lock:
        cached = _envs.get(path)
        if cached is not None and cached[0] == pid:
            return cached[1]
        if cached is not None:
            # Inherited across fork: py-lmdb still counts it as open here, so close the
            # child's copy first.  Safe: fcntl locks are not inherited, and LMDB only
            # clears reader slots carrying this (new) pid, of which there are none.
            cached[1].close()
        os.makedirs(path, mode=0o700, exist_ok=True)
        try:
            # writemap: commits write pages in place instead of pwrite()-ing copies, 2-6x
            # cheaper write transactions.  Its cost (no protection from wild pointer
            # writes into the map) does not apply to Python callers.
            env = lmdb.open(path, map_size=map_size, max_dbs=MAX_DBS, sync=sync, metasync=sync,
                            writemap=True, max_readers=512, readahead=False, lock=True)
        except lmdb.Error as exc:
            raise CorruptStore(f"cannot open LMDB environment at {path}: {exc}") from None
        env.reader_check()  # free slots of readers that died (kill -9) before we came
        _envs[path] = (pid, env)
        return env


def close_env(path: str) -> None:
    with _lock:
        cached = _envs.pop(os.path.abspath(path), None)
        if cached is not None and cached[0] == os.getpid():
            cached[1].close()


def write(env: lmdb.Environment, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(txn, *args)`` in a write transaction, growing the map as often as needed.

    Explicit begin/commit rather than ``with``: the context manager costs ~0.2 µs,
    a seventh of a whole small write transaction."""
    while True:
        txn = None
        try:
            txn = env.begin(write=True)
            result = fn(txn, *args)
            txn.commit()
            return result
        except (lmdb.MapFullError, lmdb.MapResizedError) as exc:
            if txn is not None:
                txn.abort()
            if isinstance(exc, lmdb.MapFullError):
                env.set_mapsize(env.info()["map_size"] * 2)
            else:
                env.set_mapsize(0)  # another process grew it: adopt the new size
        except BaseException:
            if txn is not None:
                txn.abort()
            raise


def read(env: lmdb.Environment, fn: Callable[[lmdb.Transaction], T]) -> T:
    while True:
        try:
            with env.begin() as txn:
                return fn(txn)
        except lmdb.MapResizedError:
            env.set_mapsize(0)


def pop_due(txn: lmdb.Transaction, index: Any, before_ms: int, limit: int | None = None) -> Iterator[bytes]:
    """Remove and yield entries of a time index (``8-byte big-endian ms + suffix``) due before ``before_ms``.

    Yields each entry's suffix (the key it indexes): the walk behind the TTL sweep
    (journal compaction reads per-ms entries with id lists instead); ``limit`` caps
    how many one transaction takes.
    """
    cur = txn.cursor(db=index)
    if not cur.first():
        return
    taken = 0
    while cur.key() and _U64.unpack_from(cur.key())[0] < before_ms and (limit is None or taken < limit):
        suffix = cur.key()[8:]
        taken += 1
        yield suffix
        if not cur.delete():
            return


def orchflow_home() -> str:
    """``$ORCHFLOW_HOME`` or ``~/.orchflow``: where memory, journal and run files live."""
    return os.path.abspath(os.environ.get("ORCHFLOW_HOME") or os.path.join(os.path.expanduser("~"), ".orchflow"))

