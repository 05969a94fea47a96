"""Issue #12: every attack tried on b788953, now refused; keys, identities, TCP.

The broker runs as a real process with ``--tcp 127.0.0.1:PORT`` (clients PORT,
agents PORT+1, events PORT+2) and a keys directory made here.  On b788953 each
attack test fails: there was no CURVE, no identity, and the broker believed what
messages said.
"""

from __future__ import annotations

import os
import stat
import time

import pytest
import zmq

from bus import protocol as P
from bus.auth import CurveCredentials, KeyRing
from bus.client import Client
from bus.errors import TaskRejected
from bus.protocol import Command
from launcher.procs import ProcessGroup, free_tcp_block

from peers import RawPeer  # tests/bus/peers.py (pytest puts this directory on sys.path)

pytestmark = pytest.mark.timeout(120)


class Swarm:
    def __init__(self, run_dir: str) -> None:
        self.home = os.path.join(run_dir, "home")
        self.ring = KeyRing(self.home)
        self.ring.create_broker()
        self.secret = {
            "ci-a": self.ring.add("client", "ci-a", projects=["a"]),
            "ci-b": self.ring.add("client", "ci-b", projects=["b"]),
            "agent-a": self.ring.add("agent", "agent-a", kinds=["sys.echo", "shell", "job"], projects=["a"]),
            "agent-any": self.ring.add("agent", "agent-any", kinds=["job"]),
            "revokee": self.ring.add("client", "revokee", projects=["a"]),
        }
        self.port = free_tcp_block()
        self.procs = ProcessGroup(os.path.join(run_dir, "run"))
        self.procs.broker(tcp=f"127.0.0.1:{self.port}", keys_home=self.home, heartbeat=0.5)
        self.ipc = self.procs.endpoints
        self.frontend = f"tcp://127.0.0.1:{self.port}"
        self.backend = f"tcp://127.0.0.1:{self.port + 1}"
        self.events = f"tcp://127.0.0.1:{self.port + 2}"

    def curve(self, name: str) -> CurveCredentials:
        return CurveCredentials.from_files(self.secret[name], self.ring.broker_files()[0])

    def client(self, name: str, project: str) -> Client:
        return Client(self.frontend, project=project, curve=self.curve(name), ack_timeout=5)

    def local(self, project: str = "default") -> Client:
        return Client(self.ipc.frontend, project=project, ack_timeout=5)

    def status(self) -> dict:
        with self.local() as c:
            return c.status()


@pytest.fixture
def secure(run_dir):
    swarm = Swarm(run_dir)
    try:
        yield swarm
    finally:
        swarm.procs.close()


def registered(peer: RawPeer, name: str, kinds: list[str], capacity: int = 10, **extra) -> None:
    peer.send(Command.READY, {"name": name, "kinds": kinds, "capacity": capacity, **extra})


def agent_names(swarm: Swarm) -> set[str]:
    return {a["name"] for a in swarm.status()["agents"]}


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------------------- keys


def test_null_unknown_and_revoked_keys_are_refused_and_counted(secure):
    with RawPeer(secure.backend, P.AGENT) as null:  # the b788953 rogue: no key at all
        registered(null, "agent0", ["shell"], 100_000)
        assert null.recv(1.0) is None
    stranger = CurveCredentials(*zmq.curve_keypair(), secure.ring.broker_keys()[0])
    with RawPeer(secure.backend, P.AGENT, curve=stranger) as unknown:
        registered(unknown, "agent0", ["shell"], 100_000)
        assert unknown.recv(1.0) is None
    assert "agent0" not in agent_names(secure)

    with secure.client("revokee", "a") as c:  # allowed: works; revoked: its open connection stops too
        assert c.status()["version"] == P.VERSION
        secure.ring.set_revoked("revokee", True)
        time.sleep(1.5)  # the broker re-reads identities.json within a second
        with pytest.raises(TaskRejected) as err:
            c.submit("sys.echo", 1)
            c.flush(timeout=5)
        assert err.value.code == "forbidden" and "revoked" in str(err.value)
    with pytest.raises(Exception):
        with secure.client("revokee", "a") as again:  # a new handshake with the revoked key fails
            again.status(timeout=1.5)
    auth = wait_until(lambda: (a := secure.status()["auth"])["revoked_key"] >= 1 and a, what="revoked counted")
    assert auth["handshake_failed"] >= 1, auth   # the NULL peer: mechanism mismatch
    assert auth["unknown_key"] >= 1, auth
    assert auth["revoked_messages"] + auth["forbidden"] >= 0
    assert secure.status()["counters"]["forbidden"] >= 1


