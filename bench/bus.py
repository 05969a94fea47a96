"""Bus benchmark: orchflow's broker against a minimal hand-written ROUTER forwarder.

Both run in this same invocation on the same machine, as separate processes on
ipc endpoints in a temp dir:

* throughput of no-op tasks, pipelined, with 2 and 8 agents (baseline: 2 and 8
  echo workers behind a round-robin ROUTER/ROUTER forwarder);
* sequential round trip p50/p99 (one task at a time);
* event fan-out through the XSUB/XPUB proxy against raw PUB->SUB.

    python bench/bus.py [--tasks 20000] [--journal] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import zmq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bus import Client  # noqa: E402
from bus import protocol as P  # noqa: E402
from launcher.procs import ProcessGroup, free_tcp_block  # noqa: E402

# ---------------------------------------------------------------------------- baseline roles


def run_forwarder(front: str, back: str) -> None:
    """The baseline: forward each request to the next worker, each reply to its client."""
    ctx = zmq.Context()
    f = ctx.socket(zmq.ROUTER)
    b = ctx.socket(zmq.ROUTER)
    for s in (f, b):
        s.sndhwm = s.rcvhwm = 1_000_000
    f.bind(front)
    b.bind(back)
    workers: list[bytes] = []
    poller = zmq.Poller()
    poller.register(f, zmq.POLLIN)
    poller.register(b, zmq.POLLIN)
    i = 0
    while True:
        ready = dict(poller.poll())
        if b in ready:
            msg = b.recv_multipart()
            if len(msg) == 2:  # worker hello
                workers.append(msg[0])
            else:
                f.send_multipart(msg[1:])
        if f in ready and workers:
            msg = f.recv_multipart()
            b.send_multipart([workers[i % len(workers)], *msg])
            i += 1


def run_echo_worker(back: str) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.sndhwm = s.rcvhwm = 1_000_000
    s.connect(back)
    s.send(b"hello")
    while True:
        s.send_multipart(s.recv_multipart())


def run_publisher(endpoint: str, count: int, size: int, connect: bool) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUB)
    s.sndhwm = count + 10
    (s.connect if connect else s.bind)(endpoint)
    time.sleep(1.0)  # let the subscriber's subscription arrive (slow joiner)
    body = b"x" * size
    topic = b"task.done"
    for _ in range(count):
        s.send_multipart([topic, body])
    time.sleep(2.0)
    s.close(linger=2000)


# ---------------------------------------------------------------------------- measurements


def spawn_role(group: ProcessGroup, name: str, *args: str) -> None:
    group.spawn(name, [os.path.abspath(__file__), "--role", *args])


def baseline_throughput(tmp: str, workers: int, n: int, tag: str = "") -> tuple[float, list[float]]:
    with ProcessGroup(os.path.join(tmp, f"base{workers}{tag}")) as g:
        front, back = f"ipc://{g.run_dir}/front", f"ipc://{g.run_dir}/back"
        spawn_role(g, "forwarder", "forwarder", front, back)
        for i in range(workers):
            spawn_role(g, f"w{i}", "echo", back)
        ctx = zmq.Context.instance()
        c = ctx.socket(zmq.DEALER)
        c.sndhwm = c.rcvhwm = 1_000_000
        c.linger = 0
        c.connect(front)
        time.sleep(1.0)
        for _ in range(50):  # warm up
            c.send_multipart([b"", b"w"])
            c.recv_multipart()
        t = time.perf_counter()
        for k in range(n):
            c.send_multipart([b"", P.pack({"id": k})])
        for _ in range(n):
            c.recv_multipart()
        rate = n / (time.perf_counter() - t)
        lat = []
        for _ in range(2000):
            t = time.perf_counter()
            c.send_multipart([b"", b"x"])
            c.recv_multipart()
            lat.append(time.perf_counter() - t)
        c.close()
        return rate, lat


def orchflow_throughput(tmp: str, agents: int, n: int, journal: bool, tag: str = "",
                        tcp: bool = False) -> dict[str, object]:
    """``tcp``: clients and agents reach the broker over 127.0.0.1 with CURVE keys
    (made here with KeyRing), as remote peers do; otherwise over ipc."""
    with ProcessGroup(os.path.join(tmp, f"of{agents}{'j' if journal else ''}{'t' if tcp else ''}{tag}")) as g:
        curve = None
        front = g.endpoints.frontend
        if tcp:
            from bus.auth import CurveCredentials, KeyRing
            home = os.path.join(g.run_dir, "home")
            ring = KeyRing(home)
            ring.create_broker()
            client_secret = ring.add("client", "bench", projects=["*"])
            agent_secret = ring.add("agent", "bench-agent", kinds=["sys.noop"])
            broker_key = str(ring.broker_files()[0])
            curve = CurveCredentials.from_files(client_secret, broker_key)
            port = free_tcp_block()
            g.broker(journal=os.path.join(g.run_dir, "journal") if journal else None,
                     tcp=f"127.0.0.1:{port}", keys_home=home)
            front = f"tcp://127.0.0.1:{port}"
            for i in range(agents):
                g.spawn(f"agent{i}", ["-m", "agents", "--endpoint", f"tcp://127.0.0.1:{port + 1}", "--name",
                                      f"agent{i}", "--capacity", str(max(16, 256 // agents)), "--kinds", "sys.noop",
                                      "--key", str(agent_secret), "--broker-key", broker_key])
        else:
            g.broker(journal=os.path.join(g.run_dir, "journal") if journal else None)
            for i in range(agents):
                g.agent(f"agent{i}", capacity=max(16, 256 // agents), kinds="sys.noop")
        g.wait_agents(agents)
        with Client(front, ack_timeout=10, curve=curve) as c:
            for _ in range(50):
                c.call("sys.noop", timeout=5)
            t = time.perf_counter()
            ids = [c.submit_nowait("sys.noop") for _ in range(n)]
            outs = c.results(ids, timeout=120)
            single = n / (time.perf_counter() - t)
            assert all(o["state"] == "done" for o in outs)
            t = time.perf_counter()
            ids = []
            for start in range(0, n, 500):
                ids += c.submit_many("sys.noop", [None] * min(500, n - start))
            outs = c.results(ids, timeout=120)
            batched = n / (time.perf_counter() - t)
            assert all(o["state"] == "done" for o in outs)
            lat = []
            for _ in range(2000):
                t = time.perf_counter()
                c.call("sys.noop", timeout=5)
                lat.append(time.perf_counter() - t)
        return {"single": single, "batched": batched, "lat": lat}


def fanout(tmp: str, count: int, size: int) -> tuple[float, float]:
    """Messages/s a subscriber receives: raw PUB->SUB, then through the broker's proxy."""

    def measure(pub_endpoint: str, sub_endpoint: str, connect: bool, group: ProcessGroup) -> float:
        ctx = zmq.Context.instance()
        sub = ctx.socket(zmq.SUB)
        sub.rcvhwm = count + 10
        sub.linger = 0
        sub.connect(sub_endpoint)
        sub.subscribe(b"task.")
        spawn_role(group, f"pub{len(group.procs)}", "publisher", pub_endpoint, str(count), str(size),
                   "connect" if connect else "bind")
        got = 0
        first = last = None
        while got < count:
            if not sub.poll(3000):
                break
            sub.recv_multipart()
            last = time.perf_counter()
            if first is None:
                first = last
            got += 1
        sub.close()
        if got < 2:
            return 0.0
        return got / (last - first)

    with ProcessGroup(os.path.join(tmp, "fanout")) as g:
        raw_ep = f"ipc://{g.run_dir}/raw"
        raw = measure(raw_ep, raw_ep, connect=False, group=g)
        g.broker()
        proxied = measure(g.endpoints.events_in, g.endpoints.events, connect=True, group=g)
    return raw, proxied


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1e6


