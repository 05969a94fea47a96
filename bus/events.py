"""The event plane: an XSUB/XPUB proxy running in libzmq, and the broker's publisher.

The proxy runs in ``zmq.proxy`` on its own thread, i.e. entirely in C without the
GIL, so event fan-out costs the broker loop nothing and runs close to raw PUB->SUB
speed.  It has a context of its own, and stopping it terminates that context: the
blocked proxy returns with ETERM.  (``proxy_steerable``'s TERMINATE was sometimes
never seen with libzmq 4.3.5, leaving the broker waiting at shutdown.)  Third-party publishers connect a PUB to ``events_in``;
subscribers connect a SUB to ``events_out``.

The broker publishes through an XPUB *connected* to the proxy's XSUB: subscriptions
flow upstream to it, so it knows which topics anybody wants and skips building
events nobody listens to (the common case under load).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import zmq

from .protocol import pack, send, try_recv

#: Largest event body the broker publishes: bigger values (progress data, errors) are
#: cut to a preview.  With the HWM below it bounds what one slow subscriber can hold
#: in *bytes*: DEFAULT_EVENT_HWM x (MAX_EVENT_BYTES + topic) = about 16 MiB.
MAX_EVENT_BYTES = 8 * 1024
#: Events queued per subscriber before libzmq drops for that subscriber only.
DEFAULT_EVENT_HWM = 2048
#: Third-party publishers' frames above this drop their connection (ZMQ_MAXMSGSIZE).
MAX_EVENT_FRAME = 2 * MAX_EVENT_BYTES


class EventProxy:
    """XSUB (publishers in) -> XPUB (subscribers out), in libzmq, on a private context."""

    def __init__(self, events_in: str, events_out: str, hwm: int = DEFAULT_EVENT_HWM) -> None:
        self.ctx = zmq.Context()  # private: terminating it is how the proxy stops
        self.events_in = events_in
        self.events_out = events_out
        self.inproc = f"inproc://orchflow-events-{id(self):x}"
        self.hwm = hwm
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="orchflow-event-proxy", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            self.ctx.term()
            raise self._error

    def _run(self) -> None:
        xsub = self.ctx.socket(zmq.XSUB)
        xpub = self.ctx.socket(zmq.XPUB)
        try:
            for s in (xsub, xpub):
                s.linger = 0
            xsub.rcvhwm = self.hwm
            xsub.maxmsgsize = MAX_EVENT_FRAME  # what publishers send is bounded in bytes too
            xpub.sndhwm = self.hwm  # slow subscribers lose events, never stall the proxy
            xsub.bind(self.events_in)
            xsub.bind(self.inproc)
            xpub.bind(self.events_out)
        except BaseException as exc:  # surfaced to start()
            self._error = exc
            xsub.close()
            xpub.close()
            self._ready.set()
            return
        self._ready.set()
        try:
            zmq.proxy(xsub, xpub)
        except zmq.ContextTerminated:
            pass
        finally:
            xsub.close(linger=0)
            xpub.close(linger=0)

    def stop(self) -> None:
        """Close every other socket of ``self.ctx`` (the publisher) before calling this."""
        self.ctx.term()
        self._thread.join(5)


class EventPublisher:
    """Publishes ``[topic, msgpack body]`` and knows which topics have subscribers.

    An XPUB connected to the proxy's XSUB: subscriptions flow up to it, so it can
    skip events nobody wants, and wait briefly for a subscriber that is (re)joining.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, hwm: int = DEFAULT_EVENT_HWM) -> None:
        self.sock = ctx.socket(zmq.XPUB)
        self.sock.linger = 0
        self.sock.sndhwm = hwm
        self.sock.connect(endpoint)
        self._prefixes: dict[bytes, int] = {}
        self._wanted: dict[str, bool] = {}
        self.dropped = 0
        self.truncated = 0
        self.remote: Any = None  # a RemoteEvents for other hosts' subscribers, when the broker has one

    def on_subscription(self) -> None:
        """Drain subscription changes forwarded by the proxy."""
        while (frames := try_recv(self.sock)) is not None:
            msg = frames[0]
            if not msg:
                continue
            prefix = msg[1:]
            if msg[0] == 1:
                self._prefixes[prefix] = self._prefixes.get(prefix, 0) + 1
            elif msg[0] == 0 and prefix in self._prefixes:
                self._prefixes[prefix] -= 1
                if self._prefixes[prefix] <= 0:
                    del self._prefixes[prefix]
            self._wanted.clear()

    def wait_for_subscriber(self, topic: str, timeout: float) -> bool:
        """Block up to ``timeout`` s until someone subscribes to ``topic`` (for rare events
        published right after a restart, when subscribers are still reconnecting)."""
        deadline = time.monotonic() + timeout
        self.on_subscription()
        while not self.wants(topic):
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(left * 1000):
                return False
            self.on_subscription()
        return True

    def wants(self, topic: str) -> bool:
        return self.wants_locally(topic) or (self.remote is not None and self.remote.active)

    def wants_locally(self, topic: str) -> bool:
        hit = self._wanted.get(topic)
        if hit is None:
            raw = topic.encode()
            hit = self._wanted[topic] = any(raw.startswith(p) for p in self._prefixes)
        return hit

    def publish(self, topic: str, body: dict[str, Any]) -> None:
        local = self.wants_locally(topic)
        remote = self.remote is not None and self.remote.active
        if not (local or remote):
            return
        packed = pack(body)
        if len(packed) > MAX_EVENT_BYTES:
            self.truncated += 1
            packed = pack(bounded(body))
        if remote:
            self.remote.publish(topic, body, packed)
        if local:
            try:
                send(self.sock, [topic.encode(), packed])
            except zmq.Again:
                self.dropped += 1

    def close(self, linger: int = 0) -> None:
        """``linger`` (ms) lets queued events leave first; the broker closes with 0 at shutdown."""
        self.sock.close(linger=linger)


def bounded(body: dict[str, Any], limit: int = MAX_EVENT_BYTES) -> dict[str, Any]:
    """``body`` with its big values replaced by a preview, so it packs under ``limit``.

    Subscribers see that something was cut and how big it was; the full value stays
    where it belongs (the task's result or FETCH), not in every subscriber's queue."""
    budget = max(256, limit // (2 * max(1, len(body))))
    out: dict[str, Any] = {}
    for key, value in body.items():
        size = len(pack(value))
        if size <= budget:
            out[key] = value
        else:
            text = value if isinstance(value, str) else repr(value)  # depth is bounded by the protocol
            out[key] = {"truncated": True, "bytes": size, "preview": text[:budget // 2]}
    return out
