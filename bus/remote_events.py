"""Events for subscribers on other hosts, each seeing only its own projects.

The local event plane (``events.py``) is one XPUB anybody on this machine's owner
account may read.  Remote subscribers get their own XPUB, on TCP with CURVE only,
in *manual* mode: libzmq hands every subscription to the broker with the
subscriber's ZAP User-Id, and applies it only if the broker calls ``subscribe``.
Topics on this socket carry the project: ``<project>\\x00<topic>`` (project names
cannot hold NUL), and swarm-wide events (``agent.joined`` ...) are ``\\x00<topic>``.
A client bound to project ``a`` may subscribe to ``a\\x00...`` prefixes only.
"""

from __future__ import annotations

from typing import Any

import zmq

from . import protocol as P
from .auth import Gatekeeper, Principal


def remote_topic(project: str | None, topic: str) -> bytes:
    return f"{project or ''}\x00{topic}".encode()


def may_subscribe(who: Principal, prefix: bytes) -> bool:
    if not who.restricted:
        return True
    project, sep, _ = prefix.partition(b"\x00")
    return bool(sep) and who.may_act_for(project.decode(errors="replace"))


class RemoteEvents:
    def __init__(self, ctx: zmq.Context, endpoint: str, gate: Gatekeeper, hwm: int) -> None:
        self.gate = gate
        self.sock = ctx.socket(zmq.XPUB)
        self.sock.linger = 0
        self.sock.sndhwm = hwm
        self.sock.xpub_manual = True
        gate.bind_tcp(self.sock, endpoint)
        self.subscriptions = 0
        self.refused = 0
        self.dropped = 0

    @property
    def active(self) -> bool:
        return self.subscriptions > 0

    def on_subscription(self) -> None:
        """Grant or refuse each (un)subscription by who sent it; must run right after
        each receive, because manual XPUB applies ``subscribe`` to the last sender."""
        while (got := P.try_recv_with_user(self.sock)) is not None:
            frames, user = got
            msg = frames[0]
            if not msg or msg[0] not in (0, 1):
                continue
            prefix = msg[1:]
            if msg[0] == 0:
                self.sock.unsubscribe(prefix)
                self.subscriptions = max(0, self.subscriptions - 1)
                continue
            who = self.gate.principal_of(user) if user is not None else None
            if who is not None and who.is_client and may_subscribe(who, prefix):
                self.sock.subscribe(prefix)
                self.subscriptions += 1
            else:
                self.refused += 1
                self.gate.counters.forbidden += 1

    def publish(self, topic: str, body: dict[str, Any], packed: bytes) -> None:
        try:
            P.send(self.sock, [remote_topic(body.get("project"), topic), packed])
        except zmq.Again:
            self.dropped += 1

    def close(self) -> None:
        self.sock.close(linger=0)
