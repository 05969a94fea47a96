"""The Supervisor: start the swarm, keep it running, stop it cleanly.

Children are restarted with exponential backoff when they die; a child that keeps
dying (more than ``max_restarts`` within ``flap_window`` seconds) is given up on
and reported, instead of burning CPU in a restart loop.  A state file in the run
directory tells clients where the swarm is and lets ``orchflow-launch stop`` find
the launcher.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import msgpack
import zmq

from bus.auth import KeyRing
from bus.client import Client
from bus.endpoints import Endpoints, TcpEndpoints
from bus.errors import BusError
from bus.events import EventPublisher

from .procs import ProcessGroup

log = logging.getLogger("orchflow.launcher")

VERSION = "0.1.0"


class LaunchError(Exception):
    pass


@dataclass
class Child:
    name: str
    start: Callable[[], object]
    restarts: list[float] = field(default_factory=list)
    backoff: float = 0.5
    given_up: bool = False
    unhealthy: int = 0          # consecutive failed health checks
    started: float = 0.0


@dataclass
class SwarmConfig:
    home: Path
    agents: int = 1        # one process of 8 threads: shell tasks mostly wait on their children
    agent_capacity: int = 8
    neural_workers: int = 1
    # "demand": the neural workers start with the first neural.* task (the broker says
    # kind.unserved); "eager": with the swarm.  Most swarms never train a network, and a
    # worker is numpy and 40 MiB of memory.
    neural_start: str = "demand"
    # Route by a model the neural pool learns from an outcome record per task. Opt-in: it
    # costs the broker ~14 µs per task and pays off only when agents differ in speed.
    learned_routing: bool = False
    tcp: str | None = None  # "HOST:PORT" where remote agents may connect
    heartbeat: float = 1.0
    result_ttl: float = 3600.0     # finished tasks (and dead letters) kept this long
    unserved_grace: float | None = None  # fail tasks of a kind no agent served this long (None: wait)
    max_restarts: int = 5
    flap_window: float = 60.0
    health_interval: float = 2.0   # how often the broker is asked who is registered
    health_failures: int = 3       # consecutive failures before a live but unhealthy child is restarted
    verify_stores: bool = True     # refuse to start on a damaged memory or journal
    metrics: str | None = None     # HOST:PORT where the broker serves Prometheus metrics

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "state.json"


def pid_alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped by its parent) is not."""
    try:
        os.kill(pid, 0)
    except (OSError, TypeError):
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_state(home: Path) -> dict | None:
    try:
        return json.loads((home / "run" / "state.json").read_text())
    except (OSError, ValueError):
        return None


#: What each kind of child runs as: ``python -m MODULE``.  Used to tell a pid from
#: the state file that is still one of ours from a pid the system has reused.
CHILD_MODULES = ("bus", "agents", "neural.pool")


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def is_our_child(pid: int, run_dir: Path) -> bool:
    """True if ``pid`` is alive and is a swarm process of the swarm in ``run_dir``."""
    if not isinstance(pid, int) or not pid_alive(pid):
        return False
    args = cmdline(pid)
    if "-m" not in args or args[args.index("-m") + 1:args.index("-m") + 2] == []:
        return False
    module = args[args.index("-m") + 1]
    return module in CHILD_MODULES and any(str(run_dir) in a for a in args)


def leftover_children(home: Path) -> dict[str, int]:
    """Swarm processes the state file names that are alive although their launcher is
    not (it was killed with SIGKILL before bus/lifeline.py existed, or is mid-crash)."""
    state = read_state(home)
    if not state or pid_alive(state.get("launcher_pid")):
        return {}
    run_dir = Path(state.get("home", home)) / "run"
    return {name: pid for name, pid in (state.get("pids") or {}).items() if is_our_child(pid, run_dir)}


