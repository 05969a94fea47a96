"""Chaos: rounds of kill -9 of the broker, an agent, the neural worker or the launcher
itself, at random moments, while tasks are submitted and the memory is written.

After every round the swarm is whole again (the launcher restarts children; a killed
launcher is started again with one command, and first nothing of the old swarm may
be left running).  At the end, every acknowledged task has finished with its own
result and every acknowledged memory write reads back, the stores have grown through
at least three map doublings (a 256 KiB first map) while processes kept opening them,
and ``mdb_stat`` from lmdb-utils reads both files cleanly.

``ORCHFLOW_CHAOS_ROUNDS`` sets the rounds (default 8; the #11 closing note reports a
longer run).  ``ORCHFLOW_CHAOS_SEED`` replays a run.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from bus import Client
from bus.errors import BusError
from launcher.supervisor import pid_alive, read_state, swarm_running
from store import Memory

ROUNDS = int(os.environ.get("ORCHFLOW_CHAOS_ROUNDS", "8"))
SEED = int(os.environ.get("ORCHFLOW_CHAOS_SEED", str(random.randrange(1 << 30))))
FIRST_MAP = 256 * 1024
VICTIMS = ["broker", "agent0", "agent1", "neural0", "launcher"]
MDB_STAT = shutil.which("mdb_stat")


def processes_of(home: str) -> list[int]:
    """Every live process whose command line names ``home``: the swarm's, by construction."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if any(home.encode() in a for a in args) and pid_alive(int(entry)):
            out.append(int(entry))
    return out


