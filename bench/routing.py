"""Routing benchmark: learned routing against least-loaded on a heterogeneous workload.

Two agents with opposite strengths (A runs work.x in 5 ms and work.y in 50 ms; B the
reverse), one task at a time each.  Both policies get the same warm-up (which leaves
outcome records) and the same measured workload of mixed tasks submitted at once.
For the learned run the neural pool retrains the routing model on the warm-up's
outcomes first.  Printed side by side, with the router's accuracy.

    python bench/routing.py [--tasks 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bus import Client  # noqa: E402
from bus.outcomes import NAMESPACE  # noqa: E402
from launcher.procs import ProcessGroup  # noqa: E402
from store import Memory  # noqa: E402

AGENTS = {"A": "work.x=0.005,work.y=0.05", "B": "work.x=0.05,work.y=0.005"}
FAST = {"work.x": "A", "work.y": "B"}


def workload(n: int) -> list[str]:
    return ["work.x" if i % 2 == 0 else "work.y" for i in range(n)]


def run(tmp: str, learned: bool, tasks: int, warmup: int) -> dict:
    group = ProcessGroup(os.path.join(tmp, "learned" if learned else "least"))
    memory_path = os.path.join(group.run_dir, "memory")
    with group as g:
        if learned:
            g.spawn("broker", ["-m", "bus", "--run-dir", str(g.run_dir), "--memory", memory_path,
                               "--learned-routing", "--routing-refresh", "0.3"])
            g.wait_broker()
        else:
            g.broker(memory=memory_path)
        for name, table in AGENTS.items():
            g.spawn(name, [os.path.join(ROOT, "bench", "speed_agent.py"), g.endpoints.backend, name, table])
        g.agent("neural0", capacity=8, module="neural.pool", extra=["--memory", memory_path])
        g.wait_agents(3)
        model = None
        with Client(g.endpoints.frontend, ack_timeout=10) as c:
            for kind in workload(warmup):  # warm-up: outcomes for every (kind, agent) pair
                c.submit_nowait(kind)
            time.sleep(0.2)
            while c.status()["live"]:
                time.sleep(0.1)
            if learned:
                model = c.call("neural.train_router", {"epochs": 300}, timeout=120)
                time.sleep(1.0)  # the broker's router picks the new version up (refresh 0.3 s)
            since = time.time()
            t = time.perf_counter()
            ids = [c.submit_nowait(kind) for kind in workload(tasks)]
            outcomes = c.results(ids, timeout=300)
            elapsed = time.perf_counter() - t
        assert all(o["state"] == "done" for o in outcomes)
        mem = Memory(memory_path)
        measured = [v for _, v in mem.items(NAMESPACE) if v["ts"] >= since]
        on_fast = sum(1 for r in measured if FAST[r["kind"]] == r["agent"]) / max(1, len(measured))
    return {"elapsed": elapsed, "on_fast": on_fast, "model": model}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=120)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="orchflow-routing-") as tmp:
        least = run(tmp, False, args.tasks, args.warmup)
        learned = run(tmp, True, args.tasks, args.warmup)
    ideal = args.tasks / 2 * 0.005
    print(f"routing benchmark: {args.tasks} mixed tasks, 2 agents with opposite strengths (5 ms vs 50 ms)\n")
    print(f"{'policy':16} {'completion s':>13} {'on faster agent':>16}")
    print(f"{'least-loaded':16} {least['elapsed']:13.2f} {least['on_fast'] * 100:15.0f}%")
    print(f"{'learned':16} {learned['elapsed']:13.2f} {learned['on_fast'] * 100:15.0f}%")
    print(f"\nlearned routing: {least['elapsed'] / learned['elapsed']:.2f}x faster (ideal per-agent work "
          f"{ideal:.2f}s + dispatch)")
    m = learned["model"]
    print(f"router model v{m['version']} after {m['samples']} outcomes: mean |log10 error| {m['mae_log10_ms']} "
          f"(in log10 ms), median predicted/actual {m['median_ratio']}, success predicted right "
          f"{m['success_accuracy'] * 100:.0f}%")


if __name__ == "__main__":
    main()
