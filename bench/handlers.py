"""The agent SDK's handler paths, side by side: where a plain ``def`` handler runs.

One broker with its default durable journal (fsync), and three SDK agents of capacity
4, each serving ``double(x)`` one way (each its own kind and process, so that each
agent's credit follows its own handler), all measured in this one run:

* ``@agent.handler("double.pool", inline=False)``: always on a worker thread (what
  every plain handler did before handlers could move to the loop): the baseline;
* ``@agent.handler("double")``: the default, ``inline=None``; starts on a thread and
  moves to the agent's loop once quick (``agents/placement.py``);
* ``@agent.handler("double.loop", inline=True)``: always on the loop.

For each: ``Client.submit()`` one by one then ``results()`` (tasks/s), and
``Client.call()`` one at a time (p50/p99).  Every kind first gets 100 calls of warm-up,
so the default handler has made its move.  The kinds take turns within each
repetition, so drift on the machine hits all three alike; figures are medians.

The floor beside them, measured in each repetition too: ``bench/bus.py``'s minimal
Python ROUTER/ROUTER forwarder with one echo worker (no journal, no checks, no SDK),
the same three ZeroMQ hops a ``call()`` makes.

    python bench/handlers.py [--tasks 10000] [--calls 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bus import Client  # noqa: E402
from launcher.procs import ProcessGroup  # noqa: E402


def bench_bus():
    """bench/bus.py, whose forwarder is the floor (by path: its name is the package's)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_bus", os.path.join(ROOT, "bench", "bus.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

AGENT = """
import sys
from agents import Agent
endpoint, kind = sys.argv[1:3]
agent = Agent(endpoint, name=kind, capacity=4)

def double(x):
    return 2 * x

agent.add_handler(kind, double, inline={"double.pool": False, "double": None, "double.loop": True}[kind])
agent.install_signal_handlers()
agent.run()
"""

KINDS = {
    "double.pool": "@agent.handler(inline=False): worker thread (baseline)",
    "double": "@agent.handler(): default, moves to the loop once quick",
    "double.loop": "@agent.handler(inline=True): the agent's loop",
}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def measure(c: Client, kind: str, tasks: int, calls: int) -> tuple[float, float, float]:
    t = time.perf_counter()
    ids = [c.submit(kind, i) for i in range(tasks)]
    outs = c.results(ids, timeout=300)
    rate = tasks / (time.perf_counter() - t)
    assert [o["result"] for o in outs] == [2 * i for i in range(tasks)]
    lat = []
    for i in range(calls):
        t = time.perf_counter()
        assert c.call(kind, i, timeout=10) == 2 * i
        lat.append((time.perf_counter() - t) * 1e6)
    return rate, pct(lat, 0.5), pct(lat, 0.99)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows: dict[str, list[tuple[float, float, float]]] = {k: [] for k in KINDS}
    floor: list[tuple[float, float, float]] = []
    floor_bench = bench_bus()
    with tempfile.TemporaryDirectory(prefix="of-bh-") as tmp:
        script = os.path.join(tmp, "agent.py")
        with open(script, "w") as f:
            f.write(AGENT)
        with ProcessGroup(os.path.join(tmp, "run")) as g:
            g.broker(journal=os.path.join(tmp, "journal"))
            for kind in KINDS:
                g.spawn(kind, [script, g.endpoints.backend, kind], env={"PYTHONPATH": ROOT})
            g.wait_agents(len(KINDS))
            with Client(g.endpoints.frontend) as c:
                for kind in KINDS:
                    for i in range(100):
                        c.call(kind, i, timeout=10)
                for round_ in range(args.repeat):
                    rate, lat = floor_bench.baseline_throughput(tmp, 1, args.tasks, tag=f"h{round_}")
                    floor.append((rate, floor_bench.pct(lat, 0.5), floor_bench.pct(lat, 0.99)))
                    for kind in KINDS:
                        rows[kind].append(measure(c, kind, args.tasks, args.calls))
    print(f"handlers: double(x); Client.submit() x{args.tasks} then results(), and Client.call() x{args.calls} "
          f"one at a time;\njournal on (fsync, the default); per row 1 SDK agent x capacity 4 (prefetch: the "
          f"default, which follows placement); medians of {args.repeat}\n")
    print(f"{'handler':58} {'tasks/s':>8} {'vs base':>8} {'p50 us':>7} {'p99 us':>7}")
    f_rate, f_p50, f_p99 = (statistics.median(r[i] for r in floor) for i in range(3))
    print(f"{'floor: bench/bus.py forwarder + 1 echo worker, raw pyzmq':58} {f_rate:8.0f} {'':>8} {f_p50:7.0f} "
          f"{f_p99:7.0f}")
    base = statistics.median(r[0] for r in rows["double.pool"])
    base_p50 = statistics.median(r[1] for r in rows["double.pool"])
    for kind, label in KINDS.items():
        rate = statistics.median(r[0] for r in rows[kind])
        p50 = statistics.median(r[1] for r in rows[kind])
        p99 = statistics.median(r[2] for r in rows[kind])
        print(f"{label:58} {rate:8.0f} {rate / base:7.2f}x {p50:7.0f} {p99:7.0f}"
              + ("" if kind == "double.pool" else f"   p50 {p50 - base_p50:+.0f} us")
              + f"   p50 {p50 / f_p50:.2f}x the floor's")


if __name__ == "__main__":
    main()
