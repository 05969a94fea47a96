"""Shared fixtures: real broker and agent processes on ipc endpoints in a temp dir.

ipc paths are limited to ~107 bytes, so the run directory is a short mkdtemp
under /tmp rather than pytest's deep tmp_path.  Every process is killed by PID at
teardown, pass or fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from launcher.procs import ProcessGroup  # noqa: E402


@pytest.fixture
def run_dir():
    path = tempfile.mkdtemp(prefix="of-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def procs(run_dir):
    group = ProcessGroup(os.path.join(run_dir, "run"))
    try:
        yield group
    finally:
        group.close()


@pytest.fixture
def swarm(procs):
    """A broker (in-memory journal) with no agents yet; tests add what they need."""
    procs.broker()
    return procs


@contextlib.contextmanager
def launched_swarm(*args: str, env_extra: dict[str, str] | None = None):
    """``orchflow-launch ARGS`` in the foreground in a fresh home, as a person starts it;
    yields (env, home, state) once ready.  Every process is killed by PID at the end."""
    import json
    import signal
    import subprocess
    import time

    from launcher.supervisor import pid_alive

    home = tempfile.mkdtemp(prefix="of-sw-")
    env = dict(os.environ, ORCHFLOW_HOME=home, **(env_extra or {}))
    proc = subprocess.Popen(["orchflow-launch", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    state_file = os.path.join(home, "run", "state.json")
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 30
        while not (os.path.exists(state_file) and json.load(open(state_file)).get("ready")):
            assert time.monotonic() < deadline and proc.poll() is None, "the swarm did not start"
            time.sleep(0.1)
        yield env, home, json.load(open(state_file))
    finally:
        try:
            seen.update(json.load(open(state_file))["pids"].values())
        except (OSError, ValueError, KeyError):
            pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        for pid in seen:  # nothing left behind, pass or fail
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)