def test_key_files_are_private(secure):
    keys = secure.ring.dir
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(keys / "issued").st_mode) == 0o700
    for path in [keys / "identities.json", *keys.glob("*.key*"), *(keys / "issued").glob("*")]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    secrets_made = list((keys / "issued").glob("*.key_secret"))
    assert len(secrets_made) == 5


def test_clients_cannot_use_tcp_without_keys(secure, monkeypatch):
    monkeypatch.delenv("ORCHFLOW_KEY", raising=False)
    from bus.errors import AuthError
    with pytest.raises(AuthError, match="ORCHFLOW_KEY"):
        Client(secure.frontend)


# ---------------------------------------------------------------------------- attacks


def test_rogue_agent_receives_no_task_and_forges_nothing(secure):
    """b788953: a peer with no key registered as agent0 and got every task, the
    shell task's env (DEPLOY_TOKEN) included; its forged results were accepted."""
    with RawPeer(secure.backend, P.AGENT) as rogue, secure.client("ci-b", "b") as b:
        registered(rogue, "agent0", ["shell", "sys.echo"], 100_000)
        ids = [b.submit("shell", {"cmd": "true", "env": {"DEPLOY_TOKEN": "s3cr3t"}}) for _ in range(11)]
        got = rogue.drain(1.5)
        assert [c for c, _ in got if c is Command.TASK] == []
        for task_id in ids:
            rogue.send(Command.DONE, [{"id": task_id, "result": "forged"}])
        time.sleep(0.5)
        states = b.status(ids)["tasks"]
        assert set(states.values()) == {"queued"}, states  # nobody served them, nothing forged finished them


def test_agent_key_bound_to_project_gets_only_that_projects_tasks(secure):
    with RawPeer(secure.backend, P.AGENT, curve=secure.curve("agent-a")) as agent, \
            secure.client("ci-a", "a") as a, secure.client("ci-b", "b") as b:
        registered(agent, "worker-a", ["job"])
        wait_until(lambda: "worker-a" in agent_names(secure), what="agent-a registered")
        mine = a.submit("job", 1)
        theirs = b.submit("job", 2)
        tasks = agent.expect(Command.TASK)
        assert [t["id"] for t in tasks] == [mine]
        assert agent.drain(0.8) == [] or all(t["id"] != theirs for c, body in agent.drain(0.1)
                                             if c is Command.TASK for t in body)
        assert b.status([theirs])["tasks"][theirs] == "queued"
        # an agent key may not register kinds it was not given
        registered(agent, "worker-a", ["shell", "neural.train"])
        err = agent.expect(Command.ERROR)
        assert err["code"] == "forbidden" and "neural.train" in err["message"]


def test_forged_done_from_a_peer_that_does_not_hold_the_task(secure):
    """b788953: a peer that never registered finished a task running on a local agent
    with a forged DONE, knowing only its id (ids are in task.queued events)."""
    with RawPeer(secure.ipc.backend, P.AGENT) as holder, RawPeer(secure.ipc.backend, P.AGENT) as forger, \
            RawPeer(secure.ipc.backend, P.AGENT) as other, secure.local() as c:
        registered(holder, "holder", ["job"], 1)
        registered(other, "other", ["other-kind"], 1)
        wait_until(lambda: {"holder", "other"} <= agent_names(secure), what="agents registered")
        task_id = c.submit("job", {"x": 1})
        assert holder.expect(Command.TASK)[0]["id"] == task_id
        forger.send(Command.DONE, [{"id": task_id, "result": "forged"}])  # never registered
        other.send(Command.DONE, [{"id": task_id, "result": "forged too"}])  # registered, not the holder
        other.send(Command.FAILED, [{"id": task_id, "error": "forged failure"}])
        time.sleep(0.5)
        assert c.status([task_id])["tasks"][task_id] == "running"
        holder.send(Command.DONE, [{"id": task_id, "result": "real"}])
        assert c.result(task_id, timeout=5) == "real"
        counters = secure.status()["counters"]
        assert counters["unassigned_results"] >= 1 and counters["late_results"] >= 2


