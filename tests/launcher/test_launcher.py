"""orchflow-launch and orchflow end to end, through the installed console scripts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from launcher.supervisor import pid_alive as alive


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def launched(run_dir):
    home = os.path.join(run_dir, "home")
    env = dict(os.environ, ORCHFLOW_HOME=home)
    proc = subprocess.Popen(["orchflow-launch", "--agents", "2", "--neural-start", "eager"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    state_file = os.path.join(home, "run", "state.json")
    try:
        wait_for(lambda: os.path.exists(state_file) and json.load(open(state_file)).get("ready"), 30,
                 "the state file of a ready swarm")
        yield env, proc, state_file
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        pids = json.load(open(state_file))["pids"].values() if os.path.exists(state_file) else []
        for pid in pids:  # leave nothing behind even if the test failed midway
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def orchflow(env, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["orchflow", "--json", *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_launch_use_restart_and_stop(launched):
    env, proc, state_file = launched
    state = json.load(open(state_file))
    assert set(state["pids"]) == {"broker", "agent0", "agent1", "neural0"}
    assert oct(os.stat(os.path.dirname(state_file)).st_mode & 0o777) == "0o700"

    second = subprocess.run(["orchflow-launch"], env=env, capture_output=True, text=True, timeout=30)
    assert second.returncode == 2 and "already running" in second.stderr

    out = orchflow(env, "submit", "sys.echo", "--payload", '{"hello": "ide"}', "--wait")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["result"] == {"hello": "ide"}

    assert orchflow(env, "--project", "p1", "memory", "put", "k", '"v"').returncode == 0
    got = orchflow(env, "--project", "p1", "memory", "get", "k")
    assert json.loads(got.stdout) == "v"
    other = orchflow(env, "--project", "p2", "memory", "get", "k", "--ns", "project:p1")
    assert other.returncode != 0 and "Forbidden" in other.stderr  # projects do not read each other

    # kill -9 the agent running a task: the task completes elsewhere, the launcher starts a new agent
    from bus import Client
    ep = state["endpoints"]
    with Client(ep["frontend"], events=ep["events"]) as c:
        sub = c.subscribe("task.started")
        time.sleep(0.5)
        task = c.submit("sys.sleep", 2.0)
        started = None
        while started is None:
            event = sub.recv(timeout=10)
            assert event is not None, "task.started never came"
            if event[1]["id"] == task:
                started = event[1]["agent"]
        victim = started
        old = state["pids"][victim]
        os.kill(old, signal.SIGKILL)
        outcome = c.outcome(task, timeout=30)
        assert outcome["state"] == "done" and outcome["attempts"] == 2
    wait_for(lambda: json.load(open(state_file))["pids"][victim] != old, 15, f"{victim} restarted")

    def replaced():  # the dead one declared lost (heartbeat) and the new one registered
        s = json.loads(orchflow(env, "status").stdout)
        return s if s["counters"]["agents_lost"] >= 1 and len(s["agents"]) == 3 else None

    status = wait_for(replaced, 15, "the dead agent lost and its replacement registered")
    assert sorted(a["name"] for a in status["agents"]) == ["agent0", "agent1", "neural0"]

    pids = list(json.load(open(state_file))["pids"].values())
    stop = subprocess.run(["orchflow-launch", "stop"], env=env, capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    proc.wait(30)
    assert not [p for p in pids if alive(p)]
    assert not os.path.exists(state_file)


def test_broker_and_neural_worker_killed_under_the_launcher(launched):
    """kill -9 of the broker: restarted, no acknowledged task lost; kill -9 of the
    neural worker mid-training: restarted, the training completes on the new one."""
    from bus import Client
    from neural import Network

    env, proc, state_file = launched
    state = json.load(open(state_file))
    ep = state["endpoints"]
    with Client(ep["frontend"], events=ep["events"], ack_timeout=10) as c:
        sub = c.subscribe("agent.restarted")
        ids = []
        for _ in range(4):
            ids += c.submit_many("sys.sleep", [0.02] * 50)   # acknowledged = journaled
        os.kill(state["pids"]["broker"], signal.SIGKILL)
        outcomes = c.results(ids, timeout=60)
        assert len(outcomes) == 200 and {o["state"] for o in outcomes} == {"done"}
        event = sub.recv(timeout=10)
        assert event is not None and event[0] == "agent.restarted" and event[1]["name"] == "broker"
        assert json.load(open(state_file))["pids"]["broker"] != state["pids"]["broker"]

        net = Network.create_standard(4, 8, 1, seed=2)
        c.call("neural.load", {"name": "slow", "fann": net.dumps()}, timeout=20)
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, (400, 4))
        data = {"inputs": x.tolist(), "outputs": np.tanh(x.sum(axis=1, keepdims=True)).tolist()}
        task = c.submit("neural.train", {"name": "slow", "algorithm": "incremental", "max_epochs": 300,
                                         "data": data, "report_every": 1000})
        time.sleep(1.0)
        assert c.status([task])["tasks"][task] == "running"
        neural_pid = json.load(open(state_file))["pids"]["neural0"]
        os.kill(neural_pid, signal.SIGKILL)
        outcome = c.outcome(task, timeout=120)
        assert outcome["state"] == "done" and outcome["attempts"] == 2
        assert outcome["result"]["version"] == 2
        assert json.load(open(state_file))["pids"]["neural0"] != neural_pid


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_detached_swarm_with_a_remote_agent_over_tcp(run_dir):
    home = os.path.join(run_dir, "home")
    env = dict(os.environ, ORCHFLOW_HOME=home)
    port = free_port()
    up = subprocess.run(["orchflow-launch", "--detach", "--tcp", f"127.0.0.1:{port}"], env=env,
                        capture_output=True, text=True, timeout=60)
    state_file = os.path.join(home, "run", "state.json")
    remote = None
    try:
        assert up.returncode == 0, up.stderr
        assert "running in the background" in up.stdout
        state = json.load(open(state_file))
        assert state["endpoints"]["frontend_tcp"] == f"tcp://127.0.0.1:{port}"
        assert state["endpoints"]["backend_tcp"] == f"tcp://127.0.0.1:{port + 1}"
        # a "remote" agent: connects over TCP with a key the operator made, serves a kind
        # the local agents do not
        made = orchflow(env, "keys", "add", "agent", "remote", "--kind", "sys.spin", "--json")
        assert made.returncode == 0, made.stderr
        keys = json.loads(made.stdout)
        assert oct(os.stat(keys["secret"]).st_mode & 0o777) == "0o600"
        remote = subprocess.Popen([sys.executable, "-m", "agents", "--endpoint", f"tcp://127.0.0.1:{port + 1}",
                                   "--name", "remote", "--kinds", "sys.spin", "--key", keys["secret"],
                                   "--broker-key", keys["broker_key"]], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: "remote" in orchflow(env, "agents").stdout, 20, "the remote agent")
        out = orchflow(env, "submit", "sys.spin", "--payload", "1000", "--wait")
        assert json.loads(out.stdout)["state"] == "done"
        shell = orchflow(env, "submit", "shell", "--payload", '{"cmd": "echo one; echo two"}', "--wait")
        assert json.loads(shell.stdout)["result"]["stdout"] == "one\ntwo"
        human = subprocess.run(["orchflow", "status"], env=env, capture_output=True, text=True, timeout=30)
        assert "health: ok" in human.stdout and "remote" in human.stdout
        pids = list(state["pids"].values()) + [state["launcher_pid"]]
        stop = subprocess.run(["orchflow", "stop"], env=env, capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        wait_for(lambda: not [p for p in pids if alive(p)], 20, "every swarm process to exit")
    finally:
        if remote is not None:
            os.killpg(remote.pid, signal.SIGKILL)
            remote.wait(10)
        if os.path.exists(state_file):
            for pid in [json.load(open(state_file))["launcher_pid"], *json.load(open(state_file))["pids"].values()]:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


def test_a_hung_agent_is_detected_and_restarted(launched):
    """SIGSTOP leaves the process alive but silent: the broker drops it after 3 s of
    missing heartbeats and the launcher's health checks then kill and restart it."""
    env, proc, state_file = launched
    state = json.load(open(state_file))
    hung = state["pids"]["agent1"]
    os.kill(hung, signal.SIGSTOP)
    try:
        wait_for(lambda: json.load(open(state_file))["pids"]["agent1"] != hung, 30, "agent1 replaced")
        assert not alive(hung)
        wait_for(lambda: "agent1" in orchflow(env, "agents").stdout, 15, "the new agent1 registered")
        out = orchflow(env, "submit", "sys.echo", "--payload", "2", "--wait")
        assert json.loads(out.stdout)["result"] == 2
    finally:
        if alive(hung):
            os.kill(hung, signal.SIGCONT)


