"""Client SDK: submit tasks, wait for results, cancel, tail events.

Task ids are made on the client, so a submission is idempotent: if an ack is lost
the same id can be sent again and the broker will not run it twice.  ``submit``
waits for the broker's ACCEPTED, which the broker sends only after the task is in
its journal; when nothing answers within ``ack_timeout`` the client raises
:class:`BrokerUnavailable` at once and resets its socket so the stale request is
never delivered later (the Lazy Pirate pattern).

A ``Client`` is for one thread, like the ZeroMQ socket under it; use
:class:`bus.aclient.AsyncClient` from asyncio code.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
import os
import secrets
import threading
import time
from typing import Any, Iterable, Iterator

import zmq

from . import protocol as P
from .auth import CurveCredentials, credentials_for
from .endpoints import Endpoints, ipc_path
from .events import DEFAULT_EVENT_HWM
from .errors import BrokerUnavailable, BusError, TaskFailed, TaskRejected, UnknownTask
from .protocol import Command, State

#: How often a waiting ``result`` re-registers with the broker, so a broker that
#: restarted (and forgot who was waiting) still delivers the outcome.
REFETCH_INTERVAL = 1.0
#: Submissions kept until their outcome arrives, so a task the broker lost (it
#: restarted before the journal commit) is sent again instead of reported unknown.
KEEP_SENT = 10_000
#: Submissions in flight, sent but not yet acknowledged, before ``submit()`` waits
#: for acks: the client's memory and the broker's queue stay bounded.
MAX_UNACKED = 10_000
#: ``submit()`` reads the acks that have arrived every this many submissions.
DRAIN_EVERY = 64
#: ``submit()`` sends its tasks in SUBMITs of up to this many: a loop of submits costs the
#: broker one message per batch, not per task (a third of its per-task time).
SUBMIT_BATCH = 256
#: ... and a submit() followed by nothing else leaves within this many seconds: a
#: background thread sends what is waiting.  Every other call sends it at once.
SUBMIT_LINGER = 0.0005
#: How an unacknowledged workflow is kept among the task entries (to be sent again).
WORKFLOW_ENTRY = "__workflow__"


def new_id_prefix() -> str:
    return secrets.token_hex(6)


#: What a task may ask for beside its kind and payload (PROTOCOL 4.1; bus/retry.py).
TASK_OPTIONS = ("priority", "deadline", "timeout", "max_retries", "retry", "delay", "eta")


def task_entry(task_id: str, kind: str, payload: Any, project: str | None, ack: bool = True,
               **opts: Any) -> dict[str, Any]:
    """One SUBMIT entry; the only place the client side spells task fields.

    ``opts``: priority (0..9), deadline (unix time) or timeout (seconds from now),
    retry (an int or a policy map, bus/retry.py; max_retries is its legacy form),
    delay (seconds) or eta (unix time) to run later.  An unknown option is a
    TypeError here, never a silently ignored typo."""
    unknown = set(opts) - set(TASK_OPTIONS)
    if unknown:
        raise TypeError(f"unknown task option(s) {sorted(unknown)}; known: {', '.join(TASK_OPTIONS)}")
    entry: dict[str, Any] = {"id": task_id, "kind": kind, "payload": payload}
    if not ack:
        entry["ack"] = False
    if project is not None:
        entry["project"] = project
    timeout = opts.pop("timeout", None)
    if timeout is not None:
        opts["deadline"] = time.time() + timeout
    entry.update((k, v) for k, v in opts.items() if v is not None)
    return entry


def outcome_value(outcome: dict[str, Any]) -> Any:
    if outcome.get("state") == State.DONE:
        return outcome.get("result")
    raise TaskFailed(outcome.get("id", "?"), outcome.get("state", "?"), outcome.get("error"), outcome.get("result"))


class Client:
    def __init__(self, endpoint: str | None = None, events: str | None = None, project: str = "default",
                 ack_timeout: float = 1.0, max_body: int = P.MAX_BODY, ctx: zmq.Context | None = None,
                 curve: CurveCredentials | None = None) -> None:
        """``endpoint`` is the broker's ipc front end (default: the local swarm's,
        :meth:`Endpoints.local`), or ``tcp://HOST:PORT``, which takes CURVE keys:
        ``curve``, or the files named by ORCHFLOW_KEY/ORCHFLOW_BROKER_KEY."""
        if endpoint is None:
            local = Endpoints.local()
            endpoint, events = local.frontend, events or local.events
        self.endpoint = endpoint
        self.curve = credentials_for(endpoint, curve)
        self.events_endpoint = events or Endpoints.events_beside(endpoint)
        self.project = project
        self.ack_timeout = ack_timeout
        self.max_body = max_body
        self.ctx = ctx or zmq.Context.instance()
        self._prefix = new_id_prefix()
        self._ids = itertools.count(1)
        self._outcomes: dict[str, dict[str, Any]] = {}
        self._unacked: OrderedDict[str, dict[str, Any]] = OrderedDict()  # id -> entry, until ACCEPTED
        self._rejected: dict[str, TaskRejected] = {}
        self._unknown: set[str] = set()
        self._sent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._status: dict[str, Any] | None = None
        self._manage_replies: dict[str, Any] = {}  # ref -> MANAGED result, or the TaskRejected
        self._sock: zmq.Socket | None = None
        # The socket is shared with the linger thread: every use holds this lock.
        self._io = threading.RLock()
        self._outbox: list[bytes] = []            # submit() entries, packed, not yet sent
        self._linger = threading.Event()          # set when the outbox stops being empty
        self._linger_thread: threading.Thread | None = None
        self._open()

    # ------------------------------------------------------------------ socket

    def _open(self) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.sndhwm = 100_000
        sock.rcvhwm = 100_000
        P.quick_reconnect(sock)
        if self.curve is not None:
            self.curve.apply(sock)
        sock.connect(self.endpoint)
        self._sock = sock

    def _reset(self) -> None:
        with self._io:
            if self._sock is not None:
                self._sock.close(linger=0)
            self._open()

    def close(self) -> None:
        """Close the socket.  Submissions not yet acknowledged are not waited for: call
        :meth:`flush` first (leaving a ``with`` block does)."""
        with self._io:
            if self._sock is not None:
                self._send_outbox()
                self._sock.close(linger=0)
                self._sock = None
            self._linger.set()  # the linger thread sees no socket and ends

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if exc_type is None and self._unacked and self._sock is not None:
                self.flush()  # what was submitted in the block is journaled when it ends
        finally:
            self.close()

    def _check_reachable(self) -> None:
        path = ipc_path(self.endpoint)
        if path is not None and not os.path.exists(path):
            raise BrokerUnavailable(f"no broker at {self.endpoint}: the socket file does not exist")

    def _send(self, command: Command, body: Any) -> None:
        frames = P.client_message(command, body)
        with self._io:
            if self._outbox:  # what was submitted before goes first: a CANCEL never overtakes its SUBMIT
                self._send_outbox()
            self._send_checked(frames)

    def _send_outbox(self) -> None:
        """Send the waiting submit() entries as SUBMITs (caller holds ``_io``).  They were
        packed (and their size checked) by submit(): a SUBMIT is their concatenation, cut
        so no message exceeds the limit."""
        outbox, self._outbox = self._outbox, []
        self._linger.clear()
        command = P.command_byte(Command.SUBMIT)
        group: list[bytes] = []
        size = 0
        for packed in outbox:
            if group and (len(group) == SUBMIT_BATCH or size + len(packed) + 16 > self.max_body):
                self._send_checked([P.CLIENT, command, P.packed_array(group)])
                group, size = [], 0
            group.append(packed)
            size += len(packed)
        if group:
            self._send_checked([P.CLIENT, command, P.packed_array(group)])

    def _send_checked(self, frames: list[bytes]) -> None:
        if len(frames[2]) > self.max_body:
            raise TaskRejected("too-large", f"message of {len(frames[2])} bytes exceeds the limit of {self.max_body}")
        try:
            P.send(self._sock, frames)
        except zmq.Again:
            raise BrokerUnavailable(f"cannot queue to {self.endpoint}: send buffer full, broker not reading") from None

    def _linger_loop(self) -> None:
        """Send a lone submit() that nothing else followed, SUBMIT_LINGER after it."""
        while True:
            self._linger.wait()
            time.sleep(SUBMIT_LINGER)
            if not self._linger.is_set():
                continue  # sent meanwhile by another call: no need to take the lock
            with self._io:
                self._linger.clear()
                if self._sock is None:
                    return
                if self._outbox:
                    try:
                        self._send_outbox()
                    except (BusError, zmq.ZMQError):
                        pass  # the caller's next call meets the same error, and the entries stay unacked

    def _pump(self, timeout: float) -> bool:
        """Receive whatever arrives within ``timeout`` seconds; False if nothing did."""
        with self._io:
            return self._pump_locked(timeout)

    def _pump_locked(self, timeout: float) -> bool:
        if self._outbox:
            self._send_outbox()
        if not self._sock.poll(timeout * 1000):
            return False
        sock = self._sock
        while (frames := P.try_recv(sock)) is not None:
            try:
                command, body = P.parse(frames, P.CLIENT)
            except P.ProtocolError:
                continue  # never let a bad reply take the caller down
            if command is Command.ACCEPTED:
                unacked = self._unacked
                for task_id in body or ():
                    unacked.pop(task_id, None)
            elif command is Command.RESULT:
                for outcome in body or ():
                    if isinstance(outcome, dict) and isinstance(outcome.get("id"), str):
                        self._outcomes[outcome["id"]] = outcome
                        self._sent.pop(outcome["id"], None)
                        self._unacked.pop(outcome["id"], None)  # a RESULT follows the commit: an ack
            elif command is Command.STATUS_REPLY:
                self._status = body
            elif command is Command.MANAGED and isinstance(body, dict) and isinstance(body.get("ref"), str):
                self._manage_replies[body["ref"]] = body.get("result")
            elif command is Command.ERROR and isinstance(body, dict):
                ids = body.get("ids") or []
                if isinstance(body.get("ref"), str):
                    self._manage_replies[body["ref"]] = TaskRejected(body.get("code", "error"),
                                                                     body.get("message", ""))
                elif body.get("code") == "unknown-task":
                    self._unknown.update(ids)
                else:
                    err = TaskRejected(body.get("code", "error"), body.get("message", ""))
                    for task_id in ids or ["*"]:
                        self._rejected[task_id] = err
        return True

    # ------------------------------------------------------------------ tasks

    def _remember(self, entries: list[dict[str, Any]]) -> None:
        sent = self._sent
        for entry in entries[-KEEP_SENT:]:
            sent[entry["id"]] = entry
        while len(sent) > KEEP_SENT:
            sent.popitem(last=False)

    def _resubmit(self, ids: list[str]) -> None:
        """Send again what the broker says it does not know: it lost the submission
        (restart before its journal commit).  Ids make this idempotent; what we no
        longer hold raises :class:`UnknownTask`."""
        missing = [i for i in ids if i not in self._sent]
        if missing:
            raise UnknownTask(missing[0])
        entries = [dict(self._sent[i], ack=False) for i in ids]  # the RESULT is the answer
        for start in range(0, len(entries), 1000):
            self._send(Command.SUBMIT, entries[start:start + 1000])

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    def submit_nowait(self, kind: str, payload: Any = None, *, project: str | None = None,
                      task_id: str | None = None, ack: bool = True, **opts: Any) -> str:
        """Send one task and return its id at once: the broker journals it and its
        ACCEPTED arrives later (:meth:`flush`, :meth:`wait_accepted`).  ``opts``:
        :data:`TASK_OPTIONS` (priority, timeout, retry, delay, ...)."""
        task_id = task_id or self.new_id()
        entry = task_entry(task_id, kind, payload, project or self.project, ack, **opts)
        if not ack:  # call(): its caller waits for it now, so it leaves now (after what waits before it)
            self._send(Command.SUBMIT, [entry])
            self._remember([entry])
            return task_id
        packed = P.pack(entry)
        if len(packed) + 16 > self.max_body:  # refused here and now, not by a later call or the linger thread
            raise TaskRejected("too-large", f"task of {len(packed)} bytes exceeds the limit of {self.max_body}")
        with self._io:
            outbox = self._outbox
            outbox.append(packed)
            if len(outbox) >= SUBMIT_BATCH:
                self._send_outbox()
            elif len(outbox) == 1:
                if self._linger_thread is None:
                    self._linger_thread = threading.Thread(target=self._linger_loop, name="orchflow-submit",
                                                           daemon=True)
                    self._linger_thread.start()
                self._linger.set()
        self._remember([entry])
        unacked = self._unacked
        unacked[task_id] = entry
        if len(unacked) % DRAIN_EVERY == 0:
            self._drain_replies()
            if len(unacked) >= MAX_UNACKED:  # backpressure: wait until half are in
                self._await_acks(list(itertools.islice(unacked, MAX_UNACKED // 2)), None)
        return task_id

    def submit(self, kind: str, payload: Any = None, **opts: Any) -> str:
        """Submit one task and return its id at once, as Ray's ``.remote()`` does.

        Durability is kept, asynchronously: the broker journals the task (a group
        commit shares one fsync among all that arrive together) and acknowledges it;
        this client keeps what is not yet acknowledged and sends it again if the
        broker lost it.  :meth:`flush` waits for every acknowledgement (and raises
        the broker's refusal, if any); :meth:`result` and leaving a ``with`` block
        imply it."""
        self._check_reachable()
        return self.submit_nowait(kind, payload, **opts)

    def submit_many(self, kind: str, payloads: Iterable[Any], **opts: Any) -> list[str]:
        """Submit a batch as one message and one journal transaction, and wait for its ack."""
        self._check_reachable()
        project = opts.pop("project", None) or self.project
        entries = [task_entry(self.new_id(), kind, p, project, **opts) for p in payloads]
        self._send(Command.SUBMIT, entries)
        self._remember(entries)
        ids = [e["id"] for e in entries]
        self._unacked.update((e["id"], e) for e in entries)
        self.wait_accepted(ids)
        return ids

    def flush(self, timeout: float | None = None) -> None:
        """Wait until the broker has journaled every task submitted so far.

        Raises :class:`TaskRejected` for a submission it refused, and
        :class:`BrokerUnavailable` if no acknowledgement comes for ``ack_timeout``
        seconds even after sending the rest again."""
        self._await_acks(None, timeout)

    def wait_accepted(self, ids: list[str], timeout: float | None = None) -> None:
        """Wait until the broker has journaled these tasks (see :meth:`flush`)."""
        self._await_acks(ids, timeout)

    def _drain_replies(self) -> None:
        with self._io:
            if self._sock.poll(0):
                self._pump_locked(0)

    def _await_acks(self, ids: list[str] | None, timeout: float | None) -> None:
        """Wait for the ACCEPTED of ``ids`` (None: everything unacknowledged).  The
        limit is on silence, not on total time: a broker journaling a long backlog
        keeps the wait alive; one that answers nothing for ``ack_timeout`` seconds is
        sent the missing submissions again once (ids make that idempotent), then given up on."""
        unacked = self._unacked
        pending = list(unacked) if ids is None else [i for i in ids if i in unacked]
        limit = None if timeout is None else time.monotonic() + timeout
        quiet_since, resent = time.monotonic(), False
        done = 0  # pending[:done] are acknowledged: acks come mostly in order, so this pointer
        while True:  # walks the list once instead of rescanning it after every read
            while done < len(pending) and pending[done] not in unacked:
                done += 1
            if done == len(pending):
                return
            if self._rejected:
                self._raise_rejected(pending[done:])
            now = time.monotonic()
            expired = limit is not None and now >= limit
            if expired or now - quiet_since >= self.ack_timeout:
                left = [i for i in pending[done:] if i in unacked]
                if expired:
                    raise BrokerUnavailable(f"{len(left)} submissions not acknowledged within {timeout:.1f}s")
                if resent:
                    self._reset()
                    raise BrokerUnavailable(f"no broker acknowledged {len(left)} submissions at "
                                            f"{self.endpoint} within {self.ack_timeout:.1f}s")
                self._resend(left)
                quiet_since, resent = now, True
            before = len(unacked)
            self._pump(min(0.05, self.ack_timeout))
            if len(unacked) < before:  # the broker is answering
                quiet_since, resent = time.monotonic(), False

    def _raise_rejected(self, pending: list[str]) -> None:
        if not self._rejected:
            return
        for task_id in pending:
            err = self._rejected.pop(task_id, None)
            if err is not None:
                self._unacked.pop(task_id, None)
                raise err
        err = self._rejected.pop("*", None)
        if err is not None:  # refused without ids (a revoked identity): the waited-for ones were refused
            for task_id in pending:
                self._unacked.pop(task_id, None)
            raise err

    def _resend(self, ids: list[str]) -> None:
        entries = [self._unacked[i] for i in ids]
        for workflow in [e[WORKFLOW_ENTRY] for e in entries if WORKFLOW_ENTRY in e]:
            self._send(Command.WORKFLOW, workflow)
        entries = [e for e in entries if WORKFLOW_ENTRY not in e]
        for start in range(0, len(entries), 1000):
            self._send(Command.SUBMIT, entries[start:start + 1000])

    def outcome(self, task_id: str, timeout: float | None = None, probe_after: float | None = None) -> dict[str, Any]:
        """Wait for the task's final state and return its RESULT entry.

        With ``probe_after`` (seconds), a task submitted with ``ack=False`` is
        checked with STATUS if no result came by then, so a dead broker still
        fails fast with :class:`BrokerUnavailable`: that is how :meth:`call`
        saves the ACCEPTED message on the fast path.
        """
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        # An id this client did not submit (``orchflow result ID``): ask at once.
        next_fetch = now + REFETCH_INTERVAL if task_id in self._sent else now
        probe = None if probe_after is None else now + probe_after
        while task_id not in self._outcomes:
            if task_id in self._unknown:
                self._unknown.discard(task_id)
                self._resubmit([task_id])
            err = self._rejected.pop(task_id, None)
            if err is not None:
                self._unacked.pop(task_id, None)
                raise err
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise TimeoutError(f"task {task_id} not finished within {timeout}s")
            if probe is not None and now >= probe:
                probe = None
                known = self.status([task_id]).get("tasks", {}).get(task_id)
                if known is None:
                    self._resubmit([task_id])
                next_fetch = time.monotonic() + REFETCH_INTERVAL
            elif now >= next_fetch:
                self._send(Command.FETCH, {"ids": [task_id]})
                next_fetch = now + REFETCH_INTERVAL
            wake = next_fetch if deadline is None else min(next_fetch, deadline)
            if probe is not None:
                wake = min(wake, probe)
            self._pump(max(wake - now, 0.0))
        return self._outcomes.pop(task_id)

    def result(self, task_id: str, timeout: float | None = None) -> Any:
        """The task's result; raises :class:`TaskFailed` if it failed, expired or was cancelled."""
        return outcome_value(self.outcome(task_id, timeout))

    def results(self, ids: list[str], timeout: float | None = None) -> list[dict[str, Any]]:
        """Outcomes of many tasks, in the order of ``ids``.

        Waiting ids are re-registered in bulk every :data:`REFETCH_INTERVAL`, so
        a broker restart mid-wait costs one FETCH round, not one per task.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        next_fetch = time.monotonic() + REFETCH_INTERVAL
        outcomes = self._outcomes
        done = 0  # ids[:done] have their outcome: results mostly arrive in order, so this
        while True:  # pointer walks the list once, instead of rescanning it after every read
            while done < len(ids) and ids[done] in outcomes:
                done += 1
            if done == len(ids):
                break
            if self._unknown:
                unknown = [i for i in ids[done:] if i in self._unknown]
                if unknown:
                    self._unknown.difference_update(unknown)
                    self._resubmit(unknown)
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                left = sum(1 for i in ids[done:] if i not in outcomes)
                raise TimeoutError(f"{left} of {len(ids)} tasks not finished within {timeout}s")
            if now >= next_fetch:
                pending = [i for i in ids[done:] if i not in outcomes]
                for start in range(0, len(pending), 5000):
                    self._send(Command.FETCH, {"ids": pending[start:start + 5000]})
                next_fetch = now + REFETCH_INTERVAL
            wake = next_fetch if deadline is None else min(next_fetch, deadline)
            self._pump(max(wake - now, 0.0))
        return [self._outcomes.pop(i) for i in ids]

    def call(self, kind: str, payload: Any = None, timeout: float | None = None, **opts: Any) -> Any:
        """Submit and wait: the one-line RPC.  The RESULT doubles as the ack."""
        self._check_reachable()
        task_id = self.submit_nowait(kind, payload, ack=False, **opts)
        return outcome_value(self.outcome(task_id, timeout, probe_after=self.ack_timeout))

    def submit_workflow(self, steps: list[dict[str, Any]], strategy: str = "parallel",
                        workflow_id: str | None = None, project: str | None = None) -> str:
        """Submit a DAG of steps (``name``, ``kind``, ``payload``, ``deps``, ``retries``...);
        returns its id once journaled.  ``result(id)`` gives ``{step: result}``."""
        self._check_reachable()
        workflow_id = workflow_id or f"wf-{self.new_id()}"
        body = {"id": workflow_id, "strategy": strategy, "project": project or self.project, "steps": steps}
        self._send(Command.WORKFLOW, body)
        self._unacked[workflow_id] = {WORKFLOW_ENTRY: body}
        self.wait_accepted([workflow_id])
        return workflow_id

    def cancel(self, *ids: str) -> None:
        self._check_reachable()
        self._send(Command.CANCEL, {"ids": list(ids)})

    def status(self, ids: list[str] | None = None, timeout: float | None = None) -> dict[str, Any]:
        self._check_reachable()
        self._status = None
        self._send(Command.STATUS, {"ids": ids or []})
        deadline = time.monotonic() + (timeout or self.ack_timeout)
        while self._status is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self._reset()
                raise BrokerUnavailable(f"no broker answered STATUS at {self.endpoint}")
            self._pump(left)
        return self._status

    # ------------------------------------------------------------------ management

    def manage(self, op: str, timeout: float | None = None, **fields: Any) -> Any:
        """One MANAGE request (PROTOCOL 4.4): its result, or TaskRejected if refused."""
        self._check_reachable()
        ref = self.new_id()
        self._send(Command.MANAGE, {"op": op, "ref": ref, **{k: v for k, v in fields.items() if v is not None}})
        deadline = time.monotonic() + (timeout or max(self.ack_timeout, 5.0))
        while ref not in self._manage_replies:
            left = deadline - time.monotonic()
            if left <= 0:
                self._reset()
                raise BrokerUnavailable(f"no broker answered MANAGE {op} at {self.endpoint}")
            self._pump(left)
        reply = self._manage_replies.pop(ref)
        if isinstance(reply, TaskRejected):
            raise reply
        return reply

    def tasks(self, state: str | None = None, kind: str | None = None, project: str | None = None,
              limit: int = 100) -> list[dict[str, Any]]:
        """Live and recently finished tasks, newest first (``state='failed'``: the dead letters)."""
        return self.manage("tasks", state=state, kind=kind, project=project, limit=limit)

    def purge(self, kind: str, project: str | None = None) -> int:
        """Cancel every queued task of ``kind``; returns how many."""
        return self.manage("purge", kind=kind, project=project)["purged"]

    def requeue(self, *ids: str) -> dict[str, str]:
        """Run failed, cancelled or expired tasks again as new tasks: old id -> new id."""
        return self.manage("requeue", ids=list(ids))["requeued"]

    def schedule(self, name: str, cron: str, kind: str, payload: Any = None, *, priority: int | None = None,
                 retry: Any = None, project: str | None = None) -> dict[str, Any]:
        """A durable periodic task (bus/schedules.py); the same name replaces it."""
        return self.manage("schedule.add", name=name, cron=cron, kind=kind, payload=payload, priority=priority,
                           retry=retry, project=project or self.project)

    def schedules(self) -> list[dict[str, Any]]:
        return self.manage("schedule.list")

    def unschedule(self, name: str, project: str | None = None) -> bool:
        return self.manage("schedule.remove", name=name, project=project or self.project)["removed"]

    # ------------------------------------------------------------------ events

    def subscribe(self, *topics: str) -> "Subscription":
        if not self.events_endpoint:
            raise BusError("no events endpoint known; pass events= to Client")
        if self.events_endpoint.startswith("tcp://"):  # remote events name their project
            return Subscription(self.ctx, self.events_endpoint, topics, curve=self.curve,
                                project=self.project)
        return Subscription(self.ctx, self.events_endpoint, topics)


#: Topics of :meth:`Subscription.wait_live` probes; no real event starts with it.
PROBE_PREFIX = b"orchflow.probe."


class Subscription:
    """Iterator of ``(topic, body)`` events; prefix-matched topics, all if none given."""

    def __init__(self, ctx: zmq.Context, endpoint: str, topics: Iterable[str],
                 curve: CurveCredentials | None = None, project: str | None = None) -> None:
        """Over TCP (``project`` given) topics travel as ``<project>\\x00<topic>``
        (bus/remote_events.py); the prefix is added here and taken off each event."""
        self.sock = ctx.socket(zmq.SUB)
        self.sock.linger = 0
        self.sock.rcvhwm = DEFAULT_EVENT_HWM  # bounded like the broker's side: a slow reader drops, never bloats
        if curve is not None:
            curve.apply(self.sock)
        self.sock.connect(endpoint)
        self._prefix = b"" if project is None else project.encode() + b"\x00"
        self._early: list[list[bytes]] = []  # events read while waiting for a probe
        topics = list(topics) or [""]
        for topic in topics:
            self.sock.subscribe(self._prefix + topic.encode())

    def wait_live(self, events_in: str, timeout: float = 2.0) -> bool:
        """Block until the event proxy holds this subscription, so nothing published
        after this returns is missed (ZeroMQ's slow joiner).  A private probe topic goes
        out through ``events_in`` until it comes back: subscriptions travel in order, so
        by then the proxy has every topic asked before it.  False if it never came."""
        probe = PROBE_PREFIX + secrets.token_hex(8).encode()
        self.sock.subscribe(probe)
        pub = self.sock.context.socket(zmq.PUB)
        pub.linger = 0
        pub.connect(events_in)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                pub.send_multipart([probe, P.pack(None)])
                while self.sock.poll(10):
                    frames = self.sock.recv_multipart()
                    if frames[0] == probe:
                        return True
                    self._early.append(frames)  # a real event that came first: kept for recv
            return False
        finally:
            pub.close(linger=0)
            self.sock.unsubscribe(probe)

    def recv(self, timeout: float | None = None) -> tuple[str, Any] | None:
        while True:
            if self._early:
                frames = self._early.pop(0)
            elif timeout is not None and not self.sock.poll(timeout * 1000):
                return None
            else:
                frames = self.sock.recv_multipart()
            if not frames[0].startswith(PROBE_PREFIX):  # skip probes: others' (all topics), our late copies
                break
        if self._prefix and frames[0].startswith(self._prefix):
            frames[0] = frames[0][len(self._prefix):]
        try:
            return frames[0].decode(errors="replace"), P.unpack(frames[1])
        except Exception:  # a third-party publisher sent junk: surface it, don't die
            return frames[0].decode(errors="replace"), {"malformed": True, "frames": len(frames)}

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        while True:
            event = self.recv()
            if event is not None:
                yield event

    def close(self) -> None:
        self.sock.close(linger=0)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