class Swarm:
    def __init__(self, home: str) -> None:
        self.home = home
        self.env = dict(os.environ, ORCHFLOW_HOME=home, ORCHFLOW_MAP_SIZE=str(FIRST_MAP))
        self.launcher: subprocess.Popen | None = None
        self.launches = 0

    def start(self) -> None:
        """The one command a person would run."""
        log = open(os.path.join(self.home, f"launcher-{self.launches}.out"), "wb")
        self.launcher = subprocess.Popen([sys.executable, "-m", "launcher.orchflow_launch", "--home", self.home, "--agents", "2",
                                          "--neural-start", "eager"],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, start_new_session=True)
        log.close()
        self.launches += 1
        self.wait_whole()

    def wait_whole(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.launcher.poll() is not None:
                out = Path(self.home, f"launcher-{self.launches - 1}.out").read_text(errors="replace")
                raise AssertionError(f"the launcher exited with {self.launcher.returncode}:\n{out[-3000:]}")
            state = swarm_running(Path(self.home))
            if state:
                try:
                    with Client(state["endpoints"]["frontend"], ack_timeout=1) as c:
                        names = {a["name"] for a in c.status()["agents"]}
                    if {"agent0", "agent1", "neural0"} <= names:
                        return
                except BusError:
                    pass
            time.sleep(0.2)
        raise AssertionError(f"the swarm was not whole again within {timeout}s")

    def pid(self, name: str) -> int:
        if name == "launcher":
            return self.launcher.pid
        return read_state(Path(self.home))["pids"][name]

    def cleanup(self) -> None:
        if self.launcher is not None and self.launcher.poll() is None:
            self.launcher.send_signal(signal.SIGTERM)
            try:
                self.launcher.wait(40)
            except subprocess.TimeoutExpired:
                self.launcher.kill()
        for pid in processes_of(self.home):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def submit_load(swarm: Swarm, acked: dict[str, int], stop: threading.Event) -> None:
    frontend = f"ipc://{swarm.home}/run/frontend"
    i = 0
    while not stop.is_set():
        try:
            with Client(frontend, ack_timeout=2) as c:
                while not stop.is_set():
                    batch = {}
                    for _ in range(20):  # submit() returns at once; flush() says they are journaled
                        i += 1
                        batch[f"chaos-{i}"] = i
                        c.submit("sys.echo", {"i": i, "pad": "p" * 600}, task_id=f"chaos-{i}")
                    c.flush()
                    acked.update(batch)  # acknowledged: must finish, whatever is killed next
        except BusError:
            time.sleep(0.1)


def write_memory(home: str, acked: dict[str, str], stop: threading.Event) -> None:
    memory = Memory(os.path.join(home, "memory"))
    i = 0
    while not stop.is_set():
        i += 1
        value = f"{i}:" + "m" * 2000
        memory.put("chaos", f"k{i}", value)
        acked[f"k{i}"] = value
        if i % 50 == 0:
            time.sleep(0.01)


@pytest.mark.timeout(900)
def test_kill_anything_lose_nothing():
    rng = random.Random(SEED)
    home = tempfile.mkdtemp(prefix="of-ch-")
    swarm = Swarm(home)
    stop = threading.Event()
    acked_tasks: dict[str, int] = {}
    acked_memory: dict[str, str] = {}
    kills: dict[str, int] = {}
    try:
        swarm.start()
        load = [threading.Thread(target=submit_load, args=(swarm, acked_tasks, stop), daemon=True),
                threading.Thread(target=write_memory, args=(home, acked_memory, stop), daemon=True)]
        for t in load:
            t.start()
        cycle: list[str] = []
        for _ in range(ROUNDS):
            if not cycle:
                cycle = rng.sample(VICTIMS, len(VICTIMS))  # every kind, spread (the flap limit is per child)
            victim = cycle.pop()
            time.sleep(rng.uniform(0.3, 2.5))
            os.kill(swarm.pid(victim), signal.SIGKILL)
            kills[victim] = kills.get(victim, 0) + 1
            if victim == "launcher":
                swarm.launcher.wait(5)
                deadline = time.monotonic() + 15
                while processes_of(home) and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert processes_of(home) == [], "processes outlived their launcher"
                swarm.start()
            else:
                time.sleep(0.5)
                swarm.wait_whole()
        stop.set()
        for t in load:
            t.join(30)
        swarm.wait_whole()

        # Nothing acknowledged is gone.
        state = read_state(Path(home))
        with Client(state["endpoints"]["frontend"], ack_timeout=5) as c:
            ids = list(acked_tasks)
            outcomes = c.results(ids, timeout=240)
        lost = [o["id"] for o in outcomes if o["state"] != "done" or o["result"]["i"] != acked_tasks[o["id"]]]
        memory = Memory(os.path.join(home, "memory"))
        missing = [k for k, v in acked_memory.items() if memory.get("chaos", k) != v]
        print(f"\nchaos seed {SEED}: {ROUNDS} rounds, kills {kills}, launches {swarm.launches}; "
              f"{len(acked_tasks)} acked tasks, {len(lost)} lost; {len(acked_memory)} acked writes, "
              f"{len(missing)} missing")
        assert lost == [] and missing == []
        assert len(acked_tasks) > 100 and len(acked_memory) > 100

        swarm.launcher.send_signal(signal.SIGTERM)
        assert swarm.launcher.wait(60) == 0
        time.sleep(0.5)
        assert processes_of(home) == []
        for store in ("memory", "journal"):
            size = os.path.getsize(os.path.join(home, store, "data.mdb"))
            print(f"{store}: data.mdb {size / 2 ** 20:.1f} MiB = {size / FIRST_MAP:.0f} x the first map")
            assert size >= 8 * FIRST_MAP, f"{store} grew to {size} bytes: fewer than three doublings"
            if MDB_STAT:
                check = subprocess.run([MDB_STAT, "-a", os.path.join(home, store)], capture_output=True, text=True)
                assert check.returncode == 0, check.stderr
    finally:
        stop.set()
        swarm.cleanup()
        shutil.rmtree(home, ignore_errors=True)
    if not MDB_STAT:
        pytest.fail("mdb_stat (Debian lmdb-utils) is not installed: the stores were not checked independently")