def test_events_tail_through_the_cli(launched):
    env, proc, state_file = launched
    tail = subprocess.Popen(["orchflow", "--json", "events", "task."], env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        time.sleep(1.0)  # the tail's subscription reaches the proxy
        out = orchflow(env, "submit", "sys.echo", "--payload", '"watched"', "--wait")
        task = json.loads(out.stdout)["id"]
        seen = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "task.done" not in seen:
            event = json.loads(tail.stdout.readline())
            if event["id"] == task:
                seen.append(event["topic"])
        assert seen == ["task.queued", "task.started", "task.done"]
    finally:
        os.killpg(tail.pid, signal.SIGKILL)
        tail.wait(10)


def test_the_neural_workers_start_with_the_first_neural_task():
    """#14: the default swarm starts no neural worker (numpy, ~40 MiB) until a neural.*
    task needs one; the task then runs as if the worker had always been there."""
    from bus import Client
    from tests.conftest import launched_swarm

    with launched_swarm() as (env, home, state):
        assert "neural0" not in state["pids"], state["pids"]
        broker_args = open(f"/proc/{state['pids']['broker']}/cmdline", "rb").read().split(b"\0")
        assert b"--learned-routing" not in broker_args and b"--record-outcomes" not in broker_args
        with Client(state["endpoints"]["frontend"]) as c:
            assert {a["name"] for a in c.status()["agents"]} == {"agent0"}  # one built-in process, 8 threads
            started = time.monotonic()
            models = c.call("neural.list", {}, timeout=60)
            took = time.monotonic() - started
            names = {a["name"] for a in c.status()["agents"]}
        state_now = json.load(open(os.path.join(home, "run", "state.json")))
        assert isinstance(models, list) and "neural0" in names and "neural0" in state_now["pids"], \
            (models, names, state_now["pids"])
        assert took < 30
        log = open(os.path.join(home, "logs", "launcher.log")).read()
        assert "neural workers started on demand" in log
