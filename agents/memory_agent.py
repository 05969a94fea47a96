"""The memory agent: swarm memory over the bus, for agents in any language.

Kinds ``memory.get/put/delete/items/cas/incr/search/namespaces``.  Payloads name a
namespace with ``ns`` (default: the task's own ``project:<name>``).  A task reads and
writes its own project's namespace and reads ``shared``; it writes ``shared`` only
when the broker vouches that its submitter may (``shared_write`` in the assignment).
The broker sets the task's project from the submitter's identity, so one project
can neither read nor overwrite another's memory through the bus.

A feed thread tails the store's change feed and publishes ``memory.changed``
events, whichever process made the change.
"""

from __future__ import annotations

import argparse
import logging
import threading
from typing import Any

import zmq

from bus import protocol as P
from store import SHARED, Forbidden, Memory, project_namespace

from .runtime import Agent, TaskContext

WRITE_KINDS = {"memory.put", "memory.delete", "memory.cas", "memory.incr"}
_NS = "ns?: namespace (default project:<project>; 'shared' for all)"
#: What ``orchflow kinds`` shows for each memory kind.
PAYLOAD_FIELDS = {
    "memory.get": f"key, default?, {_NS}",
    "memory.put": f"key, value, ttl?: seconds, {_NS}",
    "memory.delete": f"key, {_NS}",
    "memory.cas": f"key, expected, value, ttl?, {_NS}",
    "memory.incr": f"key, delta?: int (default 1), {_NS}",
    "memory.items": f"prefix?, {_NS}",
    "memory.search": f"text, {_NS}",
    "memory.namespaces": "{} : the namespaces this project may use",
}


class MemoryService:
    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    @staticmethod
    def namespace(payload: dict, ctx: TaskContext, write: bool) -> str:
        own = project_namespace(ctx.project)
        ns = payload.get("ns") or own
        if ns not in (own, SHARED):
            raise Forbidden(f"project {ctx.project!r} may use only {own!r} and {SHARED!r}, not {ns!r}")
        if write and ns == SHARED and not ctx.shared_write:
            raise Forbidden(f"project {ctx.project!r} may read {SHARED!r} but not write it")
        return ns

    def handle(self, kind: str, payload: Any, ctx: TaskContext) -> Any:
        if not isinstance(payload, dict):
            raise ValueError(f"{kind} payload must be a map")
        m = self.memory
        ns = self.namespace(payload, ctx, kind in WRITE_KINDS)
        key = payload.get("key")
        if kind == "memory.get":
            return m.get(ns, key, payload.get("default"))
        if kind == "memory.put":
            m.put(ns, key, payload.get("value"), ttl=payload.get("ttl"))
            return True
        if kind == "memory.delete":
            return m.delete(ns, key)
        if kind == "memory.cas":
            return m.cas(ns, key, payload.get("expected"), payload.get("value"), ttl=payload.get("ttl"))
        if kind == "memory.incr":
            return m.incr(ns, key, payload.get("delta", 1))
        if kind == "memory.items":
            return [[k, v] for k, v in m.items(ns, payload.get("prefix", ""))]
        if kind == "memory.search":
            return [[k, v] for k, v in m.search(ns, str(payload.get("text", "")))]
        if kind == "memory.namespaces":  # only the ones this task may use
            return [n for n in m.namespaces() if n in (ns, SHARED, project_namespace(ctx.project))]
        raise ValueError(f"unknown memory kind {kind!r}")

    def register(self, agent: Agent) -> None:
        for kind in ("memory.get", "memory.put", "memory.delete", "memory.cas", "memory.incr",
                     "memory.items", "memory.search", "memory.namespaces"):
            agent.add_handler(kind, lambda payload, ctx, _k=kind: self.handle(_k, payload, ctx))


FEED_BATCH = 1000  # changes read per feed transaction while draining


def publish_changes(memory: Memory, events_in: str, stop: threading.Event, interval: float = 0.1,
                    sweep_every: float = 60.0) -> None:
    """Tail the change feed into ``memory.changed`` events, and sweep expired entries.

    Runs on its own thread with its own socket (sockets are not shared across threads).
    """
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.linger = 0
    pub.connect(events_in)
    since = memory.last_change()  # only what happens from now on
    ticks_per_sweep = max(1, int(sweep_every / interval))
    tick = 0
    try:
        while not stop.wait(interval):
            tick += 1
            if tick % ticks_per_sweep == 0:
                memory.sweep()
            since = publish_pending(memory, pub, since)
    finally:
        pub.close()


def publish_pending(memory: Memory, pub: zmq.Socket, since: int) -> int:
    """Publish every change after ``since``; returns the last seq published.

    Drains the feed, not one batch per tick: a tick's worth of changes may exceed a
    batch, and a watcher that reads less than is written falls behind until the feed
    is trimmed past it."""
    while True:
        changes = memory.changes(since, limit=FEED_BATCH)
        for change in changes:
            pub.send_multipart([b"memory.changed", P.pack(change)])
        if changes:
            since = changes[-1]["seq"]
        if len(changes) < FEED_BATCH:
            return since


def serve_memory(agent: Agent, path: str | None, events_in: str | None) -> threading.Event:
    """Make ``agent`` serve memory.* from the LMDB at ``path``; with ``events_in``, also publish
    the change feed.  Set the returned event to stop the feed thread."""
    memory = Memory(path)
    MemoryService(memory).register(agent)
    stop = threading.Event()
    if events_in:
        threading.Thread(target=publish_changes, args=(memory, events_in, stop), daemon=True).start()
    return stop


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m agents.memory_agent", description=__doc__)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--events-in", default=None)
    ap.add_argument("--memory", default=None, help="LMDB directory (default $ORCHFLOW_HOME/memory)")
    ap.add_argument("--name", default="memory")
    ap.add_argument("--capacity", type=int, default=4)
    ap.add_argument("--heartbeat", type=float, default=1.0)
    ap.add_argument("--kinds", default=None, help="ignored; memory kinds are fixed")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    agent = Agent(args.endpoint, name=args.name, capacity=args.capacity, heartbeat_interval=args.heartbeat)
    stop = serve_memory(agent, args.memory, args.events_in)
    agent.install_signal_handlers()
    try:
        agent.run()
    finally:
        stop.set()


if __name__ == "__main__":
    main()
