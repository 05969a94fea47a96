"""Start swarm processes and make sure they end: used by the launcher, tests and benches.

Every child is tracked by PID and killed (TERM, then KILL) when the group closes,
so a failing test or an interrupted benchmark never leaves processes behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from bus.client import Client
from bus.endpoints import Endpoints
from bus.errors import BusError
from bus.lifeline import PARENT_ENV


def free_tcp_block(host: str = "127.0.0.1", tries: int = 50) -> int:
    """A free port whose next two are free too: ``--tcp HOST:PORT`` binds PORT..PORT+2.
    For tests and benchmarks that start a broker on loopback."""
    import socket
    for _ in range(tries):
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port > 65000:
            continue
        try:
            for p in (port + 1, port + 2):
                with socket.socket() as t:
                    t.bind((host, p))
            return port
        except OSError:
            continue
    raise RuntimeError("no block of three free ports")


class ProcessGroup:
    def __init__(self, run_dir: str | os.PathLike, log_dir: str | os.PathLike | None = None,
                 lifeline: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.log_dir = Path(log_dir) if log_dir else self.run_dir
        self.endpoints = Endpoints.in_directory(str(self.run_dir))
        self.procs: dict[str, subprocess.Popen] = {}
        # Children die with us (bus/lifeline.py).  Only for groups spawning from one
        # long-lived thread: the kernel's parent-death signal follows the spawning thread.
        self.lifeline = lifeline

    def spawn(self, name: str, args: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        fd = os.open(self.log_dir / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        log = os.fdopen(fd, "ab")
        full_env = dict(os.environ)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        if self.lifeline:
            full_env[PARENT_ENV] = str(os.getpid())
        else:
            full_env.pop(PARENT_ENV, None)
        if env:
            full_env.update(env)
        proc = subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=full_env, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def broker(self, name: str = "broker", journal: str | None = None, heartbeat: float = 1.0,
               sync: bool = True, wait: bool = True, tcp: str | None = None, keys_home: str | None = None,
               memory: str | None = None, learned_routing: bool = False,
               result_ttl: float | None = None, unserved_grace: float | None = None,
               metrics: str | None = None, record_outcomes: bool = False) -> subprocess.Popen:
        args = ["-m", "bus", "--run-dir", str(self.run_dir), "--heartbeat", str(heartbeat)]
        if result_ttl is not None:
            args += ["--result-ttl", str(result_ttl)]
        if unserved_grace is not None:
            args += ["--unserved-grace", str(unserved_grace)]
        if memory:
            args += ["--memory", memory]
        if metrics:
            args += ["--metrics", metrics]
        if learned_routing:
            args += ["--learned-routing"]
        if record_outcomes:
            args += ["--record-outcomes"]
        if tcp:
            args += ["--tcp", tcp]
        if keys_home:
            args += ["--keys-home", keys_home]
        if journal:
            args += ["--journal", journal, "--durable", "sync" if sync else "nosync"]
        proc = self.spawn(name, args)
        if wait:
            self.wait_broker(proc)
        return proc

    def agent(self, name: str, capacity: int = 1, kinds: str | None = None,
              heartbeat: float = 1.0, module: str = "agents", extra: Sequence[str] = ()) -> subprocess.Popen:
        args = ["-m", module, "--endpoint", self.endpoints.backend, "--name", name,
                "--capacity", str(capacity), "--heartbeat", str(heartbeat), *extra]
        if kinds:
            args += ["--kinds", kinds]
        return self.spawn(name, args)

    def wait_broker(self, proc: subprocess.Popen | None = None, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"broker exited with {proc.returncode}; see {self.log_dir}/broker.log")
            try:
                with Client(self.endpoints.frontend, ack_timeout=0.5) as c:
                    c.status()
                return
            except BusError:
                time.sleep(0.05)
        raise TimeoutError("broker did not answer STATUS")

    def wait_agents(self, count: int, timeout: float = 15.0) -> dict:
        """Block until ``count`` agents are registered with the broker."""
        deadline = time.monotonic() + timeout
        with Client(self.endpoints.frontend) as c:
            while time.monotonic() < deadline:
                status = c.status()
                if len(status["agents"]) >= count:
                    return status
                time.sleep(0.05)
        raise TimeoutError(f"fewer than {count} agents registered within {timeout}s")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.kill(proc.pid, sig)
            proc.wait(10)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        self.procs.clear()

    def __enter__(self) -> "ProcessGroup":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
