"""The example agents (Node, C, the Python SDK) and the Node client against a real
broker, and the conformance kit run on each of them; plus proof the kit can fail."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bus import Client, TaskFailed

from conftest import NODE_AGENT, NODE_CLIENT, PY_AGENT, ROOT  # tests/interop/conftest.py

KIT_TIMEOUT = 180


def start_agent(procs, name: str, argv: list[str], prefix: str):
    """An example agent as a process of the group (killed by PID at teardown)."""
    env = dict(os.environ, ORCHFLOW_BACKEND=procs.endpoints.backend, ORCHFLOW_KIND_PREFIX=prefix)
    log = open(procs.log_dir / f"{name}.log", "ab")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    log.close()
    procs.procs[name] = proc
    return proc


def exercise(procs, prefix: str) -> None:
    """What every example agent must do: echo, fail, sleep, be cancelled, drain."""
    with Client(procs.endpoints.frontend) as c:
        payload = {"text": "h\u00e9llo \U0001F600", "n": [1, 2.5, None], "bin": b"\x00\xff"}
        assert c.call(prefix + "echo", payload, timeout=10) == payload
        with pytest.raises(TaskFailed, match="broken on purpose"):
            c.call(prefix + "fail", "broken on purpose", timeout=10)
        assert c.call(prefix + "sleep", 0.1, timeout=10) == 0.1
        slow = c.submit(prefix + "sleep", 60)
        deadline = time.monotonic() + 10
        while c.status([slow])["tasks"][slow] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        c.cancel(slow)
        assert c.outcome(slow, timeout=10)["state"] == "cancelled"
        deadline = time.monotonic() + 5
        while c.status()["agents"][0]["inflight"]:
            assert time.monotonic() < deadline, "the cancelled task's credit never came back"
            time.sleep(0.02)
        assert c.status()["counters"]["late_results"] == 0


def test_node_agent_and_node_client(swarm, node_examples):
    start_agent(swarm, "node-agent", [node_examples, str(NODE_AGENT / "agent.js")], "node.")
    swarm.wait_agents(1)
    exercise(swarm, "node.")
    env = dict(os.environ, ORCHFLOW_FRONTEND=swarm.endpoints.frontend)
    done = subprocess.run([node_examples, str(NODE_CLIENT / "client.js"), "node.echo", '{"k": [1, "\u00e9"]}', "3"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and all('"state":"done","result":{"k":[1,"\u00e9"]}' in line for line in lines), lines
    assert "OFP/1.1" in done.stderr
    failed = subprocess.run([node_examples, str(NODE_CLIENT / "client.js"), "node.fail", '"no"'], env=env,
                            capture_output=True, text=True, timeout=30)
    assert failed.returncode == 1 and '"state":"failed"' in failed.stdout, failed
    refused = subprocess.run([node_examples, str(NODE_CLIENT / "client.js"), "", "1"], env=env,
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and "bad-field" in refused.stderr, refused


def test_c_agent(swarm, c_agent):
    start_agent(swarm, "c-agent", [c_agent], "c.")
    swarm.wait_agents(1)
    exercise(swarm, "c.")


def kit(agent_cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bus.conformance", "--agent-cmd", agent_cmd], cwd=ROOT,
                          capture_output=True, text=True, timeout=KIT_TIMEOUT)


@pytest.mark.parametrize("which", ["sdk", "node", "c"])
def test_the_conformance_kit_passes_every_example(which, request):
    if which == "sdk":
        cmd = f"{sys.executable} {PY_AGENT}"
    elif which == "node":
        cmd = f"{request.getfixturevalue('node_examples')} {NODE_AGENT / 'agent.js'}"
    else:
        cmd = request.getfixturevalue("c_agent")
    done = kit(cmd)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("  PASS  ") == 10 and "10 passed, 0 failed, 0 warnings" in done.stdout, done.stdout


BROKEN = '''
import sys, zmq
from bus import protocol as P
from bus.protocol import Command
sock = zmq.Context().socket(zmq.DEALER)
sock.connect(sys.argv[1])
sock.send_multipart(P.agent_message(Command.READY, {"name": "broken", "kinds": ["conformance.echo",
                    "conformance.fail", "conformance.sleep"], "capacity": 1}))
while True:  # answers echo, never heartbeats, and trusts every message to have three frames
    sig, cmd, body = sock.recv_multipart()
    if cmd == P.command_byte(Command.TASK):
        sock.send_multipart(P.agent_message(Command.DONE, [{"id": t["id"], "result": t["payload"]}
                                                           for t in P.unpack(body)]))
'''


def test_the_conformance_kit_fails_a_broken_agent(tmp_path):
    script = tmp_path / "broken_agent.py"
    script.write_text(BROKEN)
    done = kit(f"{sys.executable} {script} $ORCHFLOW_BACKEND")
    assert done.returncode == 1, done.stdout
    assert "  PASS  answers (DONE)" in done.stdout
    assert "  FAIL  heartbeats, agent to broker" in done.stdout
    assert "  FAIL  failures (FAILED)" in done.stdout, done.stdout
