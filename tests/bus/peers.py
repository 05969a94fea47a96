"""Raw OFP peers for tests that must send what the SDKs never would."""

from __future__ import annotations

import time
from typing import Any

import zmq

from bus import Client
from bus import protocol as P
from bus.auth import CurveCredentials
from bus.protocol import Command


class RawPeer:
    """A DEALER speaking OFP by hand: ``send`` any frames, ``expect`` a command.

    A peer the broker refuses at the handshake (NULL or unknown key over CURVE)
    loses its only pipe: libzmq ends the session on a protocol error, and a DEALER
    with no pipe blocks in send for ever.  So sends time out, and ``send`` says
    whether the message left.
    """

    SEND_TIMEOUT_MS = 2000

    def __init__(self, endpoint: str, signature: bytes, curve: CurveCredentials | None = None) -> None:
        self.signature = signature
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.sndtimeo = self.SEND_TIMEOUT_MS
        if curve is not None:
            curve.apply(self.sock)
        self.sock.connect(endpoint)

    def send(self, command: Command, body: Any = None, raw: bytes | None = None) -> bool:
        """True if the message reached a pipe; False if the socket has none (refused)."""
        frames = P.message(self.signature, command, body)
        if raw is not None:
            frames[2] = raw
        try:
            self.sock.send_multipart(frames)
        except zmq.Again:
            return False
        return True

    def recv(self, timeout: float = 5.0) -> tuple[Command, Any] | None:
        if not self.sock.poll(timeout * 1000):
            return None
        return P.parse(self.sock.recv_multipart(), self.signature, max_body=P.MAX_FRAME)

    def expect(self, command: Command, timeout: float = 5.0) -> Any:
        """The body of the next ``command`` message; skips heartbeats; fails on timeout."""
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            got = self.recv(max(0.0, deadline - time.monotonic()))
            if got is None:
                break
            if got[0] is command:
                return got[1]
            if got[0] is not Command.HEARTBEAT:
                seen.append(got)
        raise AssertionError(f"no {command.name} within {timeout}s; got {seen}")

    def drain(self, timeout: float = 0.3) -> list[tuple[Command, Any]]:
        out = []
        while (got := self.recv(timeout)) is not None:
            out.append(got)
        return out

    def close(self) -> None:
        self.sock.close(linger=0)

    def __enter__(self) -> "RawPeer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def collect(sub, topic_prefix: str, count: int, timeout: float = 10.0) -> list[tuple[str, dict]]:
    events, deadline = [], time.monotonic() + timeout
    while len(events) < count and time.monotonic() < deadline:
        event = sub.recv(timeout=max(0.0, deadline - time.monotonic()))
        if event and event[0].startswith(topic_prefix):
            events.append(event)
    return events


def subscribed(client: Client, *topics: str):
    """A subscription known to be live: it has seen an event published after it joined.

    The probe is a task of a kind nobody serves, with a tiny deadline: the broker
    publishes ``task.queued`` for it without needing any agent.
    """
    sub = client.subscribe(*topics, "task.queued")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        probe = client.submit("test.probe", None, timeout=0.05)
        event = sub.recv(timeout=0.2)
        while event is not None:
            if event[1].get("id") == probe:
                return sub
            event = sub.recv(timeout=0.05)
    raise AssertionError("subscription never became live")
