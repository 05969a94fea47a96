"""The SDK agent against a broker that lies: generated TASK and CANCEL bodies (drawn from
the OFP schema, half of them broken), raw garbage frames, then one honest TASK.  The
rule: the agent process never ends, and it still answers.  Before #16's conformance
kit, a TASK entry that was not a map killed it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus import protocol as P
from bus.protocol import Command

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bus"))  # the schema strategies live there
from ofp_json import body_instances  # noqa: E402  tests/bus/ofp_json.py

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "examples" / "agents" / "python" / "agent.py"

MESSAGES = st.one_of(
    body_instances("TASK").map(lambda b: (Command.TASK, b)),
    body_instances("CANCEL_AGENT").map(lambda b: (Command.CANCEL, b)),
    st.tuples(st.sampled_from([Command.TASK, Command.CANCEL, Command.HEARTBEAT, Command.DISCONNECT,
                               Command.ERROR]), st.binary(max_size=64)),  # raw bytes as a body
    st.lists(st.binary(max_size=16), min_size=0, max_size=5).map(lambda frames: (None, frames)),  # any frames
)


def test_the_sdk_agent_survives_generated_broker_messages(run_dir):
    endpoint = f"ipc://{run_dir}/backend"
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.linger = 0
    router.bind(endpoint)
    env = dict(os.environ, ORCHFLOW_BACKEND=endpoint, ORCHFLOW_KIND_PREFIX="t.", PYTHONPATH=str(ROOT))
    log = open(os.path.join(run_dir, "agent.log"), "wb")
    agent = subprocess.Popen([sys.executable, str(AGENT)], env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        assert router.poll(15_000), "the agent never connected"
        identity, *frames = router.recv_multipart()
        assert P.parse(frames, P.AGENT)[0] is Command.READY
        sent = [0]

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(MESSAGES)
        def lie(message):
            command, body = message
            if command is None:
                frames = body
            elif isinstance(body, bytes):
                frames = [P.AGENT, P.command_byte(command), body]
            else:
                try:
                    frames = [P.AGENT, P.command_byte(command), msgpack.packb(body, use_bin_type=True)]
                except (ValueError, OverflowError, TypeError):
                    return
            router.send_multipart([identity, *frames])
            sent[0] += 1
            while router.poll(0):  # whatever it answers, read and let go
                router.recv_multipart()
            assert agent.poll() is None, f"the agent died after {sent[0]} messages; see {run_dir}/agent.log"
        lie()
        assert sent[0] > 100
        router.send_multipart([identity, *P.agent_message(Command.TASK, [{
            "id": "honest", "kind": "t.echo", "payload": "still here", "project": "default", "deadline": None,
            "attempt": 1, "shared_write": False}])])
        deadline = time.monotonic() + 15
        answer = None
        while answer is None and time.monotonic() < deadline:
            if not router.poll(200):
                continue
            got_identity, *frames = router.recv_multipart()
            if got_identity != identity:  # it reconnected (e.g. libzmq dropped an oversize frame): resend
                identity = got_identity
                router.send_multipart([identity, *P.agent_message(Command.TASK, [{
                    "id": "honest", "kind": "t.echo", "payload": "still here", "project": "default",
                    "deadline": None, "attempt": 1, "shared_write": False}])])
                continue
            command, body = P.parse(frames, P.AGENT, max_body=P.MAX_FRAME)
            if command is Command.DONE:
                answer = next((e for e in body if e.get("id") == "honest"), None)
        assert answer == {"id": "honest", "result": "still here"}, answer
        assert agent.poll() is None
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, 9)
        agent.wait(10)
        log.close()
        router.close(linger=0)
