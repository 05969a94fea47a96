"""OFP conformance kit: does an agent someone wrote keep the protocol?

    python -m bus.conformance --agent-cmd "node examples/agents/node/agent.js"

starts a private broker in a temporary directory, runs the agent with
``ORCHFLOW_BACKEND`` (the broker's ipc back end), ``ORCHFLOW_HOME`` and
``ORCHFLOW_KIND_PREFIX=conformance.`` set, and checks it as a peer would: through the
broker for the protocol's normal life, and by standing in for the broker (a raw
ROUTER on the same endpoint) for what a broker never sends, malformed and oversize
messages.  The agent must serve ``conformance.echo`` (answer the payload),
``conformance.fail`` (answer FAILED) and ``conformance.sleep`` (answer after
``payload`` seconds; CANCEL stops it).  Each check prints PASS or FAIL with what it
saw; SHOULD-level checks print WARN.  The exit status is 0 only if every MUST passed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import zmq

from . import protocol as P
from .client import Client
from .endpoints import Endpoints
from .errors import BusError, ProtocolError, TaskFailed
from .protocol import Command

PREFIX = "conformance."
ECHO, FAIL, SLEEP = PREFIX + "echo", PREFIX + "fail", PREFIX + "sleep"
PAYLOADS = [None, 0, -1, 2 ** 40, 1.5, "", "h\u00e9llo \U0001F600", b"\x00\xff", [1, [2, [3]]],
            {"nested": {"list": [1, 2.5, None], "text": "x" * 1000}}]


class CheckFailed(AssertionError):
    """A check saw something the protocol does not allow; the message says what."""


@dataclass
class Outcome:
    name: str
    level: str      # MUST or SHOULD
    passed: bool
    detail: str


@dataclass
class Harness:
    """A broker and the agent under test, each a process in its own session."""

    agent_cmd: str
    run_dir: str
    timeout: float = 10.0
    broker: subprocess.Popen | None = None
    agent: subprocess.Popen | None = None
    endpoints: Endpoints = field(init=False)

    def __post_init__(self) -> None:
        self.endpoints = Endpoints.in_directory(os.path.join(self.run_dir, "run"))
        self.journal = os.path.join(self.run_dir, "journal")

    def _log(self, name: str):
        return open(os.path.join(self.run_dir, f"{name}.log"), "ab")

    def start_broker(self) -> None:
        os.makedirs(os.path.dirname(self.endpoints.backend[len("ipc://"):]), mode=0o700, exist_ok=True)
        self.broker = subprocess.Popen(
            [sys.executable, "-m", "bus", "--run-dir", os.path.join(self.run_dir, "run"), "--journal", self.journal],
            stdout=self._log("broker"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                with Client(self.endpoints.frontend, ack_timeout=0.5) as c:
                    c.status()
                return
            except BusError:
                if self.broker.poll() is not None:
                    raise RuntimeError(f"the broker exited with {self.broker.returncode}") from None
                time.sleep(0.05)
        raise RuntimeError("the broker did not start")

    def kill_broker(self) -> None:
        if self.broker is not None and self.broker.poll() is None:
            os.kill(self.broker.pid, signal.SIGKILL)
            self.broker.wait(10)

    def start_agent(self) -> None:
        env = dict(os.environ, ORCHFLOW_BACKEND=self.endpoints.backend, ORCHFLOW_HOME=self.run_dir,
                   ORCHFLOW_KIND_PREFIX=PREFIX)
        self.agent = subprocess.Popen(self.agent_cmd, shell=True, env=env, stdout=self._log("agent"),
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def agent_alive(self) -> bool:
        return self.agent is not None and self.agent.poll() is None

    def client(self) -> Client:
        return Client(self.endpoints.frontend, ack_timeout=self.timeout)

    def registered(self, c: Client) -> dict[str, Any] | None:
        return next((a for a in c.status()["agents"] if ECHO in a["kinds"]), None)

    def wait_registered(self, c: Client, timeout: float | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            agent = self.registered(c)
            if agent is not None:
                return agent
            if not self.agent_alive():
                raise CheckFailed(f"the agent exited with {self.agent.returncode}")
            time.sleep(0.05)
        raise CheckFailed(f"no agent serving {ECHO} registered within {timeout or self.timeout:g}s")

    def wait_running(self, c: Client, task_id: str) -> None:
        deadline = time.monotonic() + self.timeout
        while c.status([task_id])["tasks"][task_id] != "running":
            if time.monotonic() > deadline:
                raise CheckFailed("the sleep task never started")
            time.sleep(0.02)

    def close(self) -> None:
        for proc in (self.agent, self.broker):
            if proc is not None and proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)


# ----------------------------------------------------------------------------- checks


def check_registration(h: Harness) -> str:
    started = time.monotonic()
    with h.client() as c:
        agent = h.wait_registered(c)
    missing = {ECHO, FAIL, SLEEP} - set(agent["kinds"])
    if missing:
        raise CheckFailed(f"READY lacks kinds {sorted(missing)}")
    if agent["capacity"] < 1:
        raise CheckFailed(f"READY capacity {agent['capacity']}: it would never get a task")
    return (f"READY within {time.monotonic() - started:.2f}s as {agent['name']!r}, "
            f"kinds {sorted(agent['kinds'])}, capacity {agent['capacity']}")


def check_answers(h: Harness) -> str:
    with h.client() as c:
        for payload in PAYLOADS:
            got = c.call(ECHO, payload, timeout=h.timeout)
            if got != payload:
                raise CheckFailed(f"echo of {payload!r:.60} came back as {got!r:.60}")
    return f"DONE carried {len(PAYLOADS)} payload shapes back unchanged (nil, ints, 2^40, float, str, bin, nesting)"


def check_failed(h: Harness) -> str:
    with h.client() as c:
        try:
            c.call(FAIL, "boom", timeout=h.timeout)
        except TaskFailed as exc:
            if "boom" not in str(exc):
                raise CheckFailed(f"FAILED lost the error text: {exc}") from None
        else:
            raise CheckFailed(f"{FAIL} answered DONE")
        if h.registered(c) is None:
            raise CheckFailed("the agent left after a failed task")
    return "FAILED carried the error; the agent stayed registered"


def check_retry(h: Harness) -> str:
    with h.client() as c:
        task_id = c.submit(FAIL, "again", retry={"max": 2, "on": "error", "backoff": 0.05, "backoff_max": 0.1})
        outcome = c.outcome(task_id, timeout=h.timeout)
    if outcome["state"] != "failed" or outcome["attempts"] != 3 or len(outcome.get("retries", [])) != 2:
        raise CheckFailed(f"expected 3 attempts ending failed, got {outcome}")
    return "a FAILED task with retry max 2 ran 3 times, each answered FAILED, then ended failed"


def check_credit(h: Harness) -> str:
    with h.client() as c:
        agent = h.registered(c)
        credit = agent["capacity"] + agent["prefetch"]
        ids = [c.submit(SLEEP, 0.3) for _ in range(credit + 2)]
        peak, deadline = 0, time.monotonic() + h.timeout + credit
        while time.monotonic() < deadline:
            status = c.status(ids)
            now = h.registered(c)
            peak = max(peak, now["inflight"] if now else 0)
            if all(s in P.State.FINAL for s in status["tasks"].values()):
                break
            time.sleep(0.02)
        outcomes = [c.outcome(i, timeout=h.timeout) for i in ids]
    if peak > credit:
        raise CheckFailed(f"{peak} tasks in flight on an agent with credit {credit}")
    bad = [o for o in outcomes if o["state"] != "done"]
    if bad:
        raise CheckFailed(f"{len(bad)} of {len(ids)} sleeps did not end done: {bad[0]}")
    return f"{len(ids)} sleeps on credit {credit}: at most {peak} in flight, all done"


def check_heartbeats(h: Harness) -> str:
    with h.client() as c:
        lost_before = c.status()["counters"]["agents_lost"]
        time.sleep(4.0)  # over the broker's liveness window (3 x 1 s) with nothing to do
        status = c.status()
        agent = h.registered(c)
    if agent is None or status["counters"]["agents_lost"] != lost_before:
        raise CheckFailed("idle for 4 s, the agent was declared lost: it does not send HEARTBEAT")
    if agent["last_seen"] > 1.5:
        raise CheckFailed(f"last message {agent['last_seen']:.1f}s ago: heartbeats are too far apart")
    return f"idle 4 s and still registered; last message {agent['last_seen']:.2f}s ago"


def check_cancel(h: Harness) -> str:
    with h.client() as c:
        task_id = c.submit(SLEEP, 30)
        h.wait_running(c, task_id)
        late_before = c.status()["counters"]["late_results"]
        c.cancel(task_id)
        started = time.monotonic()
        while h.registered(c)["inflight"] > 0:
            if time.monotonic() - started > 5:
                raise CheckFailed("CANCEL was not answered within 5 s: the agent keeps the credit")
            time.sleep(0.02)
        answered = time.monotonic() - started
        counters = c.status()["counters"]
        if counters["late_results"] != late_before:
            raise CheckFailed("the agent answered the cancelled task in a way the broker counts as late")
        if c.call(ECHO, "after", timeout=h.timeout) != "after":
            raise CheckFailed("no answer after a CANCEL")
    return f"CANCEL of a running 30 s sleep answered in {answered:.2f}s; its credit came back"


def check_restart_with_running(h: Harness) -> str:
    with h.client() as c:
        task_id = c.submit(SLEEP, 2.5)
        h.wait_running(c, task_id)
    h.kill_broker()
    h.start_broker()
    started = time.monotonic()
    with h.client() as c:
        h.wait_registered(c)
        back = time.monotonic() - started
        outcome = c.outcome(task_id, timeout=h.timeout)
    if outcome["state"] != "done" or outcome["attempts"] != 1:
        raise CheckFailed(f"the task running across the restart ended {outcome['state']} after "
                          f"{outcome['attempts']} attempts: READY did not list it in 'running'")
    return f"after kill -9 and restart, READY came back in {back:.2f}s with 'running'; the task ended done, run once"


class FakeBroker:
    """A raw ROUTER bound where the broker was: sends what no broker would."""

    def __init__(self, endpoint: str) -> None:
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.bind(endpoint)
        self.identity: bytes | None = None
        self.ready: Any = None
        self.heartbeats = 0
        self.reconnects = 0

    def recv(self, timeout: float) -> tuple[Command, Any] | None:
        if not self.sock.poll(timeout * 1000):
            return None
        frames = self.sock.recv_multipart()
        if self.identity is not None and frames[0] != self.identity:
            self.reconnects += 1  # e.g. its libzmq dropped a message over its size limit, and reconnected
        self.identity = frames[0]
        try:
            command, body = P.parse(frames[1:], P.AGENT, max_body=P.MAX_FRAME)
        except ProtocolError as exc:
            if exc.code == "too-deep":  # echoing the deep payload back is its right; a broker refuses it
                return None
            raise CheckFailed(f"the agent sent a malformed message: {exc}") from None
        if command is Command.HEARTBEAT:
            self.heartbeats += 1
        if command is Command.READY:
            self.ready = body
        return command, body

    def send_raw(self, frames: list[bytes]) -> None:
        self.sock.send_multipart([self.identity, *frames])

    def send(self, command: Command, body: Any = None) -> None:
        self.send_raw(P.agent_message(command, body))

    def wait_for(self, command: Command, timeout: float, match: Callable[[Any], bool] = lambda b: True) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.recv(max(0.0, deadline - time.monotonic()))
            if got is not None and got[0] is command and match(got[1]):
                return got[1]
            if got is not None and got[0] is Command.HEARTBEAT:
                self.send(Command.HEARTBEAT)  # keep it from deciding we are gone
        raise CheckFailed(f"no {command.name} within {timeout:g}s")

    def close(self) -> None:
        self.sock.close(linger=0)


def _hostile_messages() -> list[tuple[str, list[bytes]]]:
    sig, task = P.AGENT, P.command_byte(Command.TASK)
    deep = b"\x91" * 1000 + b"\xc0"
    return [
        ("one frame", [b"junk"]),
        ("five frames", [sig, task, b"\x90", b"x", b"y"]),
        ("a foreign signature", [b"OFA9", task, P.pack([])]),
        ("an unknown command", [sig, b"\x99", b""]),
        ("a body that is not msgpack", [sig, task, b"\xc1\xc1\xc1"]),
        ("TASK with a map body", [sig, task, P.pack({"id": "x"})]),
        ("TASK entries without id or kind", [sig, task, P.pack([{}, {"id": 5}, "str", None])]),
        ("TASK of an unknown kind", [sig, task, P.pack([{"id": "hostile-kind", "kind": "nope", "payload": None,
                                                         "project": "default", "deadline": None, "attempt": 1}])]),
        ("a payload nested 1,000 deep", [sig, task, b"\x91\x86\xa2id\xa9deep-task\xa4kind" + P.pack(ECHO)
                                         + b"\xa7payload" + deep + b"\xa7project\xa7default\xa8deadline\xc0"
                                         b"\xa7attempt\x01"]),
        ("CANCEL of an unknown id", [sig, P.command_byte(Command.CANCEL), P.pack({"ids": ["never-sent"]})]),
        ("an ERROR", [sig, P.command_byte(Command.ERROR), P.pack({"code": "bad-field", "message": "test"})]),
        ("a 17 MiB TASK (over the default max_body)", [sig, task, P.pack([{
            "id": "huge", "kind": ECHO, "payload": "x" * (17 * 1024 * 1024), "project": "default",
            "deadline": None, "attempt": 1}])]),
    ]


def check_hostile_input(h: Harness) -> str:
    """Stand in for the broker: the agent must survive what no broker sends, and serve on."""
    h.kill_broker()
    fake = FakeBroker(h.endpoints.backend)
    try:
        # it reconnects (or its queued heartbeats arrive); a DISCONNECT makes it register
        fake.wait_for(Command.HEARTBEAT, h.timeout)
        fake.send(Command.DISCONNECT)
        fake.wait_for(Command.READY, h.timeout)
        for what, frames in _hostile_messages():
            fake.send_raw(frames)
            time.sleep(0.05)
            if not h.agent_alive():
                raise CheckFailed(f"the agent died on {what} (exit {h.agent.returncode})")
        entry = None
        deadline = time.monotonic() + h.timeout
        while entry is None and time.monotonic() < deadline:
            # (again after any reconnect: a TASK to a connection that is gone is lost on the way)
            fake.send(Command.TASK, [{"id": "after-hostile", "kind": ECHO, "payload": "still here",
                                      "project": "default", "deadline": None, "attempt": 1, "shared_write": False}])
            seen = fake.reconnects
            while entry is None and fake.reconnects == seen and time.monotonic() < deadline:
                got = fake.recv(0.1)
                if got is None:
                    continue
                command, body = got
                if command is Command.DONE:
                    entry = next((e for e in body if isinstance(e, dict) and e.get("id") == "after-hostile"), None)
                elif command is Command.HEARTBEAT:
                    fake.send(Command.HEARTBEAT)
                elif command is not Command.READY and fake.reconnects != seen:
                    fake.send(Command.DISCONNECT)
        if entry is None:
            raise CheckFailed("after the hostile messages, a valid TASK got no DONE")
        if entry.get("result") != "still here":
            raise CheckFailed(f"after the hostile messages, echo answered {entry!r:.80}")
        before = fake.heartbeats
        fake.wait_for(Command.HEARTBEAT, 2.5, lambda b: fake.heartbeats > before)
    finally:
        fake.close()
    h.start_broker()
    with h.client() as c:
        h.wait_registered(c, timeout=h.timeout + 5)
    return (f"survived {len(_hostile_messages())} hostile messages (bad frames, signature, command, msgpack, "
            f"shapes, 1,000-deep nesting, 17 MiB), then answered a TASK; heartbeats went on; "
            f"re-registered when the broker came back")


def check_drain(h: Harness) -> str:
    with h.client() as c:
        sub = c.subscribe("agent.")
        time.sleep(0.3)
        os.killpg(h.agent.pid, signal.SIGTERM)
        deadline = time.monotonic() + h.timeout
        while time.monotonic() < deadline:
            event = sub.recv(timeout=0.2)
            if event is not None and event[0] == "agent.drained":
                break
            if event is not None and event[0] == "agent.lost":
                raise CheckFailed(f"SIGTERM ended in agent.lost ({event[1].get('reason')}), not a drain")
        else:
            raise CheckFailed("no agent.drained within the timeout of SIGTERM")
        sub.close()
    try:
        code = h.agent.wait(h.timeout)
    except subprocess.TimeoutExpired:
        raise CheckFailed("the agent drained but did not exit") from None
    return f"SIGTERM: READY capacity 0, then DISCONNECT (agent.drained); exit code {code}"


CHECKS: list[tuple[str, str, Callable[[Harness], str]]] = [
    ("registration and READY", "MUST", check_registration),
    ("answers (DONE)", "MUST", check_answers),
    ("failures (FAILED)", "MUST", check_failed),
    ("retry after FAILED", "MUST", check_retry),
    ("credit", "MUST", check_credit),
    ("heartbeats, agent to broker", "MUST", check_heartbeats),
    ("CANCEL", "MUST", check_cancel),
    ("broker restart, READY running", "SHOULD", check_restart_with_running),
    ("malformed and oversize input", "MUST", check_hostile_input),
    ("drain on SIGTERM", "SHOULD", check_drain),
]


def run(agent_cmd: str, timeout: float = 10.0, out=sys.stdout, keep: bool = False) -> list[Outcome]:
    run_dir = tempfile.mkdtemp(prefix="ofc-")  # short: ipc paths are limited to ~107 bytes
    h = Harness(agent_cmd, run_dir, timeout)
    outcomes: list[Outcome] = []
    print(f"OFP/{P.PROTOCOL} conformance: {agent_cmd}", file=out, flush=True)
    try:
        h.start_broker()
        h.start_agent()
        for name, level, check in CHECKS:
            started = time.monotonic()
            try:
                detail, passed = check(h), True
            except (CheckFailed, BusError, TimeoutError) as exc:
                detail, passed = f"{type(exc).__name__}: {exc}" if not isinstance(exc, CheckFailed) else str(exc), False
            mark = "PASS" if passed else ("FAIL" if level == "MUST" else "WARN")
            print(f"  {mark}  {name:<32} {detail} ({time.monotonic() - started:.1f}s)", file=out, flush=True)
            outcomes.append(Outcome(name, level, passed, detail))
            if not passed and not h.agent_alive():
                print(f"  the agent exited ({h.agent.returncode}); stopping. Its log: {run_dir}/agent.log",
                      file=out, flush=True)
                keep = True
                break
    finally:
        h.close()
        failed = [o for o in outcomes if not o.passed and o.level == "MUST"]
        if failed:
            keep = True
        print(f"{sum(o.passed for o in outcomes)} passed, {len(failed)} failed, "
              f"{sum(not o.passed and o.level == 'SHOULD' for o in outcomes)} warnings"
              + (f"; logs in {run_dir}" if keep else ""), file=out, flush=True)
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bus.conformance", description=__doc__.split("\n\n")[0])
    ap.add_argument("--agent-cmd", required=True, help="shell command that starts the agent under test")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds each wait may take (default 10)")
    ap.add_argument("--keep", action="store_true", help="keep the broker's and the agent's logs")
    args = ap.parse_args(argv)
    if not shlex.split(args.agent_cmd):
        ap.error("--agent-cmd is empty")
    outcomes = run(args.agent_cmd, args.timeout, keep=args.keep)
    all_must = len([name for name, level, _ in CHECKS if level == "MUST"])
    ran_must = [o for o in outcomes if o.level == "MUST"]
    return 0 if len(ran_must) == all_must and all(o.passed for o in ran_must) else 1


if __name__ == "__main__":
    sys.exit(main())
