"""Where a ``Client.call()`` spends its time: the round trip taken apart, hop by hop.

A call crosses four ZeroMQ hops (client -> broker -> agent -> broker -> client).  The
floor is ``bench/bus.py``'s minimal Python forwarder with one echo worker: the same
four hops, with the least Python a forwarder can have.  Each part of ours is then
measured against its stand-in in the floor, by swapping that one part, in this run:

* **client**: ``Client.call()`` against a stub broker that answers each SUBMIT with
  its RESULT at once, minus a raw DEALER sending the same bytes to the same stub;
* **agent**: a TASK round trip to an SDK agent (``@agent.handler`` on a plain
  ``def``, the default placement, warmed up) minus the same to the floor's echo
  worker, from a stand-in broker in this process;
* **broker**: what is left: ``call()`` through the real broker (journal on, fsync)
  to that SDK agent, minus the floor and the two differences above.

    python bench/call_path.py [--calls 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import zmq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bus import Client  # noqa: E402
from bus import protocol as P  # noqa: E402
from bus.protocol import Command  # noqa: E402
from launcher.procs import ProcessGroup  # noqa: E402
from handlers import AGENT, bench_bus  # noqa: E402  bench/handlers.py: its agent (kind "double": the default placement)

STUB_BROKER = """
import sys, zmq, msgpack
ctx = zmq.Context()
s = ctx.socket(zmq.ROUTER)
s.bind(sys.argv[1])
SUBMIT, RESULT = bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
while True:
    identity, sig, command, body = s.recv_multipart()
    if command == SUBMIT:  # every entry done at once
        out = [{"id": e["id"], "state": "done", "attempts": 1, "result": e["payload"]} for e in msgpack.unpackb(body)]
        s.send_multipart([identity, b"OFC1", RESULT, msgpack.packb(out)])
"""

ECHO = """
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.connect(sys.argv[1])
s.send(b"hello")  # as bench/bus.py's echo worker: tells the router who it is
while True:
    s.send_multipart(s.recv_multipart())