def test_ready_running_reclaims_only_what_the_journal_assigned(secure):
    """b788953: READY listing ``running: [id]`` took over a queued task, even of a kind
    the peer does not serve."""
    with RawPeer(secure.ipc.backend, P.AGENT) as thief, secure.local() as c:
        task_id = c.submit("unserved", {"secret": 1})
        registered(thief, "thief", ["something-else"], 0, running=[task_id])
        time.sleep(0.4)
        assert c.status([task_id])["tasks"][task_id] == "queued"
        with RawPeer(secure.ipc.backend, P.AGENT) as thief2:  # serves the kind, capacity 0, claims it
            registered(thief2, "thief2", ["unserved"], 0, running=[task_id])
            time.sleep(0.4)
            assert c.status([task_id])["tasks"][task_id] == "queued"
            assert [x for x, _ in thief2.drain(0.3) if x is Command.TASK] == []


def test_a_client_bound_to_project_a_is_denied_project_b(secure):
    """b788953: a client of project a passing project="b" overwrote project:b."""
    with secure.client("ci-a", "b") as liar:
        with pytest.raises(TaskRejected) as err:
            liar.call("memory.put", {"ns": "project:b", "key": "k", "value": "overwritten"}, timeout=5)
        assert err.value.code == "forbidden"
        assert "ci-a" in str(err.value) and "project 'b'" in str(err.value) and "projects a" in str(err.value)
    assert secure.status()["counters"]["forbidden"] >= 1


def test_cancel_fetch_and_status_of_another_projects_task(secure):
    """b788953: any client could cancel, FETCH (shell stdout included) or STATUS any
    project's task by id."""
    with RawPeer(secure.backend, P.AGENT, curve=secure.curve("agent-a")) as agent, \
            secure.client("ci-a", "a") as a, secure.client("ci-b", "b") as b:
        registered(agent, "worker-a", ["job"])
        wait_until(lambda: "worker-a" in agent_names(secure), what="agent-a registered")
        done_id = a.submit("job", 1)
        assert agent.expect(Command.TASK)[0]["id"] == done_id
        agent.send(Command.DONE, [{"id": done_id, "result": {"stdout": "deploy key: hunter2"}}])
        assert a.result(done_id, timeout=5) == {"stdout": "deploy key: hunter2"}
        queued_id = a.submit("unserved", 1)
        a.flush()  # accepted (submit() returns before it is even sent): now b may refer to it

        with pytest.raises(TaskRejected) as err:
            b.outcome(done_id, timeout=5)  # FETCH
        assert err.value.code == "forbidden"
        b.cancel(queued_id)
        with pytest.raises(TaskRejected) as err:
            b.outcome(queued_id, timeout=5)
        assert err.value.code == "forbidden"
        st = b.status([done_id, queued_id])
        assert st["tasks"] == {done_id: None, queued_id: None} and set(st["forbidden"]) == {done_id, queued_id}
        assert a.status([queued_id])["tasks"][queued_id] == "queued"  # the cancel changed nothing
        # and a client-made id another project holds cannot be claimed
        with pytest.raises(TaskRejected) as err:
            b.submit("job", None, task_id=done_id, project="b")
            b.flush(timeout=5)
        assert err.value.code == "forbidden"


def test_tcp_clients_round_trip_and_see_only_their_projects_events(secure):
    with RawPeer(secure.backend, P.AGENT, curve=secure.curve("agent-any")) as agent, \
            secure.client("ci-a", "a") as a, secure.client("ci-b", "b") as b:
        registered(agent, "anyone", ["job"])
        wait_until(lambda: "anyone" in agent_names(secure), what="agent registered")
        sub = a.subscribe("task.")
        time.sleep(0.5)  # the subscription reaches the broker
        ids = [a.submit("job", 1), b.submit("job", 2)]
        tasks = []
        while len(tasks) < 2:
            tasks += agent.expect(Command.TASK)
        agent.send(Command.DONE, [{"id": t["id"], "result": t["payload"] * 10} for t in tasks])
        assert a.result(ids[0], timeout=5) == 10 and b.result(ids[1], timeout=5) == 20
        seen = []
        while (event := sub.recv(timeout=1.0)) is not None:
            seen.append(event)
        assert {body["id"] for _, body in seen} == {ids[0]}, seen
        assert {topic for topic, _ in seen} >= {"task.queued", "task.done"}
        sub.close()
    # a subscriber bound to a may not subscribe to b's prefix: refused, counted
    from bus.client import Subscription
    with Subscription(zmq.Context.instance(), secure.events, ["task."], curve=secure.curve("ci-a"),
                      project="b") as spy, secure.local("b") as local_b:
        time.sleep(0.5)
        local_b.submit("job2", 3)
        assert spy.recv(timeout=1.0) is None


