"""One SUB socket for every connection of a bridge, subscribed to the union of what
they asked for.  The broker builds only the events someone subscribed to, so the hub
subscribes a topic while at least one subscription needs it, and unsubscribes when the
last goes.  ``task.progress`` stays subscribed from the start: a task's first progress
line can come milliseconds after its submission, sooner than a new subscription
reaches the broker.  :meth:`EventHub.live` waits until the subscriptions made so far
are in force (a probe through events-in, as ``Subscription.wait_live``).  ZeroMQ
resends subscriptions when the swarm's event proxy comes back after a restart."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from typing import Any, Callable

import zmq
import zmq.asyncio

from bus import protocol as P
from bus.client import PROBE_PREFIX

log = logging.getLogger("orchflow.bridge")

Deliver = Callable[[str, Any], None]


class EventHub:
    def __init__(self, endpoint: str, ctx: zmq.asyncio.Context | None = None) -> None:
        self.endpoint = endpoint
        self.ctx = ctx or zmq.asyncio.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.linger = 0
        self.sock.connect(endpoint)
        self._topics: dict[str, int] = {}
        self._subs: dict[str, tuple[list[str], Deliver]] = {}
        self._progress: dict[str, Deliver] = {}  # task id -> where its progress goes
        self._ids = itertools.count(1)
        self._reader: asyncio.Task | None = None
        self._probe: tuple[bytes, asyncio.Future] | None = None
        self._want("task.progress")  # for good: see the module docstring

    async def live(self, events_in: str | None, timeout: float = 2.0) -> bool:
        """Until a probe published through ``events_in`` comes back (so every topic
        subscribed before it is in force); False if it never came."""
        if not events_in:
            return False
        topic = PROBE_PREFIX + secrets.token_hex(8).encode()
        self.sock.subscribe(topic)
        fut = asyncio.get_running_loop().create_future()
        self._probe = (topic, fut)
        pub = self.ctx.socket(zmq.PUB)
        pub.linger = 0
        pub.connect(events_in)
        try:
            deadline = time.monotonic() + timeout
            while not fut.done() and time.monotonic() < deadline:
                await pub.send_multipart([topic, P.pack(None)])
                try:
                    await asyncio.wait_for(asyncio.shield(fut), 0.01)
                except asyncio.TimeoutError:
                    pass
            return fut.done()
        finally:
            pub.close(linger=0)
            self.sock.unsubscribe(topic)
            self._probe = None

    def _want(self, topic: str) -> None:
        self._topics[topic] = self._topics.get(topic, 0) + 1
        if self._topics[topic] == 1:
            self.sock.subscribe(topic.encode())
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())

    def _drop(self, topic: str) -> None:
        self._topics[topic] -= 1
        if self._topics[topic] == 0:
            del self._topics[topic]
            self.sock.unsubscribe(topic.encode())

    def subscribe(self, topics: list[str], deliver: Deliver) -> str:
        sid = f"s{next(self._ids)}"
        topics = list(topics) or [""]
        for topic in topics:
            self._want(topic)
        self._subs[sid] = (topics, deliver)
        return sid

    def unsubscribe(self, sid: str) -> bool:
        found = self._subs.pop(sid, None)
        if found is None:
            return False
        for topic in found[0]:
            self._drop(topic)
        return True

    def watch_progress(self, task_id: str, deliver: Deliver) -> None:
        self._progress[task_id] = deliver

    def unwatch_progress(self, task_id: str) -> None:
        self._progress.pop(task_id, None)

    async def _read(self) -> None:
        while True:
            frames = await self.sock.recv_multipart()
            if self._probe is not None and frames[0] == self._probe[0]:
                if not self._probe[1].done():
                    self._probe[1].set_result(None)
                continue
            if frames[0].startswith(PROBE_PREFIX):
                continue  # another client's probe
            try:
                topic, body = frames[0].decode(errors="replace"), P.unpack(frames[1])
            except Exception:  # noqa: BLE001 - junk from a third-party publisher: skip it
                continue
            if topic == "task.progress" and isinstance(body, dict):
                deliver = self._progress.get(str(body.get("id")))
                if deliver is not None:
                    self._call(deliver, topic, body)
            for sid, (topics, deliver) in list(self._subs.items()):
                if any(topic.startswith(t) for t in topics):
                    self._call(deliver, sid, (topic, body))

    @staticmethod
    def _call(deliver: Deliver, key: str, body: Any) -> None:
        try:
            deliver(key, body)
        except Exception:  # noqa: BLE001 - one connection's failure must not stop the others
            log.exception("event delivery failed")

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        self.sock.close(linger=0)