def kill_children(pids: dict[str, int], grace: float = 10.0) -> None:
    """TERM, then KILL after ``grace`` seconds, the given processes (not our children:
    we cannot wait() for them, so we poll)."""
    for pid in pids.values():
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids.values()):
        time.sleep(0.1)
    for pid in pids.values():
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def check_stores(home: Path) -> None:
    """LaunchError if the memory or the journal is damaged: starting on it would spread
    the damage (and LMDB may abort the processes that read it)."""
    from store.verify import verify
    for name in ("memory", "journal"):
        path = home / name
        if not (path / "data.mdb").exists():
            continue
        report = verify(str(path))
        if not report.ok:
            problems = "; ".join(report.problems[:3]) or f"{len(report.damaged_keys)} damaged entries"
            raise LaunchError(f"the {name} store at {path} is damaged ({problems}). "
                              f"See what is damaged with: orchflow memory verify {path}; "
                              f"copy what is readable with: orchflow memory salvage {path} NEW_DIR")


def swarm_running(home: Path) -> dict | None:
    """The state of a live swarm under ``home``, or None (a stale state file counts as none)."""
    state = read_state(home)
    if not state:
        return None
    if not pid_alive(state.get("launcher_pid")):
        return None
    try:
        with Client(state["endpoints"]["frontend"], ack_timeout=1.0) as c:
            c.status()
    except BusError:
        return None
    return state


