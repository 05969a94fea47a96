"""The bridge's link to the swarm, and the swarm's state as the IDE sees it.

States (docs/IDE.md):

- ``stopped``: no swarm under this home (no state file, or its launcher is gone);
- ``starting``: a launcher is up and its children are not all registered yet;
- ``ready``: the broker answers and every process the launcher named is alive;
- ``degraded``: the broker answers but a process is down (an agent restarting):
  requests are served, tasks of the missing agent's kinds wait; or the broker is alive
  and does not answer (hung): requests fail fast;
- ``restarting``: the launcher is up and the broker process is gone: it is being
  restarted.

The link looks every ``poll`` seconds (a state file read and one STATUS).  On every
change it tells its listener (the servers send ``swarm.state`` notifications), and
when the broker stops answering, requests waiting on it are failed at once with
SWARM_UNAVAILABLE: nothing hangs on a swarm that went away.  A new client connection
is made each time it becomes ready again, so no state of the old broker lingers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from bus.aclient import AsyncClient
from bus.errors import BusError
from launcher.supervisor import pid_alive, read_state

from .errors import unavailable

log = logging.getLogger("orchflow.bridge")

READY, STOPPED, STARTING, DEGRADED, RESTARTING = "ready", "stopped", "starting", "degraded", "restarting"
STATES = (STARTING, READY, DEGRADED, RESTARTING, STOPPED)


class SwarmLink:
    def __init__(self, home: Path, on_state: Callable[[str, dict[str, Any]], None] | None = None,
                 poll: float = 0.5, project: str = "default") -> None:
        self.home = Path(home)
        self.poll = poll
        self.project = project
        self.state = STOPPED
        self.why = "not looked yet"
        self.client: AsyncClient | None = None
        self.broker_up = False  # the broker answered the last probe
        self.endpoints: dict[str, str] = {}
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = [on_state] if on_state else []
        self._waiting: set[asyncio.Task] = set()
        self._changed = asyncio.Event()

    def listen(self, fn: Callable[[str, dict[str, Any]], None]) -> None:
        self._listeners.append(fn)

    def unlisten(self, fn: Callable[[str, dict[str, Any]], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def info(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.why, "home": str(self.home),
                "endpoint": self.endpoints.get("frontend")}

    # ------------------------------------------------------------------ for methods

    def require(self) -> AsyncClient:
        """The client, if the swarm is ready; SWARM_UNAVAILABLE (fast) otherwise."""
        if not self.broker_up or self.client is None:
            raise unavailable(self.state, self.why)
        return self.client

    async def guarded(self, coro: Any) -> Any:
        """Run a request's work; if the swarm leaves ``ready`` meanwhile, it is cancelled
        and fails with SWARM_UNAVAILABLE instead of waiting for a broker that is gone."""
        task = asyncio.ensure_future(coro)
        self._waiting.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            if task.cancelled() and not self.broker_up:
                raise unavailable(self.state, "it went away while the request waited") from None
            raise
        finally:
            self._waiting.discard(task)

    async def wait_for(self, states: tuple[str, ...], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.state not in states:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, self.poll))
            except asyncio.TimeoutError:
                pass
        return True

    # ------------------------------------------------------------------ the watch

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.poll)

    async def check(self) -> None:
        state, why, up = await self._look()
        if up and not self.broker_up:
            await self._reconnect()
        if not up and self.broker_up:
            for task in list(self._waiting):
                task.cancel()
        self.broker_up = up
        if state != self.state:
            old, self.state, self.why = self.state, state, why
            log.info("swarm %s -> %s (%s)", old, state, why)
            self._changed.set()
            for fn in list(self._listeners):
                try:
                    fn(state, self.info())
                except Exception:  # noqa: BLE001 - a listener's bug must not stop the watch
                    log.exception("swarm state listener failed")
        else:
            self.why = why

    async def _look(self) -> tuple[str, str, bool]:
        state = read_state(self.home)
        if not state or not pid_alive(state.get("launcher_pid")):
            return STOPPED, "no swarm under " + str(self.home), False
        if not state.get("ready"):
            return STARTING, "its processes are starting", False
        pids = state.get("pids") or {}
        if not pid_alive(pids.get("broker")):
            return RESTARTING, "the broker is being restarted", False
        self.endpoints = state.get("endpoints") or {}
        probe = self.client or self._new_client()
        try:
            await probe.status(timeout=max(0.5, self.poll))
        except (BusError, OSError) as exc:
            if probe is not self.client:
                await probe.close()
            return DEGRADED, f"the broker does not answer ({exc})", False
        if probe is not self.client:
            await probe.close()
        down = sorted(name for name, pid in pids.items() if not pid_alive(pid))
        if down:
            return DEGRADED, f"restarting: {', '.join(down)}", True
        return READY, "every process is up", True

    def _new_client(self) -> AsyncClient:
        return AsyncClient(self.endpoints.get("frontend"), events=self.endpoints.get("events"), project=self.project)

    async def _reconnect(self) -> None:
        if self.client is not None:
            await self.client.close()
        self.client = self._new_client()

    async def close(self) -> None:
        for task in list(self._waiting):
            task.cancel()
        if self.client is not None:
            await self.client.close()
            self.client = None


def launcher_alive(home: Path) -> bool:
    """A launcher runs under ``home`` (its swarm may be starting or restarting): start no second one."""
    state = read_state(Path(home))
    return bool(state) and pid_alive(state.get("launcher_pid"))


def launch_detached(home: Path, extra: list[str] | None = None) -> int:
    """``orchflow-launch --detach``: returns its exit code once the swarm is ready (0) or failed."""
    import subprocess
    import sys
    env = dict(os.environ, ORCHFLOW_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "launcher.orchflow_launch", "--detach", *(extra or [])], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                          timeout=60).returncode
