"""One LMDB environment policy for every process: it never shrinks or tears a file.

LMDB forbids opening the same environment twice in one process and must not be
used across fork, so every Memory and TaskJournal gets its :class:`SharedEnv` here,
one per path per process, reopened after fork.

Why the rest of this module exists.  We open with ``writemap`` (commits write pages
in place, 2-6x cheaper write transactions), and with ``writemap`` LMDB
``ftruncate()``\\ s ``data.mdb`` to the *opening process's* map size.  A process that
opened with a map smaller than the file another process had grown it to cut the file
under that process's feet: the writer died of SIGBUS and acknowledged values read
back as zeros.  So every map size this module ever sets, at open and on growth, is

* at least the current size of ``data.mdb`` (which is the largest map any writer set),
* chosen while holding ``map.lock`` (an ``flock`` beside the data), so no other
  process can grow the file between our look at its size and our ``ftruncate``.

Inside one process a map change must not happen while another thread holds a
transaction (its pages would be unmapped under it), so transactions pass a
:class:`Gate`: taking it is a list append and pop, and a map change waits until no
transaction is inside.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
from typing import Any, Callable, Iterator, TypeVar

import lmdb

from .errors import CorruptStore, StoreError

T = TypeVar("T")
_U64 = struct.Struct(">Q")

#: The first map of a new environment; it grows (doubling) as the data does, so this
#: only sets how often that happens.  ``ORCHFLOW_MAP_SIZE`` (bytes) overrides it, which
#: is how the chaos test drives stores through many doublings with little data.
DEFAULT_MAP_SIZE = int(os.environ.get("ORCHFLOW_MAP_SIZE") or 64 * 1024 * 1024)
MAX_DBS = 16
LOCK_NAME = "map.lock"

#: LMDB errors that mean the file itself is damaged: raised as CorruptStore.
_DAMAGE = (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError, lmdb.VersionMismatchError,
           lmdb.PanicError, lmdb.BadRslotError, lmdb.PageFullError)

_lock = threading.Lock()
_envs: dict[str, tuple[int, "SharedEnv"]] = {}

#: Bumped in a forked child, so handles can tell they are stale without a getpid()
#: syscall on every operation.
fork_generation = [0]


def _after_fork_in_child() -> None:
    fork_generation[0] += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


def translate(exc: lmdb.Error, path: str) -> StoreError:
    """The store's error for a raw LMDB one: damage is CorruptStore, the rest StoreError."""
    if isinstance(exc, _DAMAGE):
        return CorruptStore(f"LMDB environment at {path} is damaged ({type(exc).__name__}: {exc}); "
                            f"check it with: orchflow memory verify")
    return StoreError(f"LMDB error at {path}: {type(exc).__name__}: {exc}")


class Gate:
    """Transactions enter and leave; a map change closes it and waits for it to empty.

    ``inside`` is a list because ``append``/``pop`` are atomic under the GIL: the
    hot paths pay ~40 ns instead of a lock.  A thread entering while the gate is
    closed steps back out and waits on ``resizing`` (held for the whole change)."""

    __slots__ = ("inside", "closed", "resizing")

    def __init__(self) -> None:
        self.inside: list[None] = []
        self.closed = False
        self.resizing = threading.Lock()

    def enter(self) -> None:
        inside = self.inside
        while True:
            inside.append(None)
            if not self.closed:
                return
            inside.pop()
            with self.resizing:  # wait for the change to finish
                pass

    def leave(self) -> None:
        self.inside.pop()

    def drain(self) -> None:
        """With ``resizing`` held: close, then wait until no transaction is inside."""
        self.closed = True
        spins = 0
        while self.inside:
            spins += 1
            time.sleep(0 if spins < 100 else 0.0005)

    def reopen(self) -> None:
        self.closed = False