class Supervisor:
    def __init__(self, config: SwarmConfig) -> None:
        self.config = config
        (config.home / "logs").mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(config.home / "logs", 0o700)  # logs may name tasks and hosts: owner only
        self.group = ProcessGroup(config.run_dir, log_dir=config.home / "logs", lifeline=True)
        self.endpoints: Endpoints = self.group.endpoints
        self.children: dict[str, Child] = {}
        self.ready = False  # in the state file: every child started and registered
        self._stop = threading.Event()
        self._outbox: "queue.Queue[tuple[str, dict] | None]" = queue.Queue()
        self._publisher = threading.Thread(target=self._publish_loop, name="supervisor-events", daemon=True)
        self._publisher.start()
        self._neural_wanted = threading.Event()  # set by the kind.unserved watcher or a health check
        self._neural_started = False

    def _publish(self, topic: str, body: dict) -> None:
        """Supervisor events (agent.restarted, agent.given_up) go through the broker's event proxy."""
        self._outbox.put((topic, body))

    def _publish_loop(self) -> None:
        """Publishes supervisor events off the supervision loop. They follow restarts, when
        subscribers may still be reconnecting (a restarted broker is a new proxy), so each
        event gets a fresh publisher (a proxy's XSUB sends its current subscriptions to a
        newly connected publisher; a long-lived one keeps stale state across broker
        restarts) and waits up to 5 s for a subscriber."""
        ctx = zmq.Context.instance()
        while (item := self._outbox.get()) is not None:
            topic, body = item
            events = EventPublisher(ctx, self.endpoints.events_in)
            try:
                if events.wait_for_subscriber(topic, 5.0):
                    events.publish(topic, body)
            finally:
                events.close(linger=1000)  # deliver before the socket goes

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        cfg = self.config
        if swarm_running(cfg.home):
            raise LaunchError(f"a swarm is already running under {cfg.home} (see {cfg.state_file}); "
                              f"stop it with: orchflow-launch stop")
        leftover = leftover_children(cfg.home)
        if leftover:
            raise LaunchError(f"processes of an earlier swarm under {cfg.home} are still running "
                              f"({', '.join(f'{n} pid {p}' for n, p in leftover.items())}); "
                              f"stop them with: orchflow-launch stop")
        if cfg.verify_stores:
            check_stores(cfg.home)
        os.chmod(cfg.run_dir, 0o700)
        journal = str(cfg.home / "journal")
        memory = str(cfg.home / "memory")
        # Learned routing needs the neural pool to train its model; until then it is least-loaded.
        learned = cfg.learned_routing and cfg.neural_workers > 0
        if cfg.tcp:  # the broker's certificate exists before anyone needs its public key
            KeyRing(cfg.home).create_broker()
        self._add("broker", lambda: self.group.broker(journal=journal, heartbeat=cfg.heartbeat, tcp=cfg.tcp,
                                                       keys_home=str(cfg.home), memory=memory,
                                                       learned_routing=learned, result_ttl=cfg.result_ttl,
                                                       unserved_grace=cfg.unserved_grace, metrics=cfg.metrics))
        # The built-in agents also serve memory.* (LMDB is safe across processes);
        # agent0 alone publishes the change feed, so each change is announced once.
        for i in range(cfg.agents):
            extra = ["--memory", memory] + (["--events-in", self.endpoints.events_in] if i == 0 else [])
            self._add(f"agent{i}", lambda i=i, extra=extra: self.group.agent(
                f"agent{i}", capacity=cfg.agent_capacity, heartbeat=cfg.heartbeat, extra=extra))
        eager = cfg.neural_start == "eager"
        if eager:
            self._start_neural()
        elif cfg.neural_workers:
            threading.Thread(target=self._watch_unserved, name="neural-on-demand", daemon=True).start()
        self.group.wait_agents(cfg.agents + (cfg.neural_workers if eager else 0))
        self.ready = True
        log.info("swarm ready under %s: %s", cfg.home,
                 ", ".join(f"{name} pid {proc.pid}" for name, proc in self.group.procs.items()))
        self._write_state()

    def _start_neural(self) -> None:
        """The neural pool's workers: with the swarm, or on the first neural.* task."""
        if self._neural_started:
            return
        self._neural_started = True
        cfg, memory = self.config, str(self.config.home / "memory")
        for i in range(cfg.neural_workers):
            self._add(f"neural{i}", lambda i=i: self.group.agent(
                f"neural{i}", capacity=256, module="neural.pool", heartbeat=cfg.heartbeat,
                extra=["--memory", memory]))
        if self.ready:
            log.info("neural workers started on demand: %s", ", ".join(
                f"neural{i} pid {self.group.procs[f'neural{i}'].pid}" for i in range(cfg.neural_workers)))

    def _watch_unserved(self) -> None:
        """Listen for kind.unserved: a neural.* task nobody serves starts the workers.
        The supervision loop starts them (children are spawned from one thread)."""
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.linger = 0
        sub.setsockopt(zmq.SUBSCRIBE, b"kind.unserved")
        sub.connect(self.endpoints.events)
        try:
            while not self._stop.is_set() and not self._neural_wanted.is_set():
                if not sub.poll(200):
                    continue
                frames = sub.recv_multipart()
                try:
                    kind = msgpack.unpackb(frames[-1], raw=False).get("kind", "")
                except Exception:  # noqa: BLE001 - not an event of ours
                    continue
                if isinstance(kind, str) and kind.startswith("neural."):
                    self._neural_wanted.set()
        finally:
            sub.close()

    def _tcp_endpoints(self) -> dict[str, str | None]:
        tcp = TcpEndpoints.at(self.config.tcp) if self.config.tcp else None
        return {"frontend_tcp": tcp and tcp.frontend, "backend_tcp": tcp and tcp.backend,
                "events_tcp": tcp and tcp.events}

    def _add(self, name: str, start: Callable[[], object]) -> None:
        self.children[name] = Child(name, start, started=time.monotonic())
        start()
        self._write_state()  # at once: a launcher killed mid-start still names its children

    def _write_state(self) -> None:
        state = {"version": VERSION, "launcher_pid": os.getpid(), "started": time.time(), "ready": self.ready,
                 "home": str(self.config.home),
                 "endpoints": {"frontend": self.endpoints.frontend, "backend": self.endpoints.backend,
                               "events_in": self.endpoints.events_in, "events": self.endpoints.events,
                               **self._tcp_endpoints()},
                 "pids": {name: proc.pid for name, proc in self.group.procs.items()}}
        if self.config.neural_workers and not self._neural_started:  # orchflow kinds lists them
            from neural.kinds import PAYLOAD_FIELDS
            state["on_demand"] = sorted(PAYLOAD_FIELDS)
        tmp = self.config.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(state, indent=2))
        os.replace(tmp, self.config.state_file)  # readers never see half a file

    # ------------------------------------------------------------------ supervise

    def supervise(self, until: Callable[[], bool] | None = None, poll: float = 0.2) -> None:
        """Restart dead or hung children until stopped (or ``until()`` is true)."""
        next_health = time.monotonic() + self.config.health_interval
        while not self._stop.is_set() and not (until and until()):
            if self._neural_wanted.is_set() and not self._neural_started:
                self._start_neural()
            for child in list(self.children.values()):
                proc = self.group.procs.get(child.name)
                if child.given_up or proc is None or proc.poll() is None:
                    continue
                self._restart(child, proc.returncode)
            if time.monotonic() >= next_health:
                self._health_check()
                next_health = time.monotonic() + self.config.health_interval
            self._stop.wait(poll)

    def _health_check(self) -> None:
        """A live process is not necessarily a working one: ask the broker.

        The broker must answer STATUS; each agent child must be registered with it
        (the broker drops agents whose heartbeats stop).  A child failing
        ``health_failures`` checks in a row is killed and restarted like a crashed one.
        """
        try:
            with Client(self.endpoints.frontend, ack_timeout=1.0) as c:
                status = c.status()
            registered = {a["name"] for a in status["agents"]}
            broker_ok = True
            if any(kind.startswith("neural.") for kind in status.get("unserved", {})):
                self._neural_wanted.set()  # e.g. replayed after a restart, before anyone listened
        except BusError:
            registered, broker_ok = set(), False
        grace = self.config.health_interval * self.config.health_failures
        for child in self.children.values():
            proc = self.group.procs.get(child.name)
            if child.given_up or proc is None or proc.poll() is not None:
                continue
            if child.name == "broker":
                healthy = broker_ok
            else:  # an agent is judged only while the broker itself answers
                healthy = not broker_ok or child.name in registered or time.monotonic() - child.started < grace
            child.unhealthy = 0 if healthy else child.unhealthy + 1
            if child.unhealthy >= self.config.health_failures:
                log.warning("%s is alive but failed %d health checks: killing it to restart", child.name,
                            child.unhealthy)
                child.unhealthy = 0
                self.group.kill(child.name)  # SIGKILL; the next supervise turn restarts it

    def _restart(self, child: Child, code: int | None) -> None:
        now = time.monotonic()
        child.restarts = [t for t in child.restarts if now - t < self.config.flap_window]
        if len(child.restarts) >= self.config.max_restarts:
            child.given_up = True
            log.error("%s exited (%s) %d times in %.0fs: giving up on it", child.name, code,
                      len(child.restarts) + 1, self.config.flap_window)
            self._publish("agent.given_up", {"name": child.name, "exit_code": code,
                                             "restarts": len(child.restarts)})
            return
        delay = child.backoff * (2 ** len(child.restarts))
        log.warning("%s exited with %s; restarting in %.1fs", child.name, code, delay)
        if self._stop.wait(delay):
            return
        child.restarts.append(time.monotonic())
        child.started = time.monotonic()
        try:
            proc = child.start()
        except Exception as exc:  # noqa: BLE001 - e.g. a broker that exits at once: count it, keep supervising
            log.error("%s did not restart: %s", child.name, exc)
            return
        self._write_state()
        self._publish("agent.restarted", {"name": child.name, "exit_code": code, "restarts": len(child.restarts),
                                          "pid": getattr(proc, "pid", None), "ts": time.time()})

    # ------------------------------------------------------------------ stop

    def request_stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.request_stop())

    def shutdown(self) -> None:
        """Drain agents first (they finish running work), then stop the broker."""
        log.info("stopping the swarm: draining %d agents, then the broker", len(self.group.procs) - 1)
        for name, proc in list(self.group.procs.items()):
            if name != "broker" and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in list(self.group.procs.items()):
            if name != "broker":
                try:
                    proc.wait(30)
                except Exception:
                    proc.kill()
        self._outbox.put(None)
        self._publisher.join(6)
        self.group.close()
        try:
            self.config.state_file.unlink()
        except FileNotFoundError:
            pass
        log.info("swarm stopped")
