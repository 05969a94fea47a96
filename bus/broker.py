"""The task broker: ROUTER front end for clients, ROUTER back end for agents.

One thread, one poll loop.  Each turn drains what is readable (bounded, so one
noisy peer cannot starve the rest), stages journal records, commits them once
(group commit), then sends acknowledgements and results, dispatches queued tasks
by credit, and flushes one batched TASK message per agent.  Nothing in the loop
blocks: every send is NOBLOCK and a peer that cannot take it loses the message,
which is safe because results stay retrievable with FETCH and tasks are re-queued
by the heartbeat rules.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import zmq

from . import protocol as P
from .agent_record import AgentRecord
from .auth import UNRESTRICTED_LOCAL, Gatekeeper, KeyRing, Principal
from .endpoints import Endpoints
from .errors import ProtocolError
from .events import DEFAULT_EVENT_HWM, EventProxy, EventPublisher
from .journal import Journal, MemoryJournal
from .lifecycle import Hooks, Middleware
from .manage import Manager
from . import middleware as standard_middleware
from .middleware.outcomes import OutcomeRecording
from .outcomes import OutcomeRecorder
from .protocol import Command, State
from .queue import KindQueue
from .routing import LeastLoaded, Router
from .schedules import Scheduler
from .task import Task, outcome_of_record, restored_task
from . import retry as retry_policy
from .workflow import WORKFLOW_KIND, WorkflowEngine

log = logging.getLogger("orchflow.broker")

#: Messages read from one socket per loop turn before the others get a go.
DRAIN_BATCH = 512
#: Records nobody waits on (a call()'s submission and end) are committed within this many
#: seconds, or with the next turn that must commit, or once this many are waiting.
LAZY_COMMIT = 0.005
LAZY_COMMIT_RECORDS = 1000
#: Finished tasks kept in memory for fast FETCH; older ones are read from the journal.
#: 100,000 kept cost the broker ~45 MiB; 10,000 ~4.5 MiB (#14).
RECENT_TASKS = 10_000
_RESULTS = (Command.DONE, Command.FAILED, Command.PROGRESS)


@dataclass
class BrokerConfig:
    frontend: str
    backend: str
    events_in: str
    events_out: str
    heartbeat_interval: float = 1.0
    heartbeat_liveness: int = 3
    max_body: int = P.MAX_BODY
    event_hwm: int = DEFAULT_EVENT_HWM
    result_ttl: float = 3600.0
    unserved_grace: float | None = None  # fail queued tasks of a kind no agent served for this long
    compact_interval: float = 60.0
    backend_tcp: str | None = None   # remote agents, tcp+CURVE; only when asked for
    frontend_tcp: str | None = None  # remote clients, tcp+CURVE
    events_tcp: str | None = None    # remote event subscribers, tcp+CURVE, per-project topics
    keys_home: str | None = None     # $ORCHFLOW_HOME whose keys/ names every identity (needed for tcp)
    retrain_interval: float = 30.0  # learned routing: at most this often, ask the neural pool to retrain
    retrain_min_outcomes: int = 50  # ... and only when this many new outcomes were recorded

    @classmethod
    def in_directory(cls, run_dir: str, **kw: Any) -> "BrokerConfig":
        """ipc endpoints in one private directory: the default, loopback-only layout."""
        ep = Endpoints.in_directory(run_dir)
        return cls(frontend=ep.frontend, backend=ep.backend, events_in=ep.events_in, events_out=ep.events, **kw)


@dataclass
class Counters:
    submitted: int = 0
    duplicates: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0
    retried: int = 0
    agents_joined: int = 0
    agents_lost: int = 0      # vanished (heartbeat), revoked, or disconnected with work in flight
    agents_drained: int = 0   # disconnected cleanly, nothing in flight (drain, stop)
    malformed_frontend: int = 0
    malformed_backend: int = 0
    late_results: int = 0
    workflows: int = 0
    quarantined: int = 0      # journal records replay could not restore (kept, see journal.quarantined())
    router_errors: int = 0    # routing-model failures answered by least-loaded
    oversize: int = 0         # tasks failed because an assignment or a result exceeded a limit
    lease_expired: int = 0    # in-flight tasks requeued because their agent no longer listed them
    forbidden: int = 0        # requests refused because the sender's identity may not make them
    unassigned_results: int = 0  # DONE/FAILED/PROGRESS for a task the sender does not hold
    internal_errors: int = 0  # messages the broker failed on (a bug; logged with its traceback)


class Broker:
    def __init__(self, config: BrokerConfig, journal: Journal | None = None,
                 router: Router | None = None, ctx: zmq.Context | None = None,
                 outcomes: "OutcomeRecorder | None" = None, middleware: list[Middleware] | None = None) -> None:
        self.config = config
        self.journal = journal if journal is not None else MemoryJournal()  # an empty journal is falsy
        self.router = router if router is not None else LeastLoaded()
        self.router.bind(self)
        self.ctx = ctx or zmq.Context.instance()
        self.counters = Counters()
        self.tasks: dict[str, Task] = {}          # live tasks, not yet final
        self.recent: dict[str, Task] = {}         # final tasks kept for fast FETCH
        self.queues: dict[str, KindQueue] = {}
        self.agents: dict[bytes, AgentRecord] = {}
        self.by_kind: dict[str, list[AgentRecord]] = {}
        self._deadlines: list[tuple[float, int, str]] = []
        self._delayed: list[tuple[float, int, str]] = []  # (not_before, seq, id) of held tasks
        self._waiting: set[str] = set()                  # ids held in _delayed, in no queue
        self._unserved_since: dict[str, float] = {}      # kind -> since when it has queued work and no agent
        self._next_unserved_check = 0.0
        self._seq = itertools.count()
        self._dirty: set[str] = set()
        # Replies to requests, sent after the turn's commit in the order the requests came
        # (PROTOCOL 4.4); a 1.0 ACCEPTED stays open to the ids of the same client's next SUBMITs.
        self._replies: list[tuple[zmq.Socket, bytes, Command, Any]] = []
        self._open_acks: dict[bytes, list[str]] = {}
        self._results: dict[bytes, list[dict]] = {}
        self._early_results: dict[bytes, list[dict]] = {}  # for call()ers: sent before the commit
        self._assign: dict[bytes, list[dict]] = {}
        self._stop = threading.Event()
        self._id_prefix = f"{os.getpid():x}{int(time.time()) & 0xFFFFFF:x}"
        self._id_counter = itertools.count(1)
        self.started = time.time()
        self._bound = False
        self.workflow_engine = WorkflowEngine(self)
        self.scheduler = Scheduler(self.journal, self)
        self.manager = Manager(self, self.scheduler)
        # The features around a task's life (bus/lifecycle.py, bus/middleware/): events and
        # the retry policy always; outcome records when learned routing has a store; then
        # whatever the caller adds (metrics).
        features = standard_middleware.standard()
        if outcomes is not None:
            features.append(OutcomeRecording(outcomes, config.retrain_interval, config.retrain_min_outcomes,
                                             learns=getattr(self.router, "learns", False)))
        self.hooks = Hooks(features + list(middleware or ()))
        self._fallback_router = LeastLoaded()
        self._told_to_register: dict[bytes, float] = {}  # identity -> when we last sent it DISCONNECT
        self._lazy_since: float | None = None  # when records began waiting for a commit no reply forced
        self._announced_unserved: set[str] = set()  # kinds kind.unserved was published for
        self._trim_recent_at = RECENT_TASKS  # when ``recent`` is next trimmed
        remote = config.frontend_tcp or config.backend_tcp or config.events_tcp
        if remote and not config.keys_home:
            raise ValueError("tcp endpoints need keys_home: identities decide who may connect")
        self.keyring = KeyRing(config.keys_home) if config.keys_home else None
        self.gate = Gatekeeper(self.keyring) if self.keyring is not None else None
        self.remote_events = None
        self._stamped: set[zmq.Socket] = set()  # sockets with a TCP listener: messages carry a ZAP User-Id

    # ------------------------------------------------------------------ setup

    def bind(self) -> None:
        cfg = self.config
        self.frontend = self._router_socket(cfg.frontend)
        self.backend = self._router_socket(cfg.backend)
        if self.gate is not None:  # CURVE only, on listeners of their own; ipc stays as bound
            if cfg.frontend_tcp:
                self.gate.bind_tcp(self.frontend, cfg.frontend_tcp)
                self._stamped.add(self.frontend)
            if cfg.backend_tcp:
                self.gate.bind_tcp(self.backend, cfg.backend_tcp)
                self._stamped.add(self.backend)
        self.proxy = EventProxy(cfg.events_in, cfg.events_out, cfg.event_hwm)
        self.proxy.start()
        self.events = EventPublisher(self.proxy.ctx, self.proxy.inproc, cfg.event_hwm)  # inproc: same context
        if cfg.events_tcp and self.gate is not None:
            from .remote_events import RemoteEvents
            self.remote_events = self.events.remote = RemoteEvents(self.ctx, cfg.events_tcp, self.gate,
                                                                   cfg.event_hwm)
        self.hooks.attach(self)
        self._replay()
        self._bound = True
        log.info("broker serving clients at %s, agents at %s, events at %s%s; %s journal, %d features (%s)",
                 cfg.frontend, cfg.backend, cfg.events_out,
                 "; tcp+CURVE " + ", ".join(e for e in (cfg.frontend_tcp, cfg.backend_tcp, cfg.events_tcp) if e)
                 if self.gate is not None and (cfg.frontend_tcp or cfg.backend_tcp) else "",
                 type(self.journal).__name__, len(self.hooks.middleware),
                 ", ".join(type(m).__name__ for m in self.hooks.middleware))

    def _router_socket(self, endpoint: str) -> zmq.Socket:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.maxmsgsize = P.MAX_FRAME
        sock.router_mandatory = True  # unreachable peers raise instead of silently queueing
        sock.sndhwm = 100_000
        sock.rcvhwm = 100_000
        if endpoint.startswith("ipc://"):
            os.makedirs(os.path.dirname(endpoint[6:]) or ".", mode=0o700, exist_ok=True)
        sock.bind(endpoint)
        return sock

    def _replay(self) -> None:
        """Rebuild queues from the journal: unfinished tasks run again (at-least-once).

        A record that cannot be restored is quarantined (kept aside in the journal,
        counted in status) and the rest replays: one bad row must not keep the swarm
        down, which is what a crash here would do on every restart."""
        requeued = 0
        workflows = []
        for rec in self.journal.replay():
            try:
                task = restored_task(rec)
            except Exception as exc:  # noqa: BLE001 - any malformed row: set it aside
                self._quarantine(rec, f"{type(exc).__name__}: {exc}")
                continue
            if task.state in State.FINAL:
                if task.state != State.DONE and len(self.recent) < 50_000:
                    self.recent[task.id] = task  # the dead letters stay listable (MANAGE tasks)
                continue
            if task.kind == WORKFLOW_KIND:
                workflows.append(task)  # after their steps' tasks are back
                continue
            task.state = State.QUEUED
            self._enqueue(task)
            requeued += 1
        for record in workflows:
            try:
                self.workflow_engine.restore(record)
            except Exception as exc:  # noqa: BLE001
                self.workflow_engine.forget(record.id)
                self.tasks.pop(record.id, None)
                self._quarantine(record.to_record(), f"workflow not restorable: {type(exc).__name__}: {exc}")
        self.counters.quarantined = len(self.journal.quarantined())
        self.journal.commit()
        if requeued or workflows:
            log.info("replayed %d unfinished tasks and %d workflows from the journal", requeued, len(workflows))

    def _quarantine(self, rec: Any, reason: str) -> None:
        task_id = rec.get("id") if isinstance(rec, dict) else None
        log.error("journal record %r quarantined: %s", task_id, reason)
        if isinstance(task_id, str):
            self.journal.quarantine(task_id, reason)

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        """Serve until :meth:`stop` is called (from any thread or a signal handler)."""
        if not self._bound:
            self.bind()
        poller = zmq.Poller()
        poller.register(self.frontend, zmq.POLLIN)
        poller.register(self.backend, zmq.POLLIN)
        poller.register(self.events.sock, zmq.POLLIN)
        if self.remote_events is not None:
            poller.register(self.remote_events.sock, zmq.POLLIN)
        monitors = self.gate.monitors if self.gate is not None else []
        for mon in monitors:
            poller.register(mon, zmq.POLLIN)
        # Liveness is checked ten times per heartbeat interval, so a silent agent is
        # declared lost at most interval/10 after its liveness window closes.
        tick = self.config.heartbeat_interval / 10
        next_tick = time.monotonic() + tick
        next_compact = time.monotonic() + self.config.compact_interval
        try:
            while not self._stop.is_set():
                now_m = time.monotonic()
                wake = min(next_tick, self._next_deadline_monotonic(now_m))
                if self._lazy_since is not None:  # records waiting for a commit nobody forced
                    wake = min(wake, self._lazy_since + LAZY_COMMIT)
                timeout = max(0.0, wake - now_m)
                # Whole milliseconds, rounded up: libzmq takes an integer, and 0.4 ms would be
                # 0, a busy spin until the deadline (a stream of tasks with deadlines always
                # has one due within a millisecond: that spin cost ~250 µs of CPU per call()).
                ready = dict(poller.poll(math.ceil(min(timeout, 0.25) * 1000)))
                if self.events.sock in ready:
                    self.events.on_subscription()
                if self.remote_events is not None and self.remote_events.sock in ready:
                    self.remote_events.on_subscription()
                for mon in monitors:
                    if mon in ready:
                        self.gate.on_monitor(mon)
                if self.frontend in ready:
                    self._drain(self.frontend, self._on_client)
                if self.backend in ready:
                    self._drain(self.backend, self._on_agent)
                now_m = time.monotonic()
                if self._deadlines:
                    self._expire(time.time())
                if self._delayed:
                    self._release_due(time.time())
                if self.scheduler.next_due() <= time.time():
                    self.scheduler.fire_due()
                if now_m >= next_tick:
                    if self.keyring is not None:
                        self.keyring.refresh()  # `orchflow keys revoke` takes effect within a second
                    self._heartbeat(now_m)
                    for hook in self.hooks.tick:
                        hook(now_m)
                    if self.config.unserved_grace is not None and now_m >= self._next_unserved_check:
                        self._fail_unserved()
                        self._next_unserved_check = now_m + 1.0
                    next_tick = now_m + tick
                if now_m >= next_compact:
                    self._compact()
                    next_compact = now_m + self.config.compact_interval
                self._flush()
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        if self._bound:
            c = self.counters
            log.info("broker stopping after %.0fs: %d submitted, %d done, %d failed, %d cancelled, %d expired; "
                     "%d live tasks stay in the journal", time.time() - self.started, c.submitted, c.done, c.failed,
                     c.cancelled, c.expired, len(self.tasks))
        try:
            self.journal.commit()
            for hook in self.hooks.close:
                hook()
        finally:
            if self._bound:
                if self.remote_events is not None:
                    self.remote_events.close()
                if self.gate is not None:
                    self.gate.close()
                self.events.close()
                self.proxy.stop()
                self.frontend.close(linger=0)
                self.backend.close(linger=0)
                self._bound = False
            self.journal.close()

    def _drain(self, sock: zmq.Socket, handler) -> None:
        """Read up to DRAIN_BATCH messages, each with the Principal that sent it: over
        TCP the ZAP User-Id libzmq stamped on it, over ipc the local user.  A socket
        with no TCP listener skips asking each message (a failed lookup costs 2 µs)."""
        if sock not in self._stamped:
            try_recv = P.try_recv
            who = UNRESTRICTED_LOCAL if self.gate is None else self.gate.principal_of(None)
            for _ in range(DRAIN_BATCH):
                frames = try_recv(sock)
                if frames is None:
                    return
                handler(frames, who)
            return
        try_recv_with_user, principal_of = P.try_recv_with_user, self.gate.principal_of
        for _ in range(DRAIN_BATCH):
            got = try_recv_with_user(sock)
            if got is None:
                return
            frames, user = got
            handler(frames, principal_of(user))

    def _next_deadline_monotonic(self, now_m: float) -> float:
        """When the loop must wake next for a deadline or a delayed task coming due."""
        due = min(self._deadlines[0][0] if self._deadlines else math.inf,
                  self._delayed[0][0] if self._delayed else math.inf,
                  self.scheduler.next_due())
        if due == math.inf:
            return now_m + 3600
        return now_m + max(0.0, due - time.time())

    def _release_due(self, now: float) -> None:
        """Delayed and backing-off tasks whose time has come join their kind's queue."""
        while self._delayed and self._delayed[0][0] <= now:
            _, _, task_id = heapq.heappop(self._delayed)
            task = self.tasks.get(task_id)
            if task_id not in self._waiting or task is None or task.not_before is None or task.not_before > now:
                continue  # finished meanwhile, or held again for later (it has another entry)
            self._waiting.discard(task_id)
            self._push(task, front=task.attempts > 0)  # a retry keeps its place at the front

    # ------------------------------------------------------------------ clients

    def _on_client(self, frames: list[bytes], who: Principal | None) -> None:
        identity = frames[0]
        body = None
        try:
            if who is None or not who.is_client:
                raise self._forbidden("this identity was revoked" if who is None
                                      else f"identity {who.name!r} is an agent key, not a client key")
            command, body = P.parse(frames[1:], P.CLIENT, P.CLIENT_COMMANDS, self.config.max_body)
            if command is Command.SUBMIT:
                self._on_submit(identity, body, who)
            elif command is Command.CANCEL:
                self._on_cancel(identity, *P.parse_id_list(body, "CANCEL"), who)
            elif command is Command.FETCH:
                self._on_fetch(identity, *P.parse_id_list(body, "FETCH"), who)
            elif command is Command.STATUS:
                ids, req = P.parse_id_list(body, "STATUS")
                reply = self.status(ids, who)
                if req is not None:
                    reply["req"] = req
                self._reply(self.frontend, identity, Command.STATUS_REPLY, reply)
            elif command is Command.WORKFLOW:
                self._on_workflow(identity, body, who)
            elif command is Command.MANAGE:
                op, request = P.parse_manage(body)
                reply = {"op": op, "result": self.manager.handle(op, request, who)}
                if (ref := P.manage_ref(request)) is not None:
                    reply["ref"] = ref
                if "req" in request:
                    reply["req"] = request["req"]
                self._reply(self.frontend, identity, Command.MANAGED, reply)
        except ProtocolError as exc:
            if exc.code != "forbidden":
                self.counters.malformed_frontend += 1
            self._reply(self.frontend, identity, Command.ERROR, self._client_error(exc, body))
        except Exception:  # noqa: BLE001 - defence in depth: one message's bug must not end the broker
            self._internal_error(self.frontend, identity, "client")

    def _client_error(self, exc: ProtocolError, body: Any) -> dict[str, Any]:
        """The ERROR for a refused request: its ``req``, and the ids it names, so a
        pipelining client knows which request and which tasks were refused."""
        entries = body.get("tasks") if isinstance(body, dict) else body
        ids = None
        if isinstance(entries, list):  # a SUBMIT's tasks
            ids = [e["id"] for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]
        elif isinstance(body, dict) and isinstance(body.get("id"), str):  # a WORKFLOW
            ids = [body["id"]]
        error = P.error_body(exc.code, exc.message, ids, P.manage_ref(body))
        if (req := P.request_req(body)) is not None:
            error["req"] = req
        return error

    def _reply(self, sock: zmq.Socket, identity: bytes, command: Command, body: Any) -> None:
        """Queue a reply; replies leave after the turn's commit, in request order."""
        self._replies.append((sock, identity, command, body))
        if sock is self.frontend:
            self._open_acks.pop(identity, None)

    def _ack(self, identity: bytes, task_id: str) -> None:
        """A 1.0 acknowledgement: joins the ACCEPTED of this client's previous request
        if that was a SUBMIT too (nothing else in between), else opens a new one."""
        ids = self._open_acks.get(identity)
        if ids is None:
            ids = []
            self._reply(self.frontend, identity, Command.ACCEPTED, ids)
            self._open_acks[identity] = ids
        ids.append(task_id)

    def _internal_error(self, sock: zmq.Socket, identity: bytes, side: str) -> None:
        """A bug met while handling one message: logged with its traceback, counted
        (``internal_errors``), answered with ERROR ``internal``; the broker serves on."""
        self.counters.internal_errors += 1
        log.exception("internal error on a %s message (%d so far)", side, self.counters.internal_errors)
        self._reply(sock, identity, Command.ERROR, P.error_body("internal", "the broker failed on this message "
                                                                          "(logged); nothing else was changed by it"))

    def _forbidden(self, message: str) -> ProtocolError:
        self.counters.forbidden += 1
        return ProtocolError("forbidden", message)

    def _check_project(self, who: Principal, project: str) -> None:
        if not who.may_act_for(project):
            raise self._forbidden(f"identity {who.name!r} may act for {who.describe_projects()}, "
                                  f"not project {project!r}")

    def _new_id(self) -> str:
        """Broker-made ids are 96 random bits: knowing one says nothing of the next."""
        return secrets.token_hex(12)

    def _existing(self, task_id: str, client_made: bool) -> Task | None:
        existing = self.tasks.get(task_id) or self.recent.get(task_id)
        if existing is None and client_made:
            existing = self._journaled_final(task_id)
        return existing

    def _on_submit(self, identity: bytes, body: Any, who: Principal) -> None:
        specs, req = P.parse_submit(body)  # all-or-nothing: validate first
        found: dict[str, Task] = {}
        in_batch: dict[str, str] = {}  # id -> project, for ids given twice in this SUBMIT
        tasks, recent = self.tasks, self.recent
        journaled = self._journaled_finals([s.id for s in specs if s.id is not None and s.id not in tasks
                                            and s.id not in recent])
        for spec in specs:  # ... and authorize first: a refused batch changes nothing
            self._check_project(who, spec.project)
            if spec.id is not None and in_batch.setdefault(spec.id, spec.project) != spec.project:
                raise ProtocolError("bad-field", f"task id {spec.id!r} is given twice, for two projects")
            if spec.id is not None and (existing := tasks.get(spec.id) or recent.get(spec.id)
                                        or journaled.get(spec.id)) is not None:
                if existing.project != spec.project or not who.may_act_for(existing.project):
                    raise self._forbidden(f"task id {spec.id!r} is taken")
                found[spec.id] = existing
        acked: list[str] = []  # for a SUBMIT with a req: its own ACCEPTED, whatever the ack flags
        for spec in specs:
            existing = found.get(spec.id) if spec.id is not None else None
            task_id = spec.id or self._new_id()
            if existing is not None:  # idempotent resubmission after a lost ack
                self.counters.duplicates += 1
                if identity not in existing.watchers:
                    existing.watchers.append(identity)
                if existing.state in State.FINAL:
                    self._results.setdefault(identity, []).append(existing.outcome())
            else:
                task = self._accept(spec, task_id, who.name)
                task.watchers.append(identity)
                if spec.id is not None:
                    found[spec.id] = task  # the same id again in this SUBMIT is a duplicate, not a second task
                if not spec.ack:  # ack=false (call): the RESULT is the answer, and it need not wait for a commit
                    task.caller = identity
            if spec.ack:
                if req is None:
                    self._ack(identity, task_id)
                else:
                    acked.append(task_id)
        if req is not None:
            self._reply(self.frontend, identity, Command.ACCEPTED, {"req": req, "ids": acked})

    def _journaled_final(self, task_id: str) -> Task | None:
        """A task that finished before a restart (or left ``recent``): a resubmitted
        client-made id is answered from its record, never run twice (PROTOCOL 4.1)."""
        return self._journaled_finals([task_id]).get(task_id)

    def _journaled_finals(self, ids: list[str]) -> dict[str, Task]:
        """:meth:`_journaled_final` for a whole SUBMIT's ids, in one journal read."""
        if not ids:
            return {}
        finals = {}
        for task_id, rec in self.journal.lookup_many(ids).items():
            if rec.get("state") not in State.FINAL:
                continue
            try:
                task = restored_task(rec)
            except Exception:  # noqa: BLE001 - a bad row is not a reason to run the id again
                continue
            self.recent[task_id] = task
            finals[task_id] = task
        return finals

    def _on_workflow(self, identity: bytes, body: Any, who: Principal) -> None:
        spec = P.parse_workflow(body)
        self._check_project(who, spec.project)
        wf_id = spec.id or f"wf-{self._new_id()}"
        existing = self._existing(wf_id, spec.id is not None)
        if existing is not None:  # idempotent resubmission
            if existing.project != spec.project or not who.may_act_for(existing.project):
                raise self._forbidden(f"workflow id {wf_id!r} is taken")
            self.counters.duplicates += 1
            if identity not in existing.watchers:
                existing.watchers.append(identity)
            if existing.state in State.FINAL:
                self._results.setdefault(identity, []).append(existing.outcome())
        else:
            self.workflow_engine.create(spec, wf_id, identity, owner=who.name)
        if "req" in body:  # validated with the body
            self._reply(self.frontend, identity, Command.ACCEPTED, {"req": body["req"], "ids": [wf_id]})
        else:
            self._ack(identity, wf_id)

    def _enqueue(self, task: Task, front: bool = False) -> None:
        self.tasks[task.id] = task
        if task.not_before is not None and task.not_before > time.time():
            # delayed (delay/eta) or backing off: held aside until due (_release_due)
            self._waiting.add(task.id)
            heapq.heappush(self._delayed, (task.not_before, next(self._seq), task.id))
        else:
            self._push(task, front)
        if task.deadline is not None and not front:
            heapq.heappush(self._deadlines, (task.deadline, next(self._seq), task.id))

    def _push(self, task: Task, front: bool) -> None:
        queue = self.queues.get(task.kind)
        if queue is None:
            queue = self.queues[task.kind] = KindQueue()
        queue.push(task, front)
        self._dirty.add(task.kind)
        if task.kind not in self._announced_unserved and not self.by_kind.get(task.kind):
            # Work nobody serves: said once per kind, so a launcher can start agents on
            # demand (the neural pool: orchflow-launch --neural-start demand).
            self._announced_unserved.add(task.kind)
            self.events.publish("kind.unserved", {"kind": task.kind, "project": task.project})

    # ------------------------------------------------------------------ for MANAGE and schedules
    # (bus/manage.py ManageHost, bus/schedules.py ScheduleHost: what they may ask of us)

    def live_tasks(self) -> list[Task]:
        return list(self.tasks.values())

    def final_tasks(self) -> list[Task]:
        return list(self.recent.values())

    def find_final(self, task_id: str) -> Task | None:
        task = self.recent.get(task_id)
        return task if task is not None else self._journaled_final(task_id)

    def cancel_queued(self, task: Task, reason: str) -> None:
        self._finish(task, State.CANCELLED, error=reason)

    def run_again(self, task: Task, owner: str | None) -> Task:
        """A new task with ``task``'s kind, payload, project, priority and retry policy."""
        policy = retry_policy.from_field(task.retry, task.max_retries)
        spec = P.TaskSpec(None, task.kind, task.payload, task.project, task.priority, None, policy.max,
                          retry=policy)
        return self._accept(spec, self._new_id(), owner)

    def submit_scheduled(self, spec: P.TaskSpec, task_id: str, owner: str | None) -> bool:
        if self._existing(task_id, True) is not None:
            return False  # that tick already made its task (belt and braces: see bus/schedules.py)
        self._accept(spec, task_id, owner)
        return True

    def publish_event(self, topic: str, body: dict[str, Any]) -> None:
        self.events.publish(topic, body)

    # (bus/lifecycle.py LifecycleHost: what middleware may ask)

    def events_wanted(self, topic: str) -> bool:
        return self.events.wants(topic)

    def serves(self, kind: str) -> bool:
        return bool(self.by_kind.get(kind))

    def has_live(self, kind: str) -> bool:
        return any(t.kind == kind for t in self.tasks.values())

    def submit_internal(self, kind: str, payload: Any, priority: int) -> Task:
        """A task the swarm gives itself (routing-model retraining): project orchflow."""
        task = Task(f"{self._id_prefix}-{kind}-{next(self._id_counter)}", kind, payload, "orchflow", priority,
                    None, 1, time.time())
        self._queue_new(task)
        return task

    def queue_ages(self) -> dict[str, float]:
        """Per kind with queued work: seconds its oldest queued task has waited."""
        now = time.time()
        return {k: now - oldest for k, q in self.queues.items() if (oldest := q.oldest()) is not None}

    # (bus/workflow.py WorkflowHost: the rest of what the workflow engine may ask)

    def queue_step(self, task: Task) -> None:
        self._queue_new(task)

    def finish_task(self, task: Task, state: str, result: Any = None, error: str | None = None) -> None:
        self._finish(task, state, result=result, error=error)

    def free_credit(self, kinds: set[str]) -> int:
        agents = {a.identity: a for k in kinds for a in self.by_kind.get(k, ())}
        return sum(max(a.free, 0) for a in agents.values())

    def count(self, counter: str) -> None:
        setattr(self.counters, counter, getattr(self.counters, counter) + 1)

    def _accept(self, spec: P.TaskSpec, task_id: str, owner: str | None) -> Task:
        task = Task.from_spec(spec, task_id, time.time())
        task.owner = owner
        self.counters.submitted += 1
        self._queue_new(task)
        return task

    def _queue_new(self, task: Task) -> None:
        self.journal.write(task)
        self._enqueue(task)
        for hook in self.hooks.submitted:
            hook(task)

    def _on_cancel(self, identity: bytes, ids: list[str], req: str | int | None, who: Principal) -> None:
        unknown, forbidden = [], []
        for task_id in ids:
            task = self.tasks.get(task_id)
            if task is None:
                final = self.recent.get(task_id)
                if final is None:
                    unknown.append(task_id)
                elif not who.may_act_for(final.project):
                    forbidden.append(task_id)
                else:
                    self._results.setdefault(identity, []).append(final.outcome())
                continue
            if not who.may_act_for(task.project):
                forbidden.append(task_id)
                continue
            if identity not in task.watchers:
                task.watchers.append(identity)
            wf = self.workflow_engine.workflows.get(task_id)
            if wf is not None:
                self.workflow_engine.cancel(wf)
                continue
            self._finish(task, State.CANCELLED, error="cancelled by client")
        self._answer_ids(identity, who, ids, unknown, forbidden, req, "no such task")

    def _answer_ids(self, identity: bytes, who: Principal, ids: list[str], unknown: list[str],
                    forbidden: list[str], req: str | int | None, unknown_message: str) -> None:
        """CANCEL's and FETCH's answer besides RESULTs.  With a ``req`` (1.1): one ACCEPTED
        naming what was acted on and what was not.  Without (1.0): an ERROR for each
        refused group only."""
        if forbidden:
            self.counters.forbidden += 1
        if req is not None:
            refused = set(unknown) | set(forbidden)
            reply: dict[str, Any] = {"req": req, "ids": [i for i in dict.fromkeys(ids) if i not in refused]}
            if unknown:
                reply["unknown"] = unknown
            if forbidden:
                reply["forbidden"] = forbidden
            self._reply(self.frontend, identity, Command.ACCEPTED, reply)
            return
        if unknown:
            self._reply(self.frontend, identity, Command.ERROR, P.error_body("unknown-task", unknown_message, unknown))
        if forbidden:
            self._reply(self.frontend, identity, Command.ERROR, P.error_body(
                "forbidden", f"identity {who.name!r} may act for {who.describe_projects()}; "
                             f"these tasks belong to another project", forbidden))

    def _on_fetch(self, identity: bytes, ids: list[str], req: str | int | None, who: Principal) -> None:
        unknown, forbidden = [], []
        out = self._results.setdefault(identity, [])
        for task_id in ids:
            task = self.tasks.get(task_id)
            if task is not None:
                if not who.may_act_for(task.project):
                    forbidden.append(task_id)
                elif identity not in task.watchers:
                    task.watchers.append(identity)
                continue
            final = self.recent.get(task_id)
            if final is not None:
                if who.may_act_for(final.project):
                    out.append(final.outcome())
                else:
                    forbidden.append(task_id)
                continue
            rec = self.journal.lookup(task_id)
            if rec is not None and rec.get("state") in State.FINAL:
                if who.may_act_for(rec.get("project", "default")):
                    out.append(outcome_of_record(rec))
                else:
                    forbidden.append(task_id)
            else:
                unknown.append(task_id)
        self._answer_ids(identity, who, ids, unknown, forbidden, req, "no such task")

    def status(self, ids: list[str] | None = None, who: Principal = UNRESTRICTED_LOCAL) -> dict[str, Any]:
        """The swarm as ``who`` may see it: a client bound to projects sees their tasks
        and workflows only (agents, queue lengths and counters are the swarm's)."""
        workflows = {wid: wf.public() for wid, wf in self.workflow_engine.workflows.items()
                     if who.may_act_for(wf.record.project)}
        now_m, window = time.monotonic(), self.config.heartbeat_interval * self.config.heartbeat_liveness
        body: dict[str, Any] = {
            "version": P.VERSION,
            "protocol": P.PROTOCOL,
            "uptime": time.time() - self.started,
            "agents": [{"name": a.name, "kinds": a.kinds, "capacity": a.capacity, "prefetch": a.prefetch,
                        "inflight": len(a.inflight), "completed": a.completed, "failed": a.failed,
                        "last_seen": round(max(0.0, now_m - (a.expires - window)), 3)} for a in self.agents.values()],
            "queues": {k: len(q) for k, q in self.queues.items() if len(q)},
            "ages": {k: round(age, 3) for k, age in self.queue_ages().items()},  # oldest queued task's wait
            # queued work no registered agent serves: it waits for one, and people should know
            "unserved": {k: len(q) for k, q in self.queues.items() if len(q) and not self.by_kind.get(k)},
            "delayed": len(self._waiting),  # waiting for their delay, eta or retry backoff
            "live": len(self.tasks),
            "counters": vars(self.counters).copy(),
            "events_dropped": self.events.dropped,
            "quarantined": self.counters.quarantined,
            "workflows": workflows,
        }
        if self.gate is not None:
            body["auth"] = self.gate.stats()
        for hook in self.hooks.report:
            hook(body)
        if ids:
            states, forbidden = {}, []
            for task_id in ids:
                task = self.tasks.get(task_id) or self.recent.get(task_id)
                rec = self.journal.lookup(task_id) if task is None else None
                project = task.project if task is not None else (rec or {}).get("project", "default")
                if (task is not None or rec is not None) and not who.may_act_for(project):
                    forbidden.append(task_id)
                    states[task_id] = None
                    continue
                states[task_id] = task.state if task is not None else (rec.get("state") if rec else None)
                if task is not None and task.kind == WORKFLOW_KIND and task_id not in body["workflows"]:
                    payload = task.payload if isinstance(task.payload, dict) else {}
                    body["workflows"][task_id] = {"state": task.state, "strategy": payload.get("strategy"),
                                                  "steps": payload.get("state", {})}
            body["tasks"] = states
            if forbidden:
                self.counters.forbidden += 1
                body["forbidden"] = forbidden
        return body

    # ------------------------------------------------------------------ agents

    def _on_agent(self, frames: list[bytes], who: Principal | None) -> None:
        identity = frames[0]
        agent = self.agents.get(identity)
        if who is None or (agent is not None and agent.principal.name != who.name):
            # Revoked since it connected, or another key behind a known routing id.
            self.counters.forbidden += 1
            if who is None and agent is not None:
                self._lose_agent(agent, "identity revoked")
            self._reply(self.backend, identity, Command.ERROR, P.error_body(
                "forbidden", "this identity was revoked" if who is None else "not this agent's identity"))
            return
        if agent is not None:  # any message, even a malformed one, is a sign of life (5.2)
            agent.expires = time.monotonic() + self.config.heartbeat_interval * self.config.heartbeat_liveness
        command = None
        try:
            # Results may be bigger than what we accept from clients: a DONE over the
            # limit is read, and the oversize results fail their tasks (never wedge them).
            command, body = P.parse(frames[1:], P.AGENT, P.AGENT_COMMANDS, P.MAX_FRAME)
            if len(frames[-1]) > self.config.max_body and command not in (Command.DONE, Command.FAILED):
                raise P.PayloadTooLarge(len(frames[-1]), self.config.max_body)
            if command is Command.READY:
                self._on_ready(identity, body, who)
                return
            if command is Command.DISCONNECT:
                if agent is not None:
                    self._lose_agent(agent, "agent disconnected", clean=not agent.inflight)
                return
            # Validate before asking who sent it: a malformed body earns its ERROR either way.
            entries = P.parse_outcomes(body, command.name) if command in _RESULTS else None
            running = P.parse_heartbeat(body) if command is Command.HEARTBEAT else None
            if agent is None:  # results of a stranger count for nothing (we may have restarted)
                self._tell_to_register(identity)
                if entries is not None:
                    self.counters.unassigned_results += 1
                return
            if command is Command.DONE:
                if len(frames[-1]) > self.config.max_body:
                    entries = self._fail_oversize_results(agent, entries)
                self._on_done(agent, entries)
            elif command is Command.FAILED:
                self._on_failed(agent, entries, oversize=len(frames[-1]) > self.config.max_body)
            elif command is Command.PROGRESS:
                self._on_progress(agent, entries)
            elif running is not None:
                self._renew_lease(agent, running)
        except ProtocolError as exc:
            if exc.code != "forbidden":
                self.counters.malformed_backend += 1
            self._reply(self.backend, identity, Command.ERROR, P.error_body(exc.code, exc.message))
            if agent is None and command not in (None, Command.READY):
                self._tell_to_register(identity)
        except Exception:  # noqa: BLE001 - as for clients
            self._internal_error(self.backend, identity, "agent")

    def _tell_to_register(self, identity: bytes) -> None:
        """DISCONNECT an unknown agent (we restarted), like MDP does: at most once per
        heartbeat interval, so a backlog of its messages draws one, not one each."""
        now_m = time.monotonic()
        if now_m - self._told_to_register.get(identity, -1e9) >= self.config.heartbeat_interval:
            self._told_to_register[identity] = now_m
            self._send(self.backend, identity, P.agent_message(Command.DISCONNECT))

    def _fail_oversize_results(self, agent: AgentRecord, entries: list[dict]) -> list[dict]:
        """Keep the results a client can receive; the rest become FAILED with the reason."""
        limit = self.config.max_body
        kept = []
        for entry in entries:
            size = len(P.pack(entry.get("result")))
            if size + 1024 > limit:
                self.counters.oversize += 1
                self._settle(agent, entry["id"], State.FAILED, None, f"too-large: result of {size} bytes "
                             f"exceeds the {limit}-byte limit on one message", False)
            else:
                kept.append(entry)
        return kept

    def _renew_lease(self, agent: AgentRecord, running: list[str]) -> None:
        """An agent's HEARTBEAT lists what it runs; a task we dispatched to it more than
        a grace period ago that it does not list was lost on the way (dropped TASK,
        crashed worker) and runs again.  This is the lease: nothing stays in flight
        forever while its agent is alive."""
        agent.reports_running = True
        grace = self.config.heartbeat_interval * self.config.heartbeat_liveness
        cutoff = time.monotonic() - grace
        held = set(running)
        for task_id, sent in list(agent.inflight.items()):
            if task_id not in held and sent < cutoff:
                agent.inflight.pop(task_id, None)
                self._dirty.update(agent.kinds)
                task = self.tasks.get(task_id)
                if task is None or task.agent != agent.identity:
                    continue
                self.counters.lease_expired += 1
                self._retry_or_fail(task, "lost", f"{agent.name} no longer holds it")

    def _on_ready(self, identity: bytes, body: Any, who: Principal) -> None:  # noqa: C901
        ready = P.parse_ready(body)
        name, kinds, capacity, prefetch, max_body = ready.name, ready.kinds, ready.capacity, ready.prefetch, \
            ready.max_body
        if not who.is_agent:
            raise self._forbidden(f"identity {who.name!r} is a client key, not an agent key")
        refused = [k for k in kinds if not who.may_serve(k)]
        if refused:
            raise self._forbidden(f"identity {who.name!r} may not serve kinds {refused}")
        running = ready.running
        now_m = time.monotonic()
        agent = self.agents.get(identity)
        if agent is not None:  # capacity update (drain sends capacity 0)
            if capacity == 0 and agent.capacity > 0:
                self.events.publish("agent.draining", {"name": agent.name, "inflight": len(agent.inflight)})
            agent.capacity = capacity
            agent.prefetch = prefetch
            agent.max_body = max_body
        else:
            agent = AgentRecord(identity, name, kinds, capacity, joined=time.time(), max_body=max_body,
                                principal=who, prefetch=prefetch)
            self.agents[identity] = agent
            self._told_to_register.pop(identity, None)
            self._announced_unserved.difference_update(kinds)
            for kind in kinds:
                self.by_kind.setdefault(kind, []).append(agent)
            self.counters.agents_joined += 1
            self.events.publish("agent.joined", {"name": name, "kinds": kinds, "capacity": capacity})
            for hook in self.hooks.agent_joined:
                hook(agent)
            for task_id in running:  # work it kept across our restart stays with it ...
                task = self.tasks.get(task_id)
                if (task is not None and task.state == State.QUEUED and task.agent is None
                        and task.assignee == agent.assignee  # ... if the journal says it was given it
                        and task.kind in kinds and who.may_act_for(task.project)):
                    self._start(task, agent, send=False)
        agent.expires = now_m + self.config.heartbeat_interval * self.config.heartbeat_liveness
        self._dirty.update(kinds)

    def _on_done(self, agent: AgentRecord, entries: list[dict]) -> None:
        for entry in entries:
            self._settle(agent, entry["id"], State.DONE, entry.get("result"), None, False)

    def _on_failed(self, agent: AgentRecord, entries: list[dict], oversize: bool = False) -> None:
        """A FAILED entry may keep data beside its error (``result``: a shell task's exit
        code and output tail); data no client could receive is dropped, the error kept."""
        for entry in entries:
            error, data = P.describe_error(entry.get("error")), entry.get("result")
            if oversize and data is not None and len(P.pack(data)) + 1024 > self.config.max_body:
                self.counters.oversize += 1
                data, error = None, f"{error} (too-large: failure data dropped)"
            self._settle(agent, entry["id"], State.FAILED, data, error, entry.get("retry") is True)

    def _settle(self, agent: AgentRecord, task_id: str, state: str, result: Any,
                error: str | None, retry: bool) -> None:
        """An answer from ``agent``.  Only the agent the task is assigned to settles it:
        anything else is a late answer after a re-dispatch, or a forgery."""
        held = agent.inflight.pop(task_id, None) is not None
        if held:  # its credit comes back either way
            agent.completed += 1
            if state != State.DONE:
                agent.failed += 1
            self._dirty.update(agent.kinds)
        task = self.tasks.get(task_id)
        if task is None or task.agent != agent.identity:
            # Held and already final: the answer to a CANCEL or an expiry, as expected (5.4).
            # Not held: taken from this agent and given to another (late), or never given it.
            if not held:
                if task is not None or self.recent.get(task_id) is not None:
                    self.counters.late_results += 1
                else:
                    self.counters.unassigned_results += 1
            return
        for hook in self.hooks.answered:
            hook(task, agent, state == State.DONE)
        if state == State.DONE:
            self._finish(task, State.DONE, result=result)
        elif retry:
            self._retry_or_fail(task, "asked", f"agent asked for retry: {error}")
        else:
            self._retry_or_fail(task, "error", error or "failed", result)

    def _on_progress(self, agent: AgentRecord, entries: list[dict]) -> None:
        if not self.events.wants("task.progress"):
            return
        for entry in entries:
            task = self.tasks.get(entry["id"])
            if task is not None and task.agent == agent.identity:
                self.events.publish("task.progress", {"id": task.id, "kind": task.kind, "project": task.project,
                                                      "agent": agent.name, "data": entry.get("data")})
            else:
                self.counters.unassigned_results += 1

    # ------------------------------------------------------------------ task life

    def _start(self, task: Task, agent: AgentRecord, send: bool = True) -> None:
        task.state = State.RUNNING
        task.agent = agent.identity
        task.assignee = agent.assignee
        if send or task.attempts == 0:  # a task reclaimed by READY running goes on with the same attempt
            task.attempts += 1
        self.journal.write(task)  # who holds it survives a restart: READY running may reclaim only that
        agent.inflight[task.id] = time.monotonic()
        queue = self.queues.get(task.kind)
        if not send and queue is not None:
            queue.forget()
        if send:
            entry = task.assignment()
            entry["shared_write"] = self._may_write_shared(task.owner)
            self._assign.setdefault(agent.identity, []).append(entry)
        for hook in self.hooks.dispatched:
            hook(task, agent)

    def _may_write_shared(self, owner: str | None) -> bool:
        """Whether the task's submitter may write the ``shared`` memory namespace: the
        agent enforces it, the broker vouches for it (rights as of now, not of submit)."""
        if self.keyring is None:
            return True
        if owner is None or owner == "local":
            return self.keyring.local.shared_write
        who = self.keyring.principal(owner)
        return who is not None and who.shared_write

    def _retry_or_fail(self, task: Task, cause: str, reason: str, result: Any = None) -> None:
        """After a failure of ``cause`` (``lost``, ``error``, or ``asked`` by the handler):
        run the task again, or end it failed, as the middleware decides (the retry
        policy: bus/middleware/retries.py)."""
        delay, why = self.hooks.decide_failure(task, cause, reason)
        if delay is not None:
            self._requeue(task, why, delay)
        else:
            self._finish(task, State.FAILED, result=result, error=why)

    def _requeue(self, task: Task, reason: str, delay: float = 0.0) -> None:
        self.counters.retried += 1
        task.state = State.QUEUED
        task.agent = None
        task.assignee = None
        task.error = reason
        history = task.retried = (task.retried or [])[-(retry_policy.HISTORY - 1):]
        history.append({"attempt": task.attempts, "error": reason[:500], "delay": round(delay, 3),
                        "at": round(time.time(), 3)})
        if delay > 0:
            task.not_before = time.time() + delay
        self.journal.write(task)
        self._enqueue(task, front=True)
        for hook in self.hooks.retried:
            hook(task, reason, delay)

    def _finish(self, task: Task, state: str, result: Any = None, error: str | None = None) -> None:
        if task.id in self._waiting:  # held for later, in no queue
            self._waiting.discard(task.id)
        elif task.state == State.QUEUED and task.agent is None:
            queue = self.queues.get(task.kind)
            if queue is not None:
                queue.forget()
        elif task.agent is not None and state in (State.CANCELLED, State.EXPIRED):
            agent = self.agents.get(task.agent)
            if agent is not None:  # credit returns when the agent reports back
                self._send(self.backend, agent.identity, P.agent_message(Command.CANCEL, {"ids": [task.id]}))
        task.state = state
        task.result = result
        task.error = error
        task.finished = time.time()
        del self.tasks[task.id]
        self.recent[task.id] = task
        if len(self.recent) > self._trim_recent_at:
            self._trim_recent()
        setattr(self.counters, state, getattr(self.counters, state) + 1)
        self.journal.write(task)
        outcome = task.outcome()
        for watcher in task.watchers:
            # The caller of call() holds the result before it is journaled (PROTOCOL 4.2);
            # everyone else hears after the commit.
            results = self._early_results if watcher == task.caller else self._results
            results.setdefault(watcher, []).append(outcome)
        for hook in self.hooks.finished:
            hook(task)
        if "/" in task.id:  # possibly a workflow step
            self.workflow_engine.on_task_final(task)

    def _expire(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, task_id = heapq.heappop(self._deadlines)
            task = self.tasks.get(task_id)
            if task is not None and task.deadline is not None and task.deadline <= now:
                self._finish(task, State.EXPIRED, error="deadline passed")

    def _heartbeat(self, now_m: float) -> None:
        if len(self._told_to_register) > 10_000:
            self._told_to_register = {i: t for i, t in self._told_to_register.items()
                                      if now_m - t < self.config.heartbeat_interval}
        for agent in list(self.agents.values()):
            if now_m > agent.expires:
                self._lose_agent(agent, "heartbeat lost")
            elif now_m - agent.last_sent >= self.config.heartbeat_interval:
                self._send(self.backend, agent.identity, P.agent_message(Command.HEARTBEAT))
                agent.last_sent = now_m

    def _fail_unserved(self) -> None:
        """The policy for work nobody serves (``unserved_grace``): a queued task whose
        kind has had no agent for the whole grace period fails with a clear error,
        instead of waiting for ever (or running, surprisingly, in some later swarm)."""
        grace, now = self.config.unserved_grace, time.time()
        expired: set[str] = set()
        for kind, queue in self.queues.items():
            if len(queue) == 0 or self.by_kind.get(kind):
                self._unserved_since.pop(kind, None)
                continue
            if now - self._unserved_since.setdefault(kind, now) >= grace:
                expired.add(kind)
        if not expired:
            return
        doomed = [t for t in self.tasks.values()
                  if t.kind in expired and t.state == State.QUEUED and t.agent is None and t.id not in self._waiting
                  and now - max(t.submitted, self._unserved_since[t.kind]) >= grace]
        for task in doomed:
            self._finish(task, State.FAILED, error=f"no agent serves kind {task.kind!r} "
                                                   f"(waited {grace:g}s: the broker's unserved_grace)")

    def _lose_agent(self, agent: AgentRecord, reason: str, clean: bool = False) -> None:
        """``clean``: it said goodbye with nothing in flight (a drain, a stop): that is
        no fault, and is logged and counted apart from agents that vanished."""
        del self.agents[agent.identity]
        for kind in agent.kinds:
            peers = self.by_kind.get(kind, [])
            if agent in peers:
                peers.remove(agent)
        if clean:
            self.counters.agents_drained += 1
            log.info("agent %s drained and left after %d tasks", agent.name, agent.completed)
            self.events.publish("agent.drained", {"name": agent.name, "completed": agent.completed})
            for hook in self.hooks.agent_gone:
                hook(agent, reason, True)
            return
        self.counters.agents_lost += 1
        window = self.config.heartbeat_interval * self.config.heartbeat_liveness
        silent = round(time.monotonic() - (agent.expires - window), 3)  # since its last message
        log.warning("agent %s lost (%s) after %.2fs of silence; %d tasks in flight", agent.name, reason, silent,
                    len(agent.inflight))
        self.events.publish("agent.lost", {"name": agent.name, "reason": reason, "inflight": len(agent.inflight),
                                           "silent": silent})
        for hook in self.hooks.agent_gone:
            hook(agent, reason, False)
        for task_id in agent.inflight:
            task = self.tasks.get(task_id)
            if task is None or task.agent != agent.identity:
                continue
            self._retry_or_fail(task, "lost", f"{reason} on {agent.name}")

    def _trim_recent(self) -> None:
        """Drop the oldest finished tasks from memory; the journal still answers FETCH and
        resubmissions for them (``find_final``).  Done tasks go first: the failed, cancelled
        and expired ones are the dead letters ``orchflow tasks`` lists, and they go only
        when there are five times as many as the cap."""
        drop = len(self.recent) - RECENT_TASKS + RECENT_TASKS // 5
        flood = len(self.recent) > 5 * RECENT_TASKS
        doomed = [tid for tid, t in itertools.islice(self.recent.items(), 4 * drop)
                  if flood or t.state == State.DONE][:drop]
        for tid in doomed:
            del self.recent[tid]
        # Next time after another fifth of the cap: when dead letters keep it above the cap,
        # each finished task must not rescan thousands of them.
        self._trim_recent_at = max(RECENT_TASKS, len(self.recent) + RECENT_TASKS // 5)

    def _compact(self) -> None:
        cutoff = time.time() - self.config.result_ttl
        for task_id in [k for k, t in self.recent.items() if (t.finished or 0) < cutoff]:
            del self.recent[task_id]
        self.journal.compact(cutoff)

    # ------------------------------------------------------------------ output

    def _dispatch(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for kind in dirty:
            queue = self.queues.get(kind)
            if not queue:
                continue
            agents = [a for a in self.by_kind.get(kind, ()) if a.free > 0]
            scoped = any(a.principal.restricted for a in agents)
            passed: list[Task] = []  # tasks no free agent may serve: to the back, in their order
            while agents and queue.live:
                task = queue.pop()
                if task is None:
                    break
                candidates = agents
                if scoped:  # agent keys bound to projects see only those projects' tasks
                    candidates = [a for a in agents if a.principal.may_act_for(task.project)]
                    if not candidates:
                        passed.append(task)
                        if len(passed) >= DRAIN_BATCH:  # bounded work per turn; the rest waits
                            self._dirty.add(kind)
                            break
                        continue
                agent = self._choose(task, candidates)
                if agent is None:  # held for a better, busy agent: back to the front until credit frees
                    queue.push(task, front=True)
                    break
                self._start(task, agent)
                if agent.free <= 0:
                    agents.remove(agent)
            for task in passed:  # behind the rest: a pile of them cannot starve servable tasks
                queue.push(task)

    def _choose(self, task: Task, agents: list[AgentRecord]) -> AgentRecord | None:
        """The router's pick; any router failure (a bad model, a bad prediction) is
        answered by least-loaded and counted, so routing can never stop dispatch."""
        try:
            agent = self.router.choose(task, agents)
            if agent is None or agent in agents:
                return agent
            raise ValueError(f"router returned {agent!r}, not a candidate")
        except Exception as exc:  # noqa: BLE001
            self.counters.router_errors += 1
            if self.counters.router_errors in (1, 10, 100, 1000) or self.counters.router_errors % 10_000 == 0:
                log.error("router failed (%d so far), using least-loaded: %s: %s",
                          self.counters.router_errors, type(exc).__name__, exc)
            return self._fallback_router.choose(task, agents)

    def _flush(self) -> None:
        # Tasks go out first: an agent may start before the submission is durable,
        # because the client hears nothing until it is (a crash before the commit
        # means no ack, so the client resubmits; at-least-once either way).
        if self._dirty:
            self._dispatch()
        if self._assign:
            now_m = time.monotonic()
            assign, self._assign = self._assign, {}
            for identity, batch in assign.items():
                self._send_assignments(self.agents[identity], batch, now_m)
        if self._early_results:
            early, self._early_results = self._early_results, {}
            self._send_results(early)
        # Durability before any other word to a client: group commit, then acks and results.
        # A turn whose records nobody is waiting on (call()s: their RESULT went out above)
        # need not stall the loop on an fsync now: it commits with the next turn that
        # must, or within LAZY_COMMIT (PROTOCOL 4.2).
        staged = self.journal.staged()
        if staged:
            now_m = time.monotonic()
            if self._replies or self._results or staged >= LAZY_COMMIT_RECORDS or \
                    (self._lazy_since is not None and now_m - self._lazy_since >= LAZY_COMMIT):
                self._commit(staged)
            elif self._lazy_since is None:
                self._lazy_since = now_m
        if self._replies:
            frontend = self.frontend
            for sock, identity, command, body in self._replies:
                self._send(sock, identity, P.message(P.CLIENT if sock is frontend else P.AGENT, command, body))
            self._replies.clear()
            self._open_acks.clear()
        if self._results:  # after the replies: a RESULT never comes before its task's ACCEPTED
            self._send_results(self._results)
            self._results.clear()

    def _commit(self, staged: int) -> None:
        self._lazy_since = None
        if self.hooks.committed:
            started = time.perf_counter()
            self.journal.commit()
            took = time.perf_counter() - started
            for hook in self.hooks.committed:
                hook(took, staged)
        else:
            self.journal.commit()

    def _send_results(self, results: dict[bytes, list[dict]]) -> None:
        result = P.command_byte(Command.RESULT)
        for identity, outcomes in results.items():
            if outcomes:  # cut under the client's limit: 4 results of 5 MB are 2 messages, not 1 dropped
                bodies, alone = P.batches_under(outcomes, P.MAX_BODY)
                for body in bodies + [P.pack([o]) for o, _ in alone]:
                    self._send(self.frontend, identity, [P.CLIENT, result, body])

    def _send_assignments(self, agent: AgentRecord, batch: list[dict], now_m: float) -> None:
        """TASK messages cut under the agent's limit; an assignment too big for it alone
        fails its task now instead of being dropped by the agent and left in flight."""
        bodies, oversize = P.batches_under(batch, agent.max_body)
        for body in bodies:
            if self._send(self.backend, agent.identity, [P.AGENT, P.command_byte(Command.TASK), body]):
                agent.last_sent = now_m
        for entry, size in oversize:
            self.counters.oversize += 1
            self._settle(agent, entry["id"], State.FAILED, None,
                         f"too-large: the assignment is {size} bytes, over {agent.name}'s "
                         f"{agent.max_body}-byte limit", False)

    def _send(self, sock: zmq.Socket, identity: bytes, frames: list[bytes]) -> bool:
        try:
            P.send(sock, [identity, *frames])
            return True
        except (zmq.Again, zmq.ZMQError):
            # Peer gone or not keeping up.  Clients can FETCH; agents that miss a
            # TASK are declared lost by heartbeat and their tasks re-queued.
            return False


def serve(config: BrokerConfig, journal: Journal | None = None, outcomes: OutcomeRecorder | None = None,
          router: Router | None = None, middleware: list[Middleware] | None = None) -> None:
    """Run a broker in this process until SIGINT/SIGTERM."""
    broker = Broker(config, journal, router=router, outcomes=outcomes, middleware=middleware)
    broker.bind()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: broker.stop())
    broker.run()
