"""Heartbeats for an agent whose loop is busy inside a handler.

Handlers that run on the agent's loop (``inline=True``, batch handlers, and plain
handlers the agent moved there for being quick: ``agents/placement.py``) stop the loop
while they run.  One that blocks for longer than the broker's liveness window would
get the agent declared lost and its tasks run a second time elsewhere.  This thread
notices a loop run older than one heartbeat interval and, holding the socket the loop
has let go of, does what the loop would: takes in the broker's messages (kept for the
loop, in order) and sends the HEARTBEAT that lists what the agent holds.

The socket changes hands through one lock: the loop holds it at all times except
while a handler runs on it, so the two threads never touch the socket together
(ZeroMQ sockets may move between threads across a full memory barrier, which the
lock gives).  Letting go and taking back cost the loop two uncontended lock calls.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger("orchflow.agent")


class LoopWatchdog:
    def __init__(self, interval: float, beat: Callable[[float], None], name: str = "agent") -> None:
        """``beat(since)`` runs on the watchdog thread, with the socket lock held, once a
        run on the loop (started at monotonic ``since``) is older than ``interval``, and
        again every ``interval / 2`` while it lasts."""
        self.lock = threading.Lock()
        self._interval = interval
        self._beat = beat
        self._since: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"{name}-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def leave(self) -> float:
        """The loop is about to run a handler: let go of the socket.  Returns the time."""
        self._since = now = time.monotonic()
        self.lock.release()
        return now

    def back(self) -> float:
        """The handler returned: the loop takes the socket back.  Returns the time."""
        self.lock.acquire()
        self._since = None
        return time.monotonic()

    def _watch(self) -> None:
        while not self._stop.wait(self._interval / 2):
            since = self._since
            if since is None or time.monotonic() - since < self._interval:
                continue
            if self.lock.acquire(blocking=False):  # fails only if the loop just took it back
                try:
                    if self._since is not None:
                        self._beat(self._since)
                except Exception:  # noqa: BLE001 - a failed beat must not end the watchdog
                    log.exception("watchdog: could not heartbeat for the busy loop")
                finally:
                    self.lock.release()