def transport(tmp: str, n: int, repeat: int) -> None:
    """The same workload over ipc and over tcp+CURVE (the remote-peer path), paired per round."""
    agents = 2
    rows: dict[str, dict[str, list]] = {t: {"single": [], "batched": [], "lat": []} for t in ("ipc", "tcp")}
    for round_ in range(repeat):
        for kind in ("ipc", "tcp"):
            r = orchflow_throughput(tmp, agents, n, False, tag=f"x{round_}", tcp=kind == "tcp")
            for key in ("single", "batched"):
                rows[kind][key].append(r[key])
            rows[kind]["lat"] += r["lat"]
    print(f"transport: sys.noop (inline handler), journal off, {agents} agents x capacity {256 // agents}; "
          f"median of {repeat} paired rounds")
    print(f"{'setup':52} {'tasks/s':>10} {'vs ipc':>8} {'p50 us':>8} {'p99 us':>8}")
    ipc = {k: statistics.median(v) for k, v in rows["ipc"].items() if k != "lat"}
    for kind, label in (("ipc", "ipc"), ("tcp", "tcp 127.0.0.1 + CURVE")):
        r = rows[kind]
        single, batched = statistics.median(r["single"]), statistics.median(r["batched"])
        print(f"{f'Client.submit_nowait() x{n}, {label}':52} {single:10.0f} {single / ipc['single']:7.2f}x "
              f"{pct(r['lat'], .5):8.0f} {pct(r['lat'], .99):8.0f}")
        print(f"{f'Client.submit_many(500 per call), {label}':52} {batched:10.0f} {batched / ipc['batched']:7.2f}x")
    print("(p50/p99: Client.call() round trips, one at a time)\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", nargs="*")
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--events", type=int, default=200000)
    ap.add_argument("--journal", action="store_true", help="also measure with the durable LMDB journal")
    ap.add_argument("--repeat", type=int, default=3, help="rounds per setup; the figures are medians")
    ap.add_argument("--transport-only", action="store_true", help="only the ipc vs tcp+CURVE rows")
    args = ap.parse_args()
    if args.role:
        role, *rest = args.role
        {"forwarder": run_forwarder, "echo": run_echo_worker}.get(role, lambda *a: None)(*rest)
        if role == "publisher":
            run_publisher(rest[0], int(rest[1]), int(rest[2]), rest[3] == "connect")
        return
    n = args.tasks
    print(f"bus benchmark: {n} no-op tasks per run, {os.cpu_count()} cores, ipc endpoints; median of "
          f"{args.repeat} rounds, each round the baseline then orchflow (a noisy VM drifts; rounds pair them)\n")
    with tempfile.TemporaryDirectory(prefix="orchflow-bench-") as tmp:
        transport(tmp, n, args.repeat)
        if args.transport_only:
            return
        print("every orchflow row: the built-in agents' inline sys.noop handler, agents x capacity as shown;\n"
              "the baseline: a minimal Python ROUTER/ROUTER forwarder with echo workers, no journal, no checks\n")
        print(f"{'setup':62} {'tasks/s':>10} {'vs baseline':>12} {'p50 us':>8} {'p99 us':>8}")
        for agents in (2, 8):
            modes = [False, True] if args.journal else [False]
            base_rates, base_lat = [], []
            ours: dict[bool, dict[str, list]] = {m: {"single": [], "batched": [], "lat": []} for m in modes}
            for round_ in range(args.repeat):
                rate, lat = baseline_throughput(tmp, agents, n, tag=f"r{round_}")
                base_rates.append(rate)
                base_lat += lat
                for journal in modes:
                    r = orchflow_throughput(tmp, agents, n, journal, tag=f"r{round_}")
                    for key in ("single", "batched"):
                        ours[journal][key].append(r[key])
                    ours[journal]["lat"] += r["lat"]
            base_rate = statistics.median(base_rates)
            cap = max(16, 256 // agents)
            print(f"{f'baseline forwarder, {agents} echo workers (p50/p99: one at a time)':62} {base_rate:10.0f} "
                  f"{'1.00x':>12} {pct(base_lat, .5):8.0f} {pct(base_lat, .99):8.0f}")
            for journal in modes:
                r = ours[journal]
                single, batched = statistics.median(r["single"]), statistics.median(r["batched"])
                tag = f"{agents}x{cap}, journal {'on (fsync)' if journal else 'off'}"
                print(f"{f'Client.submit_nowait() x{n} then results(), {tag}':62} {single:10.0f} "
                      f"{single / base_rate:11.2f}x")
                print(f"{f'Client.submit_many(500 per call), {tag}':62} {batched:10.0f} "
                      f"{batched / base_rate:11.2f}x")
                print(f"{f'Client.call() one at a time, {tag}':62} {'':10} {'':12} "
                      f"{pct(r['lat'], .5):8.0f} {pct(r['lat'], .99):8.0f}")
        raw, proxied = fanout(tmp, args.events, 100)
        print(f"\nevent fan-out, {args.events} x 100 B: raw PUB->SUB {raw:,.0f} msg/s, "
              f"through proxy {proxied:,.0f} msg/s ({proxied / raw * 100:.0f}% of raw)")


if __name__ == "__main__":
    main()
