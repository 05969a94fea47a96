"""asyncio client: the same operations as :class:`bus.client.Client`, awaitable.

One reader task owns the socket's receive side and resolves futures, so any number
of coroutines can submit and wait concurrently on one connection.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import deque
from typing import Any, AsyncIterator

import zmq
import zmq.asyncio

from . import protocol as P
from .client import REFETCH_INTERVAL, UnknownTask, new_id_prefix, outcome_value, task_entry
from .auth import CurveCredentials, credentials_for
from .endpoints import Endpoints, ipc_path
from .errors import BrokerUnavailable, BusError, TaskRejected
from .protocol import Command


def _settled(fut: asyncio.Future) -> None:
    """A send nobody awaits: read its exception, if any, so asyncio does not report it as
    lost (a send that failed leaves its calls to FETCH, like any lost message)."""
    if not fut.cancelled():
        fut.exception()


class AsyncClient:
    def __init__(self, endpoint: str | None = None, events: str | None = None, project: str = "default",
                 ack_timeout: float = 1.0, ctx: zmq.asyncio.Context | None = None,
                 curve: CurveCredentials | None = None) -> None:
        if endpoint is None:  # the local swarm's, as Client
            local = Endpoints.local()
            endpoint, events = local.frontend, events or local.events
        self.endpoint = endpoint
        self.curve = credentials_for(endpoint, curve)  # tcp:// is CURVE or nothing
        self.events_endpoint = events or Endpoints.events_beside(endpoint)
        self.project = project
        self.ack_timeout = ack_timeout
        self.ctx = ctx or zmq.asyncio.Context.instance()
        self._prefix = new_id_prefix()
        self._ids = itertools.count(1)
        self._acks: dict[str, asyncio.Future] = {}
        self._outcomes: dict[str, asyncio.Future] = {}
        self._status: deque[asyncio.Future] = deque()  # STATUS replies come in request order
        self._managed: dict[str, asyncio.Future] = {}  # MANAGE ref -> future
        self._sock = self.ctx.socket(zmq.DEALER)
        self._sock.linger = 0
        if self.curve is not None:
            self.curve.apply(self._sock)
        self._sock.connect(endpoint)
        self._reader: asyncio.Task | None = None
        self._calls: list[dict[str, Any]] = []  # ack=false submissions of this loop turn, sent as one SUBMIT

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
        self._sock.close(linger=0)

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read())

    def _future(self, table: dict[str, asyncio.Future], key: str) -> asyncio.Future:
        fut = table.get(key)
        if fut is None or fut.done() and table is self._acks:
            fut = table[key] = asyncio.get_running_loop().create_future()
        return fut

    async def _read(self) -> None:
        while True:
            frames = await self._sock.recv_multipart()
            try:
                command, body = P.parse(frames, P.CLIENT)
            except P.ProtocolError:
                continue
            if command is Command.ACCEPTED:
                for task_id in body or ():
                    fut = self._acks.pop(task_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)
            elif command is Command.RESULT:
                for outcome in body or ():
                    fut = self._future(self._outcomes, outcome["id"])
                    if not fut.done():
                        fut.set_result(outcome)
            elif command is Command.STATUS_REPLY:
                while self._status:
                    fut = self._status.popleft()
                    if not fut.done():  # a waiter that timed out gave up its place
                        fut.set_result(body)
                        break
            elif command is Command.MANAGED and isinstance(body, dict):
                fut = self._managed.pop(str(body.get("ref")), None)
                if fut is not None and not fut.done():
                    fut.set_result(body.get("result"))
            elif command is Command.ERROR and isinstance(body, dict):
                ref = body.get("ref")
                if ref is not None and str(ref) in self._managed:
                    fut = self._managed.pop(str(ref))
                    if not fut.done():
                        fut.set_exception(TaskRejected(body.get("code", "error"), body.get("message", "")))
                    continue
                unknown = body.get("code") == "unknown-task"
                for task_id in body.get("ids") or ():
                    # a refused submission fails its ack's waiter, and its outcome's (ack=false calls)
                    for table in (self._outcomes,) if unknown else (self._acks, self._outcomes):
                        fut = table.get(task_id)
                        if fut is not None and not fut.done():
                            fut.set_exception(UnknownTask(task_id) if unknown else
                                              TaskRejected(body.get("code", "error"), body.get("message", "")))

    def _check_reachable(self) -> None:
        path = ipc_path(self.endpoint)
        if path is not None and not os.path.exists(path):
            raise BrokerUnavailable(f"no broker at {self.endpoint}: the socket file does not exist")

    async def submit(self, kind: str, payload: Any = None, task_id: str | None = None, **opts: Any) -> str:
        """``task_id``: one from :meth:`new_id`, when the caller must know it before the
        task exists (to watch its progress from its first line)."""
        ids = await self.submit_many(kind, [payload], ids=[task_id] if task_id else None, **opts)
        return ids[0]

    async def submit_many(self, kind: str, payloads: list[Any], ids: list[str] | None = None,
                          **opts: Any) -> list[str]:
        self._check_reachable()
        self._ensure_reader()
        project = opts.pop("project", None) or self.project
        ids = ids or [self.new_id() for _ in payloads]
        entries = [task_entry(i, kind, p, project, **opts) for i, p in zip(ids, payloads)]
        ids = [e["id"] for e in entries]
        await self._send_and_wait_acks(Command.SUBMIT, entries, ids)
        return ids

    async def submit_workflow(self, steps: list[dict[str, Any]], strategy: str = "parallel",
                              workflow_id: str | None = None, project: str | None = None) -> str:
        """As :meth:`Client.submit_workflow`: the DAG's id once journaled."""
        self._check_reachable()
        self._ensure_reader()
        workflow_id = workflow_id or f"wf-{self._prefix}-{next(self._ids)}"
        await self._send_and_wait_acks(Command.WORKFLOW, {"id": workflow_id, "strategy": strategy,
                                                          "project": project or self.project, "steps": steps},
                                       [workflow_id])
        return workflow_id

    async def _send_and_wait_acks(self, command: Command, body: Any, ids: list[str]) -> None:
        futs = [self._future(self._acks, i) for i in ids]
        await self._sock.send_multipart(P.client_message(command, body))
        try:
            await asyncio.wait_for(asyncio.gather(*futs), self.ack_timeout)
        except asyncio.TimeoutError:
            for task_id in ids:
                self._acks.pop(task_id, None)
            raise BrokerUnavailable(f"no broker answered at {self.endpoint} within {self.ack_timeout:.1f}s") from None

    async def outcome(self, task_id: str, timeout: float | None = None) -> dict[str, Any]:
        self._ensure_reader()
        fut = self._future(self._outcomes, task_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                wait = REFETCH_INTERVAL if deadline is None else min(REFETCH_INTERVAL, deadline - time.monotonic())
                if wait <= 0:
                    raise TimeoutError(f"task {task_id} not finished within {timeout}s")
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), wait)
                except asyncio.TimeoutError:
                    await self._sock.send_multipart(P.client_message(Command.FETCH, {"ids": [task_id]}))
        finally:
            if fut.done():
                self._outcomes.pop(task_id, None)

    async def results(self, ids: list[str], timeout: float | None = None) -> list[dict[str, Any]]:
        """Outcomes of many tasks, in the order of ``ids`` (TimeoutError past ``timeout``)."""
        return list(await asyncio.gather(*(self.outcome(i, timeout) for i in ids)))

    async def result(self, task_id: str, timeout: float | None = None) -> Any:
        return outcome_value(await self.outcome(task_id, timeout))

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    async def call(self, kind: str, payload: Any = None, timeout: float | None = None, **opts: Any) -> Any:
        return outcome_value(await self.call_outcome(kind, payload, timeout, **opts))

    async def call_outcome(self, kind: str, payload: Any = None, timeout: float | None = None,
                           task_id: str | None = None, **opts: Any) -> dict[str, Any]:
        """Submit and wait, as :meth:`Client.call`: with ``ack=false`` the RESULT is the
        answer, so no ACCEPTED and no wait for the fsync of a task whose result the
        caller is about to hold (PROTOCOL 4.2).  A refused submission raises
        TaskRejected; one the broker never saw is FETCHed, found unknown, and raises
        UnknownTask."""
        self._check_reachable()
        self._ensure_reader()
        task_id = task_id or self.new_id()
        project = opts.pop("project", None) or self.project
        entry = task_entry(task_id, kind, payload, project, ack=False, **opts)
        self._future(self._outcomes, task_id)
        if not self._calls:  # the first of this turn: send them all once the turn's coroutines queued theirs
            asyncio.get_running_loop().call_soon(self._send_calls)
        self._calls.append(entry)
        return await self.outcome(task_id, timeout)

    def _send_calls(self) -> None:
        """One SUBMIT for every call() made in one loop turn (cut under the broker's
        limit): a burst of concurrent calls, as an IDE pipelines them, costs the broker
        one message, not one each."""
        entries, self._calls = self._calls, []
        bodies, oversize = P.batches_under(entries, P.MAX_BODY)
        for body in bodies:
            self._sock.send_multipart([P.CLIENT, P.command_byte(Command.SUBMIT), body]).add_done_callback(_settled)
        for entry, size in oversize:
            fut = self._outcomes.get(entry["id"])
            if fut is not None and not fut.done():
                fut.set_exception(TaskRejected("too-large", f"the task is {size} bytes, over the "
                                                            f"{P.MAX_BODY}-byte limit of one message"))

    async def cancel(self, *ids: str) -> None:
        self._check_reachable()
        await self._sock.send_multipart(P.client_message(Command.CANCEL, {"ids": list(ids)}))

    async def status(self, ids: list[str] | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Concurrent calls are fine: replies come in request order, one future each."""
        self._check_reachable()
        self._ensure_reader()
        fut = asyncio.get_running_loop().create_future()
        self._status.append(fut)
        await self._sock.send_multipart(P.client_message(Command.STATUS, {"ids": ids or []}))
        try:
            return await asyncio.wait_for(fut, timeout or self.ack_timeout)
        except asyncio.TimeoutError:
            raise BrokerUnavailable(f"no broker answered STATUS at {self.endpoint}") from None

    async def manage(self, op: str, timeout: float | None = None, **fields: Any) -> Any:
        """One MANAGE request (PROTOCOL 4.4): its result, or TaskRejected if refused."""
        self._check_reachable()
        self._ensure_reader()
        ref = f"{self._prefix}-m{next(self._ids)}"
        fut = self._managed[ref] = asyncio.get_running_loop().create_future()
        body = {"op": op, "ref": ref, **{k: v for k, v in fields.items() if v is not None}}
        await self._sock.send_multipart(P.client_message(Command.MANAGE, body))
        try:
            return await asyncio.wait_for(fut, timeout or max(self.ack_timeout, 5.0))
        except asyncio.TimeoutError:
            raise BrokerUnavailable(f"no broker answered MANAGE {op} at {self.endpoint}") from None
        finally:
            self._managed.pop(ref, None)

    async def tasks(self, state: str | None = None, kind: str | None = None, project: str | None = None,
                    limit: int = 100) -> list[dict[str, Any]]:
        """Live and recently finished tasks, newest first (as :meth:`Client.tasks`)."""
        return await self.manage("tasks", state=state, kind=kind, project=project, limit=limit)

    async def subscribe(self, *topics: str) -> AsyncIterator[tuple[str, Any]]:
        if not self.events_endpoint:
            raise BusError("no events endpoint known; pass events= to AsyncClient")
        sub = self.ctx.socket(zmq.SUB)
        sub.linger = 0
        prefix = b""
        if self.events_endpoint.startswith("tcp://"):  # remote events name their project
            if self.curve is not None:
                self.curve.apply(sub)
            prefix = self.project.encode() + b"\x00"
        sub.connect(self.events_endpoint)
        for topic in topics or ("",):
            sub.subscribe(prefix + topic.encode())
        try:
            while True:
                frames = await sub.recv_multipart()
                if prefix and frames[0].startswith(prefix):
                    frames[0] = frames[0][len(prefix):]
                try:
                    yield frames[0].decode(errors="replace"), P.unpack(frames[1])
                except Exception:
                    continue
        finally:
            sub.close(linger=0)
