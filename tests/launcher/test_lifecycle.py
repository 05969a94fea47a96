"""The launcher's process lifecycle under abuse (issue #11): children die with it, a dead
launcher's processes are found and stopped, files are the owner's, a child that
cannot restart does not end supervision, damaged stores are refused by name."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.procs import ProcessGroup
from launcher.supervisor import Child, Supervisor, SwarmConfig, pid_alive
from store import Memory
from store import env as E

LAUNCH = [sys.executable, "-m", "launcher.orchflow_launch"]
CLI = [sys.executable, "-m", "launcher.orchflow"]


def run(args: list[str], home: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=dict(os.environ, ORCHFLOW_HOME=home), capture_output=True, text=True,
                          timeout=timeout)


def processes_naming(text: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read() and pid_alive(int(entry)):
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


@pytest.fixture
def home(run_dir):
    path = os.path.join(run_dir, "home")
    try:
        yield path
    finally:
        for pid in processes_naming(path):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def launch(home: str) -> subprocess.Popen:
    proc = subprocess.Popen([*LAUNCH, "--home", home, "--agents", "1", "--neural-workers", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if run([*LAUNCH, "status", "--home", home], home).returncode == 0:
            return proc
        assert proc.poll() is None, "the launcher exited"
        time.sleep(0.3)
    raise AssertionError("the swarm did not start")


def test_children_die_with_a_killed_launcher_and_files_are_private(home):
    proc = launch(home)
    try:
        children = json.loads(Path(home, "run", "state.json").read_text())["pids"]
        assert len(children) == 2
        for path in [Path(home, "logs"), Path(home, "run")]:
            assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
        for path in [Path(home, "run", "state.json"), *Path(home, "logs").iterdir()]:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in children.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(pid_alive(p) for p in children.values()), "children outlived the launcher"
        assert processes_naming(home) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_stop_and_status_find_what_a_dead_launchers_state_file_names(home):
    """Processes of a launcher that died without them (a broker started without the
    lifeline stands in): status says so (exit 3), start refuses, stop ends them."""
    run_dir = os.path.join(home, "run")
    group = ProcessGroup(run_dir)  # no lifeline: they survive us, as orphans did
    try:
        broker = group.broker()
        dead = subprocess.Popen(["true"])
        dead.wait()
        Path(run_dir, "state.json").write_text(json.dumps({
            "launcher_pid": dead.pid, "home": home, "pids": {"broker": broker.pid, "reused": os.getpid()},
            "endpoints": {"frontend": group.endpoints.frontend}}))
        status = run([*LAUNCH, "status", "--home", home], home)
        assert status.returncode == 3 and f"broker (pid {broker.pid})" in status.stdout
        assert "reused" not in status.stdout  # a live pid that is not ours is left alone
        start = run([*LAUNCH, "--home", home, "--agents", "1", "--neural-workers", "0"], home)
        assert start.returncode == 2 and "orchflow-launch stop" in start.stderr
        stop = run([*LAUNCH, "stop", "--home", home], home)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        broker.wait(15)
        assert run([*LAUNCH, "status", "--home", home], home).returncode == 1
    finally:
        group.close()


def test_a_child_whose_restart_raises_does_not_end_supervision(home):
    sup = Supervisor(SwarmConfig(home=Path(home), max_restarts=2, flap_window=60))
    try:
        attempts = []

        def start():
            attempts.append(time.monotonic())
            sup.group.spawn("flaky", ["-c", "raise SystemExit(3)"]).wait()
            raise RuntimeError("broker exited with 3")

        child = Child("flaky", start, backoff=0.01)
        sup.children["flaky"] = child
        sup.group.spawn("flaky", ["-c", "raise SystemExit(3)"]).wait()
        deadline = time.monotonic() + 20
        sup.supervise(until=lambda: child.given_up or time.monotonic() > deadline, poll=0.01)
        assert child.given_up and len(attempts) == 2
    finally:
        sup.shutdown()


def _damage(path: str) -> None:
    data_path = os.path.join(path, "data.mdb")
    blob = bytearray(open(data_path, "rb").read())
    page = 4096
    used = [n for n in range(4, len(blob) // page) if any(blob[n * page:(n + 1) * page])]
    victim = used[len(used) // 2]
    blob[victim * page:(victim + 1) * page] = bytes(page)
    open(data_path, "wb").write(bytes(blob))


def test_a_damaged_memory_is_refused_and_the_cli_verifies_and_salvages_it(home):
    memory = os.path.join(home, "memory")
    Memory(memory).put_many("ns", [(f"k{i:05d}", {"i": i, "pad": "p" * 100}) for i in range(5000)])
    E.close_env(memory)
    clean = run([*CLI, "memory", "verify", memory, "--home", home], home)
    assert clean.returncode == 0 and "ok" in clean.stdout
    _damage(memory)
    start = run([*LAUNCH, "--home", home, "--agents", "1", "--neural-workers", "0"], home)
    assert start.returncode == 2
    assert "damaged" in start.stderr and "orchflow memory verify" in start.stderr
    assert processes_naming(home) == []
    verify = run([*CLI, "memory", "verify", "--home", home], home)  # the home's memory by default
    assert verify.returncode == 1
    saved = os.path.join(home, "saved")
    salvage = run([*CLI, "memory", "salvage", memory, saved, "--json", "--home", home], home)
    assert salvage.returncode == 0, salvage.stderr
    assert json.loads(salvage.stdout)["copied"] >= 4000
    assert run([*CLI, "memory", "verify", saved, "--home", home], home).returncode == 0
    missing = run([*CLI, "memory", "verify", os.path.join(home, "nothing"), "--home", home], home)
    assert missing.returncode == 2 and "no store" in missing.stderr