def test_models_are_scoped_per_project(secure):
    """b788953: a's neural.load replaced b's model, and b's next run returned 1.0
    instead of 0.53."""
    from neural.network import Network
    memory = os.path.join(secure.home, "memory")
    secure.procs.agent("neural0", capacity=8, module="neural.pool", extra=["--memory", memory])
    secure.procs.wait_agents(1)

    def net(seed: int) -> Network:
        n = Network.create_standard(2, 3, 1, seed=seed)
        n.set_activation(5)
        return n

    mine, theirs = net(1), net(2)
    x = [0.5, -0.25]
    with secure.local("b") as b, secure.local("a") as a:
        b.call("neural.load", {"name": "m", "fann": mine.dumps()}, timeout=10)
        before = b.call("neural.run", {"name": "m", "input": x}, timeout=10)
        a.call("neural.load", {"name": "m", "fann": theirs.dumps()}, timeout=10)  # a's own "m"
        assert b.call("neural.run", {"name": "m", "input": x}, timeout=10) == before
        assert a.call("neural.run", {"name": "m", "input": x}, timeout=10) == pytest.approx(theirs.run(x).tolist())
        assert before == pytest.approx(mine.run(x).tolist())
        assert before != pytest.approx(theirs.run(x).tolist())
        # the routing model is the swarm's: no project may retrain or replace it
        with pytest.raises(Exception, match="orchflow"):
            a.call("neural.train_router", {}, timeout=10)


def test_shared_memory_needs_its_own_write_permission(secure):
    secure.ring.add("client", "writer", projects=["a"], shared_write=True)
    secure.secret["writer"] = secure.ring.dir / "issued" / "writer.key_secret"
    memory = os.path.join(secure.home, "memory")
    secure.procs.agent("mem0", capacity=4, kinds="sys.echo", extra=["--memory", memory])
    secure.procs.wait_agents(1)
    with secure.client("ci-a", "a") as reader, secure.client("writer", "a") as writer:
        assert writer.call("memory.put", {"ns": "shared", "key": "style", "value": "pep8"}, timeout=10) is True
        assert reader.call("memory.get", {"ns": "shared", "key": "style"}, timeout=10) == "pep8"
        assert reader.call("memory.put", {"key": "own", "value": 1}, timeout=10) is True  # its own project
        from bus.errors import TaskFailed
        with pytest.raises(TaskFailed, match="may read 'shared' but not write it"):
            reader.call("memory.put", {"ns": "shared", "key": "style", "value": "tabs"}, timeout=10)
        assert writer.call("memory.get", {"ns": "shared", "key": "style"}, timeout=10) == "pep8"


def test_payload_values_never_reach_the_logs(secure):
    """SECURITY.md: log lines name ids, kinds, agents and reasons, never payloads.  A
    marker rides in every place a payload value can: shell env and command, a task that
    fails, an oversize result, a refused submit, a forged result, a hostile READY."""
    marker = "S3CR3T-9f2c"
    secure.procs.agent("worker", capacity=2, kinds="shell,sys.echo")
    secure.procs.wait_agents(1)
    with secure.local("a") as c, RawPeer(secure.ipc.backend, P.AGENT) as forger, \
            RawPeer(secure.ipc.frontend, P.CLIENT) as raw:
        ok = c.submit("shell", {"cmd": f"echo {marker}", "env": {"DEPLOY_TOKEN": marker}})
        bad = c.submit("shell", {"cmd": f"echo {marker} >&2; exit 3", "env": {"T": marker}})
        missing = c.submit("shell", {"cmd": "true", "cwd": f"/nonexistent/{marker}"})
        echoed = c.submit("sys.echo", {"token": marker})
        for task_id in (ok, bad, missing, echoed):
            c.outcome(task_id, timeout=20)
        forger.send(Command.DONE, [{"id": ok, "result": marker, "error": marker}])
        forger.send(Command.READY, {"name": marker, "kinds": [marker * 200], "capacity": marker})
        raw.send(Command.SUBMIT, [{"kind": "sys.echo", "payload": marker, "priority": marker}])
        raw.send(Command.SUBMIT, [{"kind": marker * 100, "payload": marker}])
        raw.send(Command.WORKFLOW, {"steps": [{"name": marker, "kind": "x", "deps": [marker]}]})
        assert raw.drain(1.0), "the broker answered the refused messages"
    secure.procs.close()  # flush and end every process, so its whole log is on disk
    logs = sorted(secure.procs.log_dir.glob("*.log"))
    assert {p.name for p in logs} >= {"broker.log", "worker.log"}
    for path in logs:
        text = path.read_text(errors="replace")
        assert marker not in text, f"{path.name} holds a payload value: " + \
            text[max(0, text.find(marker) - 200):text.find(marker) + 50]
