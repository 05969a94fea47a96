"""The broker survives 10,000 malformed frames on each socket while real work completes."""

from __future__ import annotations

import random
import threading
import time

import msgpack
import zmq

from bus import Client
from bus import protocol as P
from bus.protocol import Command

PER_SOCKET = 10_000


def garbage(rng: random.Random, signature: bytes, commands: list[Command]) -> list[bytes]:
    """One message that is wrong in one of many ways; never a valid message."""
    sig, cmd = signature, bytes([rng.choice(commands)])
    choice = rng.randrange(12)
    if choice == 0:
        return [rng.randbytes(rng.randrange(0, 40)) for _ in range(rng.choice([1, 2, 4, 5, 9]))]
    if choice == 1:
        return [signature[:3] + bytes([rng.choice(b"02345789")]), cmd, b""]      # wrong version
    if choice == 2:
        return [sig, bytes([rng.randrange(0x42, 0x7E)]), b""]                    # unknown command
    if choice == 3:
        return [sig, cmd, rng.randbytes(rng.randrange(1, 64)) + b"\xc1"]        # invalid msgpack
    if choice == 4:
        return [sig, cmd, b"\x91" * 5000]                                       # absurd nesting
    if choice == 5:
        return [sig, cmd, msgpack.packb(rng.choice([1, "s", 2.5, True, b"\x00"]))]  # wrong body type
    if choice == 6:
        return [sig, cmd, msgpack.packb([rng.choice([1, "x", None, [1], {"id": 5}])])]
    if choice == 7:
        return [sig, cmd, msgpack.packb({"ids": [1, 2, {"x": None}], "kinds": [3]})]
    if choice == 8:
        bad = rng.choice([{"kind": 7}, {"kind": "k", "priority": 99}, {"kind": "k", "deadline": "soon"},
                          {"kind": "k", "max_retries": -5}, {"kind": "k", "id": ""}, {"id": "x"}])
        return [sig, bytes([Command.SUBMIT if signature == P.CLIENT else Command.READY]), msgpack.packb([bad])]
    if choice == 9:
        return [sig, cmd, rng.randbytes(3), b"extra"]                            # too many frames
    if choice == 10:
        return [sig]                                                            # too few
    return [rng.randbytes(4), cmd, b""]                                         # foreign signature


def fire(ctx: zmq.Context, endpoint: str, signature: bytes, commands: list[Command], seed: int,
         huge: int, stop: threading.Event) -> None:
    rng = random.Random(seed)
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.sndhwm = 0
    sock.connect(endpoint)
    for i in range(PER_SOCKET):
        if i < huge:  # a few bodies over the 16 MiB limit
            sock.send_multipart([signature, bytes([commands[0]]), b"\x00" * (P.MAX_BODY + 1)])
        else:
            sock.send_multipart(garbage(rng, signature, commands))
        while sock.poll(0):  # throw the broker's ERROR replies away
            sock.recv_multipart()
    stop.wait(30)
    sock.close()


def fire_events(ctx: zmq.Context, endpoint: str, seed: int) -> None:
    rng = random.Random(seed)
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    pub.connect(endpoint)
    for _ in range(PER_SOCKET):
        pub.send_multipart([rng.randbytes(rng.randrange(0, 30)) for _ in range(rng.randrange(1, 4))])
    pub.close()


def test_broker_survives_garbage_on_every_socket(swarm):
    swarm.agent("worker", capacity=8)
    swarm.wait_agents(1)
    ctx = zmq.Context.instance()
    stop = threading.Event()
    ep = swarm.endpoints
    threads = [
        threading.Thread(target=fire, args=(ctx, ep.frontend, P.CLIENT, sorted(P.CLIENT_COMMANDS), 1, 3, stop)),
        # HEARTBEAT with a map body is valid since OFP/1.1, so it is no garbage command.
        threading.Thread(target=fire, args=(ctx, ep.backend, P.AGENT,
                                            sorted(P.AGENT_COMMANDS - {Command.HEARTBEAT}), 2, 3, stop)),
        threading.Thread(target=fire_events, args=(ctx, ep.events_in, 3)),
    ]
    for t in threads:
        t.start()
    try:
        with Client(ep.frontend, ack_timeout=10) as c:
            # Real traffic, interleaved with the flood.
            ids = []
            for batch in range(20):
                ids += c.submit_many("sys.echo", [batch * 100 + i for i in range(100)])
            outcomes = c.results(ids, timeout=60)
            assert [o["result"] for o in outcomes] == list(range(2000))
            # Wait until the broker has read every bad frame, then check its counters.
            end = time.monotonic() + 60
            while time.monotonic() < end:
                counters = c.status()["counters"]
                if counters["malformed_frontend"] >= PER_SOCKET and counters["malformed_backend"] >= PER_SOCKET:
                    break
                time.sleep(0.2)
            assert counters["malformed_frontend"] == PER_SOCKET
            assert counters["malformed_backend"] == PER_SOCKET
            assert counters["submitted"] == 2000 and counters["done"] == 2000
            assert c.call("sys.echo", "still alive", timeout=5) == "still alive"
        assert swarm.procs["broker"].poll() is None
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