"""


def p50(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def timed(calls: int, one) -> float:
    lat = []
    for i in range(calls):
        t = time.perf_counter()
        one(i)
        lat.append(time.perf_counter() - t)
    return p50(lat)


def script(tmp: str, name: str, text: str) -> str:
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def client_parts(g: ProcessGroup, tmp: str, calls: int) -> tuple[float, float]:
    """(raw DEALER round trip to the stub, Client.call() round trip to the stub)."""
    endpoint = f"ipc://{g.run_dir}/stub"
    g.spawn("stub", [script(tmp, "stub.py", STUB_BROKER), endpoint, P.command_byte(Command.SUBMIT).hex(),
                     P.command_byte(Command.RESULT).hex()])
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.DEALER)
    raw.linger = 0
    raw.connect(endpoint)
    time.sleep(0.5)
    submit = P.command_byte(Command.SUBMIT)

    def raw_call(i: int) -> None:
        raw.send_multipart([P.CLIENT, submit, P.pack([{"id": f"r-{i}", "kind": "double", "payload": i, "ack": False}])])
        raw.recv_multipart()

    for i in range(100):
        raw_call(i)
    with Client(endpoint) as c:
        for i in range(100):
            c.call("double", i, timeout=10)
        sdk = timed(calls, lambda i: c.call("double", i, timeout=10))
    bare = timed(calls, raw_call)
    raw.close()
    return bare, sdk


def agent_parts(g: ProcessGroup, tmp: str, calls: int) -> tuple[float, float]:
    """(TASK round trip to the floor's echo worker, to an SDK agent), from a stand-in broker."""
    out = []
    ctx = zmq.Context.instance()
    task, done = P.command_byte(Command.TASK), P.command_byte(Command.DONE)
    for name, text in (("echo", ECHO), ("sdk", AGENT)):
        router = ctx.socket(zmq.ROUTER)
        router.linger = 0
        endpoint = f"ipc://{g.run_dir}/{name}-backend"
        router.bind(endpoint)
        g.spawn(f"{name}-agent", [script(tmp, f"{name}.py", text), endpoint, "double"], env={"PYTHONPATH": ROOT})
        identity = router.recv_multipart()[0]  # the SDK agent's READY, the echo worker's hello

        def one(i: int, identity=identity) -> None:
            body = P.pack([{"id": f"t-{i}", "kind": "double", "payload": i, "project": "default", "deadline": None,
                            "attempt": 1, "shared_write": True}])
            router.send_multipart([identity, P.AGENT, task, body])
            while True:  # the SDK agent's heartbeats and READYs may come between
                frames = router.recv_multipart()
                if name == "echo" or frames[2] == done:
                    return

        for i in range(200):  # the SDK handler moves to the loop within its first 32
            one(i, identity)
        out.append(timed(calls, lambda i, identity=identity: one(i, identity)))
        router.close()
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    floor_bench = bench_bus()
    rows: dict[str, list[float]] = {k: [] for k in ("client_raw", "client_sdk", "echo", "agent", "floor", "call")}
    with tempfile.TemporaryDirectory(prefix="of-cp-") as tmp:
        for round_ in range(args.repeat):
            with ProcessGroup(os.path.join(tmp, f"parts{round_}")) as g:
                bare, sdk = client_parts(g, tmp, args.calls)
                rows["client_raw"].append(bare)
                rows["client_sdk"].append(sdk)
                echo, agent = agent_parts(g, tmp, args.calls)
                rows["echo"].append(echo)
                rows["agent"].append(agent)
            _, lat = floor_bench.baseline_throughput(tmp, 1, 1000, tag=f"cp{round_}")
            rows["floor"].append(p50(lat))
            with ProcessGroup(os.path.join(tmp, f"real{round_}")) as g:
                g.broker(journal=os.path.join(tmp, f"journal{round_}"))
                g.spawn("agent", [script(tmp, "agent.py", AGENT), g.endpoints.backend, "double"],
                        env={"PYTHONPATH": ROOT})
                g.wait_agents(1)
                with Client(g.endpoints.frontend) as c:
                    for i in range(200):
                        c.call("double", i, timeout=10)
                    rows["call"].append(timed(args.calls, lambda i: c.call("double", i, timeout=10)))
    m = {k: statistics.median(v) for k, v in rows.items()}
    client = m["client_sdk"] - m["client_raw"]
    agent = m["agent"] - m["echo"]
    broker = m["call"] - m["floor"] - client - agent
    print(f"call path: double(x), Client.call() one at a time, {args.calls} per part, p50 in us, medians of "
          f"{args.repeat} rounds; 2 ipc hops each way; {os.cpu_count()} cores\n")
    print(f"{'measured':78} {'p50 us':>8}")
    for key, label in (("client_raw", "raw DEALER round trip to a stub broker (2 hops, msgpack)"),
                       ("client_sdk", "Client.call() round trip to the same stub broker"),
                       ("echo", "TASK round trip, stand-in broker -> the floor's echo worker (2 hops)"),
                       ("agent", "TASK round trip, stand-in broker -> SDK agent, plain def (default placement)"),
                       ("floor", "floor: bench/bus.py forwarder + 1 echo worker (4 hops)"),
                       ("call", "Client.call() -> broker (journal on, fsync) -> SDK agent (4 hops)")):
        print(f"{label:78} {m[key]:8.0f}")
    print(f"\n{'where call() exceeds the floor':78} {'us':>8}")
    print(f"{'client: Client.call() over a raw DEALER':78} {client:8.0f}")
    print(f"{'agent: SDK agent turn over an echo worker':78} {agent:8.0f}")
    print(f"{'broker: two broker turns (checks, journal, routing) over two forwarder turns':78} {broker:8.0f}")
    print(f"{'total: call() - floor':78} {m['call'] - m['floor']:8.0f}   "
          f"(call() = {m['call'] / m['floor']:.2f}x the floor)")


if __name__ == "__main__":
    main()
