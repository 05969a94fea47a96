"""The agent runtime: connect to the broker, take tasks, run handlers, report back.

An agent is a separate process holding one DEALER socket to the broker's back end.
The socket belongs to the runtime's I/O loop (ZeroMQ sockets are not thread-safe).
Handlers run on a thread pool (or an asyncio loop for ``async def`` handlers) and hand
their outcomes back through a queue and a doorbell, or on the loop itself: those
declared ``inline=True``, and plain handlers that have shown themselves quick enough
that a thread hop would cost more than the run (``agents/placement.py``).  While a
handler runs on the loop, a watchdog thread heartbeats for it (``agents/watchdog.py``).

Outcomes are batched: every loop turn sends at most one DONE, one FAILED and one
PROGRESS message, whatever number of tasks finished in it.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import threading
import time
import queue
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import zmq

from bus.auth import CurveCredentials, credentials_for
from bus.endpoints import Endpoints
from bus import protocol as P
from bus.protocol import Command

from .errors import AgentError, Retry, TaskCancelled, TaskError
from .placement import LOOP_PREFETCH, WAIT_FLOOR, Placement
from .watchdog import LoopWatchdog

log = logging.getLogger("orchflow.agent")

Handler = Callable[..., Any]


class TaskContext:
    """What a handler knows about its task, and its way to talk back."""

    __slots__ = ("id", "kind", "payload", "project", "attempt", "deadline", "parents", "shared_write",
                 "_cancelled", "_report")

    def __init__(self, task_id: str, kind: str, payload: Any, project: str, attempt: int,
                 deadline: float | None, report: Callable[[str, str, Any], None] | None = None) -> None:
        self.id = task_id
        self.kind = kind
        self.payload = payload
        self.project = project
        self.attempt = attempt
        self.deadline = deadline
        self.parents: dict[str, Any] = {}  # in a workflow: results of this step's dependencies
        self.shared_write = True  # the broker says whether the submitter may write 'shared' memory
        self._cancelled: threading.Event | None = None
        self._report = report

    @property
    def cancelled(self) -> threading.Event:
        """Set once the broker cancels the task.

        Made eagerly for threaded/async handlers (two threads touch it) and lazily
        for inline ones, which run on the loop thread and are never cancelled mid-run.
        """
        if self._cancelled is None:
            self._cancelled = threading.Event()
        return self._cancelled

    def progress(self, data: Any) -> None:
        """Stream a progress update; published as a ``task.progress`` event."""
        if self._report is not None:
            self._report("progress", self.id, data)

    def check_cancelled(self) -> None:
        """Raise :class:`TaskCancelled` if the broker cancelled this task."""
        if self._cancelled is not None and self._cancelled.is_set():
            raise TaskCancelled(self.id)


@dataclass
class _Registration:
    fn: Handler
    inline: bool
    is_async: bool
    wants_ctx: bool
    placement: Placement | None = None  # a plain handler nobody pinned: runs where it is cheapest

    def on_loop(self) -> bool:
        return self.inline or (self.placement is not None and self.placement.on_loop)


class Agent:
    """Serve task kinds with handler functions.

    >>> agent = Agent("ipc:///run/orchflow/backend", name="greeter", capacity=4)
    >>> @agent.handler("greet")
    ... def greet(payload, ctx):
    ...     return f"hello {payload['name']}"
    >>> agent.run()   # until SIGTERM/SIGINT, then drains
    """

    def __init__(self, endpoint: str | None = None, name: str | None = None, capacity: int = 1,
                 prefetch: int | None = None,
                 heartbeat_interval: float = 1.0, heartbeat_liveness: int = 3,
                 drain_timeout: float = 30.0, ctx: zmq.Context | None = None,
                 curve: CurveCredentials | None = None) -> None:
        """``endpoint`` is the broker's ipc back end (default: the local swarm's,
        ``Endpoints.local()``), or ``tcp://HOST:PORT+1`` with CURVE keys: ``curve``, or
        the files named by ORCHFLOW_KEY/ORCHFLOW_BROKER_KEY."""
        if capacity < 1:
            raise AgentError("capacity must be at least 1")
        if prefetch is not None and prefetch < 0:
            raise AgentError("prefetch must be 0 or more")
        self.endpoint = endpoint or Endpoints.local().backend
        self.curve = credentials_for(self.endpoint, curve)
        self.name = name or f"agent-{os.getpid()}"
        self.capacity = capacity
        # Tasks held beyond those running, queued here: the next task is at hand when one
        # ends, instead of a broker round trip (and its journal fsync) away.  By default
        # one capacity's worth, and LOOP_PREFETCH while every kind run so far runs on the
        # loop (agents/placement.py); 0 for long tasks that must go to whichever agent
        # frees up first (the trade-off Celery's prefetch multiplier makes).
        self.prefetch = capacity if prefetch is None else prefetch
        self._prefetch_follows_placement = prefetch is None
        self._kinds_run: set[str] = set()
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_liveness = heartbeat_liveness
        self.drain_timeout = drain_timeout
        self.ctx = ctx or zmq.Context.instance()
        self._handlers: dict[str, _Registration] = {}
        self._batch_handlers: dict[str, Callable[[list[TaskContext]], list[Any]]] = {}
        self._running: dict[str, TaskContext] = {}
        self._futures: dict[str, Future] = {}
        self._stop = threading.Event()
        self._draining = False
        # Worker threads hand outcomes to the loop through a queue and a doorbell (a pipe
        # the loop polls), rung only when not already ringing: no socket, no serialization
        # and usually no syscall per result.
        self._outq: queue.SimpleQueue = queue.SimpleQueue()
        self._bell: tuple[int, int] | None = None
        self._bell_rung = False
        self._pool: ThreadPoolExecutor | None = None
        self._aloop: Any = None  # an asyncio loop, made only when an async handler exists
        self._done: list[dict] = []
        self._failed: list[dict] = []
        self._progress: list[dict] = []
        self.completed = 0
        self._last_sent = 0.0
        self._last_heard = 0.0
        self._sock: zmq.Socket | None = None
        self._watchdog: LoopWatchdog | None = None
        self._batch: list | None = None  # the TASK body being started (the watchdog lists its ids)
        self._held: list[tuple[Command, Any]] = []  # broker messages the watchdog took in for the loop
        self._busy_logged = 0.0

    # ------------------------------------------------------------------ registration

    def handler(self, kind: str, inline: bool | None = None) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.add_handler(kind, fn, inline=inline)
            return fn
        return register

    def add_handler(self, kind: str, fn: Handler, inline: bool | None = None) -> None:
        """``inline``: True runs ``fn`` on the agent's loop, False on a worker thread;
        None (the default) lets the agent choose per kind from how the runs go: quick
        ones move to the loop, slow or waiting ones stay on threads (agents/placement.py).
        Pin False for a handler that must overlap its waits with its siblings' even when
        they are short; True for one that must never pay a thread hop."""
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        is_async = inspect.iscoroutinefunction(fn)
        if inline and is_async:
            raise AgentError(f"handler for {kind!r}: async handlers cannot be inline")
        placement = Placement(kind) if inline is None and not is_async else None
        self._handlers[kind] = _Registration(fn, bool(inline), is_async, len(params) >= 2, placement)

    def add_batch_handler(self, kind: str, fn: Callable[[list[TaskContext]], list[Any]]) -> None:
        """Handle every task of ``kind`` in one TASK message with a single call.

        ``fn`` receives the contexts and returns one result per context (an
        Exception instance in its place fails just that task).  It runs on the
        loop like an inline handler, so it must be quick: this is the hook for
        micro-batching, e.g. many single-sample model evaluations as one batch.
        """
        self._batch_handlers[kind] = fn

    @property
    def kinds(self) -> list[str]:
        return list(self._handlers) + [k for k in self._batch_handlers if k not in self._handlers]

    # ------------------------------------------------------------------ lifecycle

    def stop(self, drain: bool = True) -> None:
        """Ask the loop to finish; with ``drain`` running tasks complete first."""
        self._draining = drain
        self._stop.set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop(drain=True))

    def run(self) -> None:
        if not self._handlers and not self._batch_handlers:
            raise AgentError("an agent needs at least one handler")
        self._pool = ThreadPoolExecutor(max_workers=self.capacity, thread_name_prefix=f"{self.name}-worker")
        kinds = self.kinds
        log.info("%s: serving %d kinds (%s%s), capacity %d, prefetch %d, at %s", self.name, len(kinds),
                 ", ".join(kinds[:6]), ", ..." if len(kinds) > 6 else "", self.capacity, self.prefetch, self.endpoint)
        if any(r.is_async for r in self._handlers.values()):
            import asyncio  # lazily: importing asyncio costs each agent process ~8 MB of RSS
            self._aloop = asyncio.new_event_loop()
            threading.Thread(target=self._aloop.run_forever, name=f"{self.name}-asyncio", daemon=True).start()
        self._bell = os.pipe()
        os.set_blocking(self._bell[1], False)
        self._watchdog = watchdog = LoopWatchdog(self.heartbeat_interval, self._beat_while_busy, self.name)
        watchdog.lock.acquire()  # the loop holds the socket, and lets go only to run a handler
        sock = self._connect()
        watchdog.start()
        try:
            self._loop(sock, self._bell[0])
        finally:
            watchdog.stop()
            watchdog.lock.release()
            self._sock.close(linger=100)
            self._pool.shutdown(wait=False, cancel_futures=True)
            for fd in self._bell:
                os.close(fd)
            self._bell = None
            if self._aloop is not None:
                self._aloop.call_soon_threadsafe(self._aloop.stop)

    def _connect(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.sndhwm = 100_000
        sock.rcvhwm = 100_000
        P.quick_reconnect(sock)
        if self.curve is not None:
            self.curve.apply(sock)
        sock.connect(self.endpoint)
        self._sock = sock
        self._send(sock, Command.READY, self._ready_body(self.capacity))
        return sock

    def _ready_body(self, capacity: int) -> dict[str, Any]:
        return {"name": self.name, "kinds": self.kinds, "capacity": capacity, "prefetch": self.prefetch if capacity else 0,
                "running": list(self._running),
                "max_body": P.MAX_BODY}

    def _send(self, sock: zmq.Socket, command: Command, body: Any = None) -> None:
        try:
            P.send(sock, P.agent_message(command, body))
        except zmq.Again:
            log.warning("%s: broker not keeping up, dropped %s", self.name, command.name)
        self._last_sent = time.monotonic()

    def _loop(self, sock: zmq.Socket, outbox: int) -> None:
        interval = self.heartbeat_interval
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(outbox, zmq.POLLIN)
        self._last_heard = time.monotonic()
        reconnect_delay = interval
        drain_deadline: float | None = None
        while True:
            if self._stop.is_set() and drain_deadline is None:
                if not self._draining:
                    break
                self._send(sock, Command.READY, self._ready_body(0))  # no new work
                drain_deadline = time.monotonic() + self.drain_timeout
                log.info("%s: stopping; draining %d running tasks (at most %.0fs)", self.name, len(self._running),
                         self.drain_timeout)
            if drain_deadline is not None and (not self._running or time.monotonic() > drain_deadline):
                self._flush(sock)
                break
            ready = dict(poller.poll(0 if self._held else interval * 1000 / 4))
            if sock in ready or self._held:
                if sock in ready:
                    self._last_heard = time.monotonic()
                reconnect_delay = interval
                self._drain_broker(sock)
            if outbox in ready:
                os.read(outbox, 65536)
                self._bell_rung = False  # before draining: a result queued from now on rings again
                self._drain_outbox()
            self._flush(sock)
            now = time.monotonic()
            if now - self._last_sent >= interval:
                # What we run is our lease: the broker requeues what we were sent and do not list.
                self._send(sock, Command.HEARTBEAT, {"running": list(self._running)})
            if now - self._last_heard > interval * self.heartbeat_liveness:
                log.warning("%s: broker silent for %.1fs, reconnecting", self.name, now - self._last_heard)
                poller.unregister(sock)
                sock.close(linger=0)
                time.sleep(min(reconnect_delay, 5.0))
                reconnect_delay *= 2
                self._held.clear()  # sent by the broker we are leaving; the new one resends
                sock = self._connect()
                poller.register(sock, zmq.POLLIN)
                self._last_heard = time.monotonic()
        self._send(sock, Command.DISCONNECT)
        log.info("%s: stopped after %d tasks", self.name, self.completed)

    def _drain_broker(self, sock: zmq.Socket) -> None:
        while self._held:  # what the watchdog took in while a handler held the loop: first, in order
            held, self._held = self._held, []
            for command, body in held:
                self._handle(sock, command, body)
        for _ in range(256):
            frames = P.try_recv(sock)
            if frames is None:
                return
            try:
                command, body = P.parse(frames, P.AGENT)
            except P.ProtocolError as exc:
                log.error("%s: bad message from broker: %s", self.name, exc)
                continue
            self._handle(sock, command, body)

    def _handle(self, sock: zmq.Socket, command: Command, body: Any) -> None:
        try:
            self._on_broker_message(sock, command, body)
        except Exception:  # noqa: BLE001 - a message no broker would send must not end the agent
            log.exception("%s: could not handle a %s from the broker; ignored", self.name, command.name)

    def _beat_while_busy(self, since: float) -> None:
        """On the watchdog thread, holding the socket, while a handler holds the loop:
        take in what the broker sent (the loop handles it later, in order; TASKs in it
        are ours already) and send the heartbeat the loop cannot."""
        sock = self._sock
        while (frames := P.try_recv(sock)) is not None:
            self._last_heard = time.monotonic()
            try:
                self._held.append(P.parse(frames, P.AGENT))
            except P.ProtocolError as exc:
                log.error("%s: bad message from broker: %s", self.name, exc)
        held_tasks = [body for command, body in self._held if command is Command.TASK and isinstance(body, list)]
        running = list(self._running)
        for batch in ([self._batch] if self._batch is not None else []) + held_tasks:
            running += [a["id"] for a in batch if isinstance(a, dict) and isinstance(a.get("id"), str)]
        if since != self._busy_logged:  # once per long run, not every beat
            self._busy_logged = since
            log.warning("%s: a handler has held the loop for over %.1fs; heartbeating for it", self.name,
                        self.heartbeat_interval)
        self._send(sock, Command.HEARTBEAT, {"running": running})

    def _on_broker_message(self, sock: zmq.Socket, command: Command, body: Any) -> None:
        if command is Command.TASK and isinstance(body, list):
            batches: dict[str, list[dict]] = {}
            self._batch = body
            try:
                for assignment in body:
                    if isinstance(assignment, dict) and isinstance(assignment.get("kind"), str) \
                            and assignment["kind"] in self._batch_handlers:
                        batches.setdefault(assignment["kind"], []).append(assignment)
                    else:
                        self._start(assignment)
                for kind, assignments in batches.items():
                    self._run_batch(kind, assignments)
            finally:
                self._batch = None
        elif command is Command.CANCEL and isinstance(body, dict):
            for task_id in body.get("ids", []):
                self._cancel(task_id)
        elif command is Command.DISCONNECT:
            log.info("%s: broker asked us to register again", self.name)
            self._send(sock, Command.READY, self._ready_body(0 if self._stop.is_set() else self.capacity))
        elif command is Command.ERROR:
            log.error("%s: broker error: %s", self.name, body)

    # ------------------------------------------------------------------ execution

    def _start(self, a: dict) -> None:
        if not isinstance(a, dict) or not isinstance(a.get("id"), str):
            log.error("%s: a TASK entry without a string id, ignored: %.80r", self.name, a)
            return
        task_id = a["id"]
        reg = self._handlers.get(a["kind"]) if isinstance(a.get("kind"), str) else None
        if reg is None:
            self._failed.append({"id": task_id, "error": f"{self.name} has no handler for {a.get('kind')!r}"})
            return
        if a["kind"] not in self._kinds_run:
            self._kinds_run.add(a["kind"])
            self._retune_prefetch()
        ctx = TaskContext(task_id, a["kind"], a.get("payload"), a.get("project", "default"),
                          a.get("attempt", 1), a.get("deadline"), self._report)
        if isinstance(a.get("parents"), dict):
            ctx.parents = a["parents"]
        ctx.shared_write = a.get("shared_write", True) is True
        args = (ctx.payload, ctx) if reg.wants_ctx else (ctx.payload,)
        if reg.on_loop():
            self._run_on_loop(reg, args, ctx)
        else:
            self._run_off_loop(reg, args, ctx)

    def _run_off_loop(self, reg: _Registration, args: tuple, ctx: TaskContext) -> None:
        ctx._report = self._report
        ctx._cancelled = threading.Event()  # before any thread sees ctx: no creation race
        self._running[ctx.id] = ctx
        if reg.is_async:
            import asyncio
            fut = asyncio.run_coroutine_threadsafe(self._run_async(reg, args, ctx), self._aloop)
        else:
            fut = self._pool.submit(self._run_sync, reg, args, ctx)
        self._futures[ctx.id] = fut

    def _run_on_loop(self, reg: _Registration, args: tuple, ctx: TaskContext) -> None:
        ctx._report = self._report_inline
        placement = reg.placement
        cpu = time.thread_time() if placement is not None else 0.0
        watchdog = self._watchdog
        started = watchdog.leave()
        error: BaseException | None = None
        try:
            result = reg.fn(*args)
        except BaseException as exc:  # noqa: BLE001 - a handler bug must not kill the agent
            error = exc
        finally:
            took = watchdog.back() - started
        if error is not None and placement is not None and placement.raised_on_loop(error):
            self._run_off_loop(reg, args, ctx)  # where it ran before the move, which may be why it raised
            self._retune_prefetch()
            return
        self.completed += 1
        if error is None:
            self._done.append({"id": ctx.id, "result": result})
        else:
            self._failed.append(self._failure(ctx.id, error))
        if placement is not None and placement.ran_on_loop(took, time.thread_time() - cpu if took > WAIT_FLOOR else took):
            self._retune_prefetch()

    def _retune_prefetch(self) -> None:
        """Deep credit while every kind run so far runs on the loop, one capacity's worth
        otherwise (agents/placement.py); a READY tells the broker of a change."""
        if not self._prefetch_follows_placement or self._stop.is_set() or self._sock is None:
            return
        deep = all(self._handlers[k].on_loop() for k in self._kinds_run)
        prefetch = LOOP_PREFETCH if deep and self._kinds_run else self.capacity
        if prefetch != self.prefetch:
            self.prefetch = prefetch
            self._send(self._sock, Command.READY, self._ready_body(self.capacity))

    def _run_batch(self, kind: str, assignments: list[dict]) -> None:
        contexts = [TaskContext(a["id"], kind, a.get("payload"), a.get("project", "default"), a.get("attempt", 1),
                                a.get("deadline"), self._report_inline)
                    for a in assignments if isinstance(a.get("id"), str)]
        self._watchdog.leave()
        try:
            results = self._batch_handlers[kind](contexts)
            if len(results) != len(contexts):
                raise AgentError(f"batch handler for {kind!r} returned {len(results)} results for {len(contexts)} tasks")
        except BaseException as exc:  # noqa: BLE001 - the whole batch fails, the agent lives
            results = [exc] * len(contexts)
        finally:
            self._watchdog.back()
        for ctx, result in zip(contexts, results):
            if isinstance(result, BaseException):
                self._failed.append(self._failure(ctx.id, result))
            else:
                self._done.append({"id": ctx.id, "result": result})
            self.completed += 1

    def _run_sync(self, reg: _Registration, args: tuple, ctx: TaskContext) -> None:
        started = time.monotonic()
        try:
            result = reg.fn(*args)
        except BaseException as exc:  # noqa: BLE001
            self._report("failed", ctx.id, self._failure(ctx.id, exc), time.monotonic() - started)
        else:
            self._report("done", ctx.id, result, time.monotonic() - started)

    async def _run_async(self, reg: _Registration, args: tuple, ctx: TaskContext) -> None:
        import asyncio
        try:
            result = await reg.fn(*args)
        except asyncio.CancelledError:
            self._report("failed", ctx.id, {"id": ctx.id, "error": "cancelled"})
        except BaseException as exc:  # noqa: BLE001
            self._report("failed", ctx.id, self._failure(ctx.id, exc))
        else:
            self._report("done", ctx.id, result)

    @staticmethod
    def _failure(task_id: str, exc: BaseException) -> dict[str, Any]:
        if isinstance(exc, Retry):
            return {"id": task_id, "error": str(exc) or "retry requested", "retry": True}
        if isinstance(exc, TaskCancelled):
            return {"id": task_id, "error": "cancelled"}
        if isinstance(exc, TaskError):
            entry: dict[str, Any] = {"id": task_id, "error": str(exc) or "failed"}
            if exc.result is not None:
                entry["result"] = exc.result
            return entry
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3)
        return {"id": task_id, "error": f"{type(exc).__name__}: {exc}", "traceback": "".join(tb)[-4000:]}

    def _report(self, what: str, task_id: str, data: Any, took: float = 0.0) -> None:
        """Called from worker threads (and the asyncio loop): queue it, ring the loop."""
        self._outq.put((what, task_id, data, took))
        if not self._bell_rung:
            self._bell_rung = True
            bell = self._bell
            if bell is not None:
                try:
                    os.write(bell[1], b"!")
                except (BlockingIOError, OSError):  # full (the loop will drain it) or closed (stopping)
                    pass

    def _report_inline(self, what: str, task_id: str, data: Any) -> None:
        if what == "progress":
            self._progress.append({"id": task_id, "data": data})

    def _drain_outbox(self) -> None:
        outq = self._outq
        while True:
            try:
                what, task_id, data, took = outq.get_nowait()
            except queue.Empty:
                return
            if what == "progress":
                if task_id in self._running:
                    self._progress.append({"id": task_id, "data": data})
                continue
            ctx = self._running.pop(task_id, None)
            self._futures.pop(task_id, None)
            if ctx is None:  # already reported (cancelled before it started)
                continue
            self.completed += 1
            placement = self._handlers[ctx.kind].placement
            if placement is not None and placement.ran_on_pool(took):
                self._retune_prefetch()
            if what == "done":
                if ctx._cancelled is not None and ctx._cancelled.is_set():
                    self._failed.append({"id": task_id, "error": "cancelled"})
                else:
                    self._done.append({"id": task_id, "result": data})
            else:
                self._failed.append(data)

    def _cancel(self, task_id: str) -> None:
        ctx = self._running.get(task_id)
        if ctx is None:
            return
        ctx.cancelled.set()
        fut = self._futures.get(task_id)
        if fut is not None and fut.cancel():  # never started: report it ourselves
            self._running.pop(task_id, None)
            self._futures.pop(task_id, None)
            self._failed.append({"id": task_id, "error": "cancelled"})

    def _send_packed(self, sock: zmq.Socket, command: Command, body: bytes) -> None:
        try:
            P.send(sock, [P.AGENT, P.command_byte(command), body])
        except zmq.Again:
            log.warning("%s: broker not keeping up, dropped %s", self.name, command.name)
        self._last_sent = time.monotonic()

    def _flush(self, sock: zmq.Socket) -> None:
        if self._progress:
            progress, self._progress = self._progress, []
            try:
                self._send(sock, Command.PROGRESS, progress)
            except (TypeError, ValueError):  # a handler reported something msgpack cannot carry
                self._send(sock, Command.PROGRESS, [p if _packs(p) else {"id": p["id"], "data": repr(p["data"])[:200]}
                                                    for p in progress])
        if self._done:
            done, self._done = self._done, []
            bodies, unsendable = _bodies(done)
            for body in bodies:
                self._send_packed(sock, Command.DONE, body)
            for entry, why in unsendable:  # a result no client could receive fails, with the reason
                self._failed.append({"id": entry["id"], "error": f"result {why}"})
        if self._failed:
            failed, self._failed = self._failed, []
            # ids only: an error text may quote the payload, and payloads never reach the logs
            log.info("%s: %d tasks failed: %s%s", self.name, len(failed), ", ".join(str(e["id"]) for e in failed[:5]),
                     " ..." if len(failed) > 5 else "")
            bodies, unsendable = _bodies(failed)
            for body in bodies:
                self._send_packed(sock, Command.FAILED, body)
            for entry, why in unsendable:  # keep the reason, drop the data no client could receive
                self._send(sock, Command.FAILED, [{"id": entry["id"], "error": f"{P.describe_error(entry.get('error'))} "
                                                                               f"(failure data dropped: {why})"}])


def _bodies(entries: list[dict]) -> tuple[list[bytes], list[tuple[dict, str]]]:
    """DONE/FAILED bodies under the message limit, and the entries that cannot be sent
    with why: too large, or not serializable (only those: the rest still go)."""
    try:
        bodies, oversize = P.batches_under(entries, P.MAX_BODY)
        return bodies, [(entry, f"too-large: {size} bytes exceed the {P.MAX_BODY}-byte message limit")
                        for entry, size in oversize]
    except (TypeError, ValueError):  # some entry does not pack: find which, one by one
        pass
    bodies, unsendable = [], []
    for entry in entries:
        try:
            packed = P.pack([entry])
        except (TypeError, ValueError) as exc:
            unsendable.append((entry, f"is not serializable: {exc}"))
            continue
        if len(packed) > P.MAX_BODY:
            unsendable.append((entry, f"too-large: {len(packed)} bytes exceed the {P.MAX_BODY}-byte message limit"))
        else:
            bodies.append(packed)
    return bodies, unsendable


def _packs(value: Any) -> bool:
    try:
        P.pack(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True
