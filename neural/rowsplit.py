"""Run a batch's rows on every core, each part with a single-threaded BLAS.

Why not let OpenBLAS thread each matrix product?  Between two products of a
forward pass the per-element kernel runs in the calling thread while OpenBLAS's
worker spins; on a 2-vCPU VM that interleaving ran at half speed in about one
process in three (0.88 ms or 1.8 ms for the same 1024-row pass).  Splitting the
rows instead gives each core a whole forward pass over its part, with nothing
spinning: 0.80-0.86 ms, every run.

That needs OpenBLAS's ``openblas_set_num_threads_local`` (0.3.27+, what numpy's
wheels bundle), which limits only the calling thread.  Without it, or on one
core, :func:`splitter` returns None and callers run the batch in one piece.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import Any

_splitter: RowSplitter | None = None
_probed = False
_probe_lock = threading.Lock()


def _find_set_local() -> Any:
    """``openblas_set_num_threads_local`` from the OpenBLAS numpy has loaded."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            fn = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        return fn
    return None


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def splitter() -> RowSplitter | None:
    """The process's splitter (helper threads started on first use), or None."""
    global _splitter, _probed
    if not _probed:
        with _probe_lock:
            if not _probed:
                import numpy  # noqa: F401 - BLAS must be loaded before we look for it
                n = min(cores(), 8)
                set_local = _find_set_local() if n > 1 else None
                if set_local is not None:
                    _splitter = RowSplitter(n, set_local)
                _probed = True
    return _splitter


def _forget_in_child() -> None:
    """A forked child has none of the helper threads: probe again there."""
    global _splitter, _probed, _probe_lock
    _splitter, _probed, _probe_lock = None, False, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


class RowSplitter:
    """``run(fn)`` calls ``fn(0)`` in the caller and ``fn(1..n-1)`` in helper threads,
    all with single-threaded BLAS, and returns when all are done.  One batch at a
    time: a caller that finds it busy gets False and runs unsplit instead."""

    def __init__(self, parts: int, set_local: Callable[[int], int]) -> None:
        self.parts = parts
        self._set_local = set_local
        self._busy = threading.Lock()
        self._fn: Callable[[int], None] | None = None
        self._go = [threading.Event() for _ in range(parts)]
        self._done = [threading.Event() for _ in range(parts)]
        self._errors: list[BaseException | None] = [None] * parts
        for part in range(1, parts):
            threading.Thread(target=self._helper, args=(part,), name=f"neural-rows-{part}", daemon=True).start()

    def _helper(self, part: int) -> None:
        self._set_local(1)
        go, done = self._go[part], self._done[part]
        while True:
            go.wait()
            go.clear()
            try:
                self._fn(part)  # type: ignore[misc]
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self._errors[part] = exc
            done.set()

    def run(self, fn: Callable[[int], None]) -> bool:
        if not self._busy.acquire(blocking=False):
            return False
        try:
            self._fn = fn
            self._errors = [None] * self.parts
            for part in range(1, self.parts):
                self._go[part].set()
            previous = self._set_local(1)
            try:
                fn(0)
            finally:
                self._set_local(previous)
                for part in range(1, self.parts):
                    self._done[part].wait()
                    self._done[part].clear()
                self._fn = None
            for exc in self._errors:
                if exc is not None:
                    raise exc
            return True
        finally:
            self._busy.release()