class SharedEnv:
    """An LMDB environment opened under the policy above, with its gate and map lock."""

    def __init__(self, path: str, map_size: int, sync: bool) -> None:
        self.path = path
        self.gate = Gate()
        os.makedirs(path, mode=0o700, exist_ok=True)
        self._lock_fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            with self._map_lock():
                size = max(_round(map_size), self.file_size())
                try:
                    self.env = lmdb.open(path, map_size=size, max_dbs=MAX_DBS, sync=sync, metasync=sync,
                                         writemap=True, max_readers=512, readahead=False, lock=True, mode=0o600)
                except lmdb.Error as exc:
                    raise CorruptStore(f"cannot open LMDB environment at {path}: {exc}") from None
        except BaseException:
            os.close(self._lock_fd)
            raise
        self.env.reader_check()  # free slots of readers that died (kill -9) before we came

    # ------------------------------------------------------------------ the map

    def file_size(self) -> int:
        try:
            return os.stat(os.path.join(self.path, "data.mdb")).st_size
        except FileNotFoundError:
            return 0

    def map_size(self) -> int:
        return self.env.info()["map_size"]

    def _map_lock(self) -> "_Flock":
        return _Flock(self._lock_fd)

    def remap(self, grow: bool) -> None:
        """Grow the map (``grow``: it was full) or adopt the size another process grew
        it to (MapResizedError).  Never below the file's size, never with a transaction
        of this process open."""
        gate = self.gate
        with gate.resizing:
            gate.drain()
            try:
                with self._map_lock():
                    current = self.map_size()
                    target = max(current * 2 if grow else current, self.file_size())
                    if target == current and not grow:
                        self.env.set_mapsize(0)  # LMDB's own view: the size in the meta page
                        target = max(self.map_size(), self.file_size())
                    self.env.set_mapsize(_round(target))
            finally:
                gate.reopen()

    # ------------------------------------------------------------------ transactions

    def db(self, name: bytes) -> Any:
        """A named database, created if absent (a write transaction, so it may need a remap)."""
        return self.write(lambda txn: self.env.open_db(name, txn=txn))

    def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(txn, *args)`` in a write transaction, remapping as often as needed.

        Explicit begin/commit rather than ``with``: the context manager costs ~0.2 µs,
        a seventh of a whole small write transaction."""
        gate = self.gate
        while True:
            gate.enter()
            txn = None
            try:
                txn = self.env.begin(write=True)
                result = fn(txn, *args)
                txn.commit()
                return result
            except lmdb.MapFullError:
                grow = True
            except lmdb.MapResizedError:
                grow = False
            except lmdb.Error as exc:
                raise translate(exc, self.path) from None
            finally:
                if txn is not None:
                    try:
                        txn.abort()  # a no-op after commit
                    except lmdb.Error:
                        pass
                gate.leave()
            self.remap(grow)

    def read(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        gate = self.gate
        while True:
            gate.enter()
            try:
                with self.env.begin() as txn:
                    return fn(txn)
            except lmdb.MapResizedError:
                pass
            except lmdb.Error as exc:
                raise translate(exc, self.path) from None
            finally:
                gate.leave()
            self.remap(False)

    def sync(self) -> None:
        self.env.sync(True)

    def close(self) -> None:
        try:
            self.env.close()
        finally:
            try:
                os.close(self._lock_fd)
            except OSError:
                pass


class _Flock:
    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


def _round(size: int) -> int:
    page = 1 << 20
    return max(page, -(-int(size) // page) * page)


def open_env(path: str, map_size: int = DEFAULT_MAP_SIZE, sync: bool = True) -> SharedEnv:
    """The process's SharedEnv for ``path`` (created 0700 if absent)."""
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
        shared = SharedEnv(path, map_size, sync)
        _envs[path] = (pid, shared)
        return shared


def close_env(path: str) -> None:
    with _lock:
        cached = _envs.pop(os.path.abspath(path), None)
        if cached is not None and cached[0] == os.getpid():
            cached[1].close()


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
