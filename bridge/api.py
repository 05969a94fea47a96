"""The methods the IDE calls, in orchflow's API groups: swarm, tasks, workflows, memory,
neural, events.  Each takes named params (bridge/params.py) and returns what JSON can
carry (bridge/jsonsafe.py does the rest).  docs/IDE.md documents each with examples.

Memory and neural methods are tasks of the built-in kinds (``memory.*`` served by the
built-in agents, ``neural.*`` by the neural pool): the bridge adds no second path to the
stores, so rights, projects and durability are the swarm's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

from bus import protocol as P
from bus.client import outcome_value
from bus.errors import BrokerUnavailable, TaskRejected, UnknownTask

from .errors import REJECTED, TIMEOUT, UNKNOWN_TASK, RpcError, invalid_params, unavailable
from .events import EventHub
from .jsonsafe import from_json, to_json
from .params import Params
from .swarm import READY, STOPPED, SwarmLink, launch_detached, launcher_alive

Notify = Callable[[str, dict[str, Any]], None]
Progress = Callable[[dict[str, Any]], Awaitable[None]]

DEFAULT_WAIT = 30.0
MAX_WAIT = 24 * 3600.0
TASK_STATES = tuple(sorted(P.State.ALL))


class Session:
    """One connection: where its notifications go, and what to undo when it closes."""

    def __init__(self, notify: Notify) -> None:
        self.notify = notify
        self.subscriptions: set[str] = set()
        self.watched: set[str] = set()


class OrchflowAPI:
    def __init__(self, link: SwarmLink, project: str = "default") -> None:
        self.link = link
        self.project = project
        self.hub: EventHub | None = None
        self.methods: dict[str, Callable[[Params, Session], Awaitable[Any]]] = {
            "swarm.status": self.swarm_status, "swarm.agents": self.swarm_agents,
            "swarm.start": self.swarm_start, "swarm.stop": self.swarm_stop,
            "tasks.submit": self.tasks_submit, "tasks.submit_many": self.tasks_submit_many,
            "tasks.result": self.tasks_result, "tasks.cancel": self.tasks_cancel,
            "tasks.status": self.tasks_status, "tasks.list": self.tasks_list,
            "workflows.submit": self.workflows_submit,
            "memory.get": self.memory_get, "memory.put": self.memory_put, "memory.delete": self.memory_delete,
            "memory.list": self.memory_list, "memory.search": self.memory_search, "memory.cas": self.memory_cas,
            "neural.create": self.neural_create, "neural.load": self.neural_load, "neural.train": self.neural_train,
            "neural.run": self.neural_run, "neural.list": self.neural_list,
            "events.subscribe": self.events_subscribe, "events.unsubscribe": self.events_unsubscribe,
        }

    async def call(self, method: str, params: Any, session: Session) -> Any:
        p = Params(params)
        result = await self.methods[method](p, session)
        return to_json(result)

    async def run_with_progress(self, kind: str, payload: Any, project: str, timeout: float,
                                progress: Progress) -> Any:
        """Submit, pass each of the task's progress events to ``progress``, return its
        result (an error carrying the outcome if it did not succeed).  For MCP tools."""
        return to_json(await self._run(kind, from_json(payload), project, timeout, None, progress))

    def close_session(self, session: Session) -> None:
        if self.hub is not None:
            for sid in session.subscriptions:
                self.hub.unsubscribe(sid)
            for task_id in session.watched:
                self.hub.unwatch_progress(task_id)

    # ------------------------------------------------------------------ plumbing

    async def _hub(self) -> EventHub:
        """The event hub, made on first need and live before it is used: a watch or a
        subscription made now misses nothing published after it."""
        self.link.require()
        if self.hub is None:
            hub = EventHub(self.link.endpoints["events"])
            await hub.live(self.link.endpoints.get("events_in"))
            if self.hub is None:
                self.hub = hub
            else:  # another request made one meanwhile
                hub.close()
        return self.hub

    async def _guard(self, coro: Awaitable[Any], task_id: str | None = None) -> Any:
        """Bus errors as JSON-RPC errors; a swarm that goes away fails the request.  A
        wait that ran out names ``task_id``: the task goes on."""
        try:
            return await self.link.guarded(coro)
        except TaskRejected as exc:
            raise RpcError(REJECTED, str(exc), {"code": exc.code}) from None
        except UnknownTask as exc:
            raise RpcError(UNKNOWN_TASK, str(exc)) from None
        except BrokerUnavailable as exc:
            raise unavailable(self.link.state, str(exc)) from None
        except TimeoutError as exc:
            raise RpcError(TIMEOUT, str(exc), {"id": task_id} if task_id else None) from None

    def _project(self, p: Params) -> str:
        return p.text("project", self.project)

    def _options(self, p: Params) -> dict[str, Any]:
        opts = {"priority": p.integer("priority", None, 0, 9), "delay": p.number("delay", None, 0, MAX_WAIT),
                "timeout": p.number("deadline", None, 0.001, MAX_WAIT)}
        retries = p.any("retry")
        if retries is not None:
            opts["retry"] = from_json(retries)  # an int or a policy map: the broker checks it (bad-field)
        return {k: v for k, v in opts.items() if v is not None}

    @staticmethod
    def _check_size(payloads: list[Any]) -> None:
        try:
            size = sum(len(P.pack(x)) for x in payloads)
        except (ValueError, TypeError, OverflowError) as exc:  # msgpack: too deep, int beyond 64 bits
            raise RpcError(REJECTED, f"bad-field: payload cannot be encoded: {exc}", {"code": "bad-field"}) from None
        if size + 1024 * len(payloads) > P.MAX_BODY:
            raise RpcError(REJECTED, f"too-large: {size} bytes of payloads exceed the {P.MAX_BODY}-byte limit "
                                     "of one request", {"code": "too-large"})

    async def _outcome(self, task_id: str, wait: bool, timeout: float) -> dict[str, Any]:
        client = self.link.require()
        if not wait:
            states = (await self._guard(client.status([task_id]))).get("tasks") or {}
            state = states.get(task_id)
            if state is None:
                raise RpcError(UNKNOWN_TASK, f"no such task {task_id!r}")
            if state not in P.State.FINAL:
                return {"id": task_id, "state": state}
            timeout = 5.0
        return await self._guard(client.outcome(task_id, timeout), task_id)

    async def _run(self, kind: str, payload: Any, project: str, timeout: float,
                   session: Session | None = None, progress: Progress | None = None) -> Any:
        """Submit, wait, return the result: a failed task is an error with its outcome."""
        outcome = await self._submit_and_wait(kind, payload, project, timeout, session, progress)
        if outcome.get("state") != P.State.DONE:
            raise RpcError(REJECTED, f"{kind} {outcome.get('state')}: {outcome.get('error')}",
                           {"code": "task-" + str(outcome.get("state")), "outcome": to_json(outcome)})
        return outcome_value(outcome)

    async def _submit_and_wait(self, kind: str, payload: Any, project: str, timeout: float,
                               session: Session | None, progress: Progress | None,
                               opts: dict[str, Any] | None = None) -> dict[str, Any]:
        client = self.link.require()
        self._check_size([payload])
        task_id = client.new_id()
        watching = progress is not None or session is not None
        if watching:
            await self._watch(task_id, session, progress)  # before the submission: no early line is missed
        try:
            return await self._guard(client.call_outcome(kind, payload, timeout, task_id=task_id, project=project,
                                                         **(opts or {})), task_id)
        finally:
            if watching:
                self._unwatch(task_id, session)

    async def _watch(self, task_id: str, session: Session | None, progress: Progress | None) -> None:
        loop = asyncio.get_running_loop()

        def deliver(_topic: str, body: Any) -> None:
            data = to_json(body.get("data")) if isinstance(body, dict) else None
            if progress is not None:
                loop.create_task(progress({"id": task_id, "data": data}))
            elif session is not None:
                session.notify("progress", {"id": task_id, "data": data})

        (await self._hub()).watch_progress(task_id, deliver)
        if session is not None:
            session.watched.add(task_id)

    def _unwatch(self, task_id: str, session: Session | None) -> None:
        if self.hub is not None:
            self.hub.unwatch_progress(task_id)
        if session is not None:
            session.watched.discard(task_id)

    # ------------------------------------------------------------------ swarm

    async def swarm_status(self, p: Params, s: Session) -> Any:
        p.done()
        info = self.link.info()
        if self.link.broker_up:
            info["swarm"] = await self._guard(self.link.require().status())
        return info

    async def swarm_agents(self, p: Params, s: Session) -> Any:
        p.done()
        return (await self._guard(self.link.require().status()))["agents"]

    async def swarm_start(self, p: Params, s: Session) -> Any:
        agents = p.integer("agents", None, 1, 64)
        capacity = p.integer("capacity", None, 1, 4096)
        wait = p.number("timeout", 60.0, 1, 600)
        p.done()
        if not launcher_alive(self.link.home):
            extra = (["--agents", str(agents)] if agents else []) + (["--capacity", str(capacity)] if capacity else [])
            code = await asyncio.to_thread(launch_detached, self.link.home, extra)
            if code != 0:
                raise unavailable(STOPPED, f"orchflow-launch --detach exited {code}; see "
                                           f"{self.link.home / 'logs' / 'launcher.log'}")
        await self.link.check()
        if not await self.link.wait_for((READY,), wait):
            raise unavailable(self.link.state, f"not ready within {wait:g}s")
        return self.link.info()

    async def swarm_stop(self, p: Params, s: Session) -> Any:
        p.done()
        from launcher.orchflow_launch import stop_swarm
        code = await asyncio.to_thread(stop_swarm, self.link.home)
        await self.link.check()
        return {"stopped": code == 0, **self.link.info()}

    # ------------------------------------------------------------------ tasks

    async def tasks_submit(self, p: Params, s: Session) -> Any:
        kind, payload, project = p.text("kind"), from_json(p.any("payload")), self._project(p)
        opts = self._options(p)
        wait, progress = p.flag("wait"), p.flag("progress")
        timeout = p.number("timeout", DEFAULT_WAIT, 0.001, MAX_WAIT)
        p.done()
        client = self.link.require()
        if wait:
            return await self._submit_and_wait(kind, payload, project, timeout, s if progress else None, None, opts)
        self._check_size([payload])
        task_id = client.new_id()
        if progress:  # watched before it exists, so its first line is not missed; until the session
            await self._watch(task_id, s, None)  # closes, or tasks.result saw it final
        try:
            await self._guard(client.submit(kind, payload, task_id=task_id, project=project, **opts))
        except RpcError:
            if progress:
                self._unwatch(task_id, s)
            raise
        return {"id": task_id}

    async def tasks_submit_many(self, p: Params, s: Session) -> Any:
        kind, project = p.text("kind"), self._project(p)
        payloads = [from_json(x) for x in p.items("payloads", P.MAX_BATCH)]
        opts = self._options(p)
        p.done()
        client = self.link.require()
        self._check_size(payloads)
        return {"ids": await self._guard(client.submit_many(kind, payloads, project=project, **opts))}

    async def tasks_result(self, p: Params, s: Session) -> Any:
        task_id = p.text("id")
        wait = p.flag("wait", True)
        timeout = p.number("timeout", DEFAULT_WAIT, 0.001, MAX_WAIT)
        p.done()
        outcome = await self._outcome(task_id, wait, timeout)
        if task_id in s.watched and outcome.get("state") in P.State.FINAL:
            self._unwatch(task_id, s)  # its progress is over
        return outcome

    async def tasks_cancel(self, p: Params, s: Session) -> Any:
        ids = p.strings("ids", max_items=P.MAX_BATCH) if p.has("ids") else [p.text("id")]
        p.done()
        if not ids:
            raise invalid_params("'ids' must not be empty")
        client = self.link.require()
        await self._guard(client.cancel(*ids))
        return {"sent": ids}

    async def tasks_status(self, p: Params, s: Session) -> Any:
        ids = p.strings("ids", max_items=P.MAX_BATCH)
        p.done()
        if not ids:
            raise invalid_params("'ids' must not be empty")
        reply = await self._guard(self.link.require().status(ids))
        return reply.get("tasks") or {}

    async def tasks_list(self, p: Params, s: Session) -> Any:
        state = p.text("state", None)
        if state is not None and state not in TASK_STATES + ("live",):
            raise invalid_params(f"'state' must be 'live' or one of {list(TASK_STATES)}")
        kind, project = p.text("kind", None), p.text("project", None)
        limit = p.integer("limit", 100, 1, P.MAX_LIST)
        p.done()
        return await self._guard(self.link.require().tasks(state=state, kind=kind, project=project, limit=limit))

    async def workflows_submit(self, p: Params, s: Session) -> Any:
        steps = from_json(p.items("steps", P.MAX_BATCH))
        strategy = p.text("strategy", "parallel")
        project = self._project(p)
        wait = p.flag("wait")
        timeout = p.number("timeout", DEFAULT_WAIT, 0.001, MAX_WAIT)
        p.done()
        client = self.link.require()
        self._check_size([steps])
        wf_id = await self._guard(client.submit_workflow(steps, strategy=strategy, project=project))
        if wait:
            return await self._outcome(wf_id, True, timeout)
        return {"id": wf_id}

    # ------------------------------------------------------------------ memory (tasks of memory.*)

    async def _memory(self, kind: str, p: Params, fields: dict[str, Any]) -> Any:
        ns = p.text("ns", None)
        project = self._project(p)
        timeout = p.number("timeout", DEFAULT_WAIT, 0.001, 600)
        p.done()
        payload = {k: v for k, v in fields.items() if v is not None}
        if ns is not None:
            payload["ns"] = ns
        return await self._run(kind, payload, project, timeout)

    async def memory_get(self, p: Params, s: Session) -> Any:
        return await self._memory("memory.get", p, {"key": p.text("key"), "default": from_json(p.any("default"))})

    async def memory_put(self, p: Params, s: Session) -> Any:
        if not p.has("value"):
            raise invalid_params("'value' is required")
        return await self._memory("memory.put", p, {"key": p.text("key"), "value": from_json(p.any("value")),
                                                    "ttl": p.number("ttl", None, 0.001, 1e9)})

    async def memory_delete(self, p: Params, s: Session) -> Any:
        return await self._memory("memory.delete", p, {"key": p.text("key")})

    async def memory_list(self, p: Params, s: Session) -> Any:
        return await self._memory("memory.items", p, {"prefix": p.text("prefix", "", nonempty=False)})

    async def memory_search(self, p: Params, s: Session) -> Any:
        return await self._memory("memory.search", p, {"text": p.text("text")})

    async def memory_cas(self, p: Params, s: Session) -> Any:
        if not p.has("value"):
            raise invalid_params("'value' is required")
        return await self._memory("memory.cas", p, {"key": p.text("key"), "expected": from_json(p.any("expected")),
                                                    "value": from_json(p.any("value")),
                                                    "ttl": p.number("ttl", None, 0.001, 1e9)})

    # ------------------------------------------------------------------ neural (tasks of neural.*)

    async def neural_create(self, p: Params, s: Session) -> Any:
        layers = p.any("layers")
        if not isinstance(layers, list) or not 2 <= len(layers) <= 64 or \
                not all(isinstance(n, int) and not isinstance(n, bool) and 0 < n <= 100_000 for n in layers):
            raise invalid_params("'layers' must be 2..64 positive integers: inputs, hidden..., outputs")
        payload = {"name": p.text("name"), "layers": layers, "activation": p.text("activation", None),
                   "output_activation": p.text("output_activation", None), "shortcut": p.flag("shortcut"),
                   "seed": p.integer("seed", None, 0, 2**31 - 1)}
        return await self._neural("neural.create", p, payload, s)

    async def neural_load(self, p: Params, s: Session) -> Any:
        return await self._neural("neural.load", p, {"name": p.text("name"), "fann": p.text("fann")}, s)

    async def neural_train(self, p: Params, s: Session) -> Any:
        payload = {"name": p.text("name"), "data_text": p.text("data_text", None),
                   "data": from_json(p.any("data")), "max_epochs": p.integer("max_epochs", None, 1, 10_000_000),
                   "desired_error": p.number("desired_error", None, 0, 1e9), "algorithm": p.text("algorithm", None),
                   "cascade_neurons": p.integer("cascade_neurons", None, 1, 10_000),
                   "report_every": p.integer("report_every", None, 1, 10_000_000)}
        if payload["data_text"] is None and payload["data"] is None:
            raise invalid_params("give 'data_text' (a FANN data file's text) or 'data' ({inputs, outputs})")
        return await self._neural("neural.train", p, payload, s, progress=p.flag("progress", True))

    async def neural_run(self, p: Params, s: Session) -> Any:
        if not p.has("input"):
            raise invalid_params("'input' is required: a vector, or a list of vectors")
        return await self._neural("neural.run", p, {"name": p.text("name"), "input": p.any("input"),
                                                    "version": p.integer("version", None, 1, 2**31)}, s)

    async def neural_list(self, p: Params, s: Session) -> Any:
        return await self._neural("neural.list", p, {}, s)

    async def _neural(self, kind: str, p: Params, fields: dict[str, Any], s: Session, progress: bool = False) -> Any:
        project = self._project(p)
        timeout = p.number("timeout", 600.0 if kind == "neural.train" else DEFAULT_WAIT, 0.001, MAX_WAIT)
        p.done()
        payload = {k: v for k, v in fields.items() if v is not None}
        return await self._run(kind, payload, project, timeout, s if progress else None)

    # ------------------------------------------------------------------ events

    async def events_subscribe(self, p: Params, s: Session) -> Any:
        topics = p.strings("topics", [], max_items=64)
        p.done()
        if any(len(t.encode()) > P.MAX_KIND_BYTES + 16 for t in topics):
            raise invalid_params("a topic is too long")

        def deliver(sid: str, event: Any) -> None:
            topic, body = event
            s.notify("event", {"subscription": sid, "topic": topic, "event": to_json(body), "received": time.time()})

        sid = (await self._hub()).subscribe(topics, deliver)
        s.subscriptions.add(sid)
        return {"subscription": sid, "topics": topics or [""]}

    async def events_unsubscribe(self, p: Params, s: Session) -> Any:
        sid = p.text("subscription")
        p.done()
        if sid not in s.subscriptions:
            raise invalid_params(f"no subscription {sid!r} on this connection")
        s.subscriptions.discard(sid)
        if self.hub is not None:
            self.hub.unsubscribe(sid)
        return {"unsubscribed": sid}
