"""A broker on one "host", an agent and a client on another, over tcp+CURVE.

The hosts are two network namespaces this test creates, joined by a veth pair with
addresses inside them (10.213.7.0/24): nothing reaches any real network.  Where
namespaces cannot be made (not root, no ``ip``), the test says so loudly, as a
warning in the summary and on stdout, and runs the same processes on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings

import pytest

from bus.auth import KeyRing
from launcher.procs import free_tcp_block

pytestmark = pytest.mark.timeout(120)

PORT = 7700


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


class Hosts:
    """Two namespaces and a veth pair, or, failing that, loopback for both."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.names = (f"ofbrk{tag}", f"ofagt{tag}")
        self.links = (f"ofb{tag}", f"ofa{tag}")
        self.isolated = False
        self.reason = ""
        if os.geteuid() != 0 or shutil.which("ip") is None:
            self.reason = "not root" if os.geteuid() != 0 else "no `ip` command"
        else:
            self.reason = self._make()
        self.broker_addr = "10.213.7.1" if self.isolated else "127.0.0.1"

    def _make(self) -> str:
        a, b = self.names
        la, lb = self.links
        steps = [("netns", "add", a), ("netns", "add", b),
                 ("link", "add", la, "type", "veth", "peer", "name", lb),
                 ("link", "set", la, "netns", a), ("link", "set", lb, "netns", b),
                 ("-n", a, "addr", "add", "10.213.7.1/24", "dev", la),
                 ("-n", b, "addr", "add", "10.213.7.2/24", "dev", lb),
                 ("-n", a, "link", "set", la, "up"), ("-n", b, "link", "set", lb, "up"),
                 ("-n", a, "link", "set", "lo", "up"), ("-n", b, "link", "set", "lo", "up")]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                self.remove()
                return f"`ip {' '.join(step)}` failed: {done.stderr.strip()}"
        self.isolated = True
        return ""

    def command(self, host: int, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.names[host], *argv] if self.isolated else argv

    def remove(self) -> None:
        for name in self.names:
            _ip("netns", "del", name)  # deleting a namespace deletes its end of the veth pair
        _ip("link", "del", self.links[0])


CLIENT_SCRIPT = textwrap.dedent("""
    import json, sys
    from bus.auth import CurveCredentials
    from bus.client import Client
    endpoint, key, broker_key = sys.argv[1:4]
    with Client(endpoint, project="remote-ci", curve=CurveCredentials.from_files(key, broker_key),
                ack_timeout=10) as c:
        ids = c.submit_many("sys.echo", [{"n": i} for i in range(50)])
        results = [c.result(i, timeout=30) for i in ids]
        status = c.status()
    print(json.dumps({"results": results, "agents": [a["name"] for a in status["agents"]]}))
""")

NULL_CLIENT_SCRIPT = textwrap.dedent("""
    import sys, zmq
    from bus import protocol as P
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.linger = 0
    s.connect(sys.argv[1])
    s.send_multipart(P.client_message(P.Command.STATUS, {}))
    print("answered" if s.poll(2000) else "refused")
""")


def test_broker_and_agent_on_different_hosts_over_curve():
    hosts = Hosts()
    if not hosts.isolated:
        message = (f"NETWORK NAMESPACES UNAVAILABLE ({hosts.reason}): the broker, agent and client of this "
                   f"test run on 127.0.0.1 instead of on two isolated hosts")
        print("\n" + "!" * 20 + " " + message)
        warnings.warn(message)
    work = tempfile.mkdtemp(prefix="of-ns-")
    procs: list[subprocess.Popen] = []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    try:
        home = os.path.join(work, "home")
        ring = KeyRing(home)
        ring.create_broker()
        agent_key = ring.add("agent", "far-agent", kinds=["sys.echo"])
        client_key = ring.add("client", "far-ci", projects=["remote-ci"])
        broker_public = str(ring.broker_files()[0])
        port = PORT if hosts.isolated else free_tcp_block()
        base = f"tcp://{hosts.broker_addr}"
        broker = subprocess.Popen(hosts.command(0, [sys.executable, "-m", "bus", "--run-dir",
                                                    os.path.join(work, "run"), "--keys-home", home,
                                                    "--tcp", f"{hosts.broker_addr}:{port}"]),
                                  env=env, stdout=subprocess.DEVNULL,
                                  stderr=open(os.path.join(work, "broker.log"), "wb"), start_new_session=True)
        procs.append(broker)
        _wait_for_socket(os.path.join(work, "run", "frontend"), broker, os.path.join(work, "broker.log"))
        agent = subprocess.Popen(hosts.command(1, [sys.executable, "-m", "agents", "--endpoint",
                                                   f"{base}:{port + 1}", "--name", "far-agent", "--capacity", "4",
                                                   "--kinds", "sys.echo", "--key", str(agent_key),
                                                   "--broker-key", broker_public]),
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
        procs.append(agent)
        client = subprocess.run(hosts.command(1, [sys.executable, "-c", CLIENT_SCRIPT, f"{base}:{port}",
                                                  str(client_key), broker_public]),
                                env=env, capture_output=True, text=True, timeout=60)
        assert client.returncode == 0, client.stderr
        out = json.loads(client.stdout)
        assert out["results"] == [{"n": i} for i in range(50)]
        assert out["agents"] == ["far-agent"]
        null = subprocess.run(hosts.command(1, [sys.executable, "-c", NULL_CLIENT_SCRIPT, f"{base}:{port}"]),
                              env=env, capture_output=True, text=True, timeout=30)
        assert null.stdout.strip() == "refused", null.stdout + null.stderr
        print(f"\nnetns={'yes' if hosts.isolated else 'NO (127.0.0.1)'}: 50 tasks round-tripped from "
              f"{'namespace ' + hosts.names[1] if hosts.isolated else 'loopback'} to a broker at {base}:{port}")
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
        if hosts.isolated:
            hosts.remove()
        shutil.rmtree(work, ignore_errors=True)


def _wait_for_socket(path: str, proc: subprocess.Popen, log: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(f"broker exited: {open(log, errors='replace').read()}")
        if time.monotonic() > deadline:
            raise AssertionError("broker did not bind in time")
        time.sleep(0.05)
