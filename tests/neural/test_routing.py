"""Learned routing end to end: outcomes -> periodic retraining in the pool -> routing by the model."""

from __future__ import annotations

import os
import time

from bus import Client
from bus.outcomes import NAMESPACE
from neural import routing_model as R
from store import Memory
from store import env as E

HERE = os.path.dirname(os.path.abspath(__file__))
SPEED_AGENT = os.path.join(os.path.dirname(os.path.dirname(HERE)), "bench", "speed_agent.py")
FAST = {"work.x": "A", "work.y": "B"}


def test_broker_retrains_and_routes_to_the_faster_agent(procs, run_dir):
    memory_path = os.path.join(run_dir, "memory")
    procs.spawn("broker", ["-m", "bus", "--run-dir", str(procs.run_dir), "--memory", memory_path,
                           "--learned-routing", "--routing-refresh", "0.2", "--retrain-interval", "1",
                           "--retrain-min-outcomes", "40"])
    procs.wait_broker()
    for name, table in {"A": "work.x=0.005,work.y=0.04", "B": "work.x=0.04,work.y=0.005"}.items():
        procs.spawn(name, [SPEED_AGENT, procs.endpoints.backend, name, table])
    procs.agent("neural0", capacity=4, module="neural.pool", extra=["--memory", memory_path])
    procs.wait_agents(3)
    kinds = ["work.x", "work.y"] * 40
    with Client(procs.endpoints.frontend, ack_timeout=5) as c:
        c.results([c.submit_nowait(k) for k in kinds], timeout=60)      # warm-up, least-loaded
        deadline = time.monotonic() + 30
        router = None
        while time.monotonic() < deadline and router is None:        # the broker asks for retraining itself
            models = c.call("neural.list", {}, timeout=10, project="orchflow")  # the swarm's own models
            router = next((m for m in models if m["name"] == R.MODEL_NAME), None)
            time.sleep(0.3)
        assert router is not None, "the broker never had the routing model trained"
        assert router["meta"]["samples"] >= 40 and router["meta"]["mae_log10_ms"] < 0.3
        time.sleep(0.6)                                               # the router loads the new version
        since = time.time()
        c.results([c.submit_nowait(k) for k in kinds], timeout=60)
    mem = Memory(memory_path)
    measured = [v for _, v in mem.items(NAMESPACE) if v["ts"] >= since and v["kind"] in FAST]
    E.close_env(mem.path)
    on_fast = sum(1 for r in measured if FAST[r["kind"]] == r["agent"]) / len(measured)
    assert len(measured) == 80 and on_fast >= 0.95, f"only {on_fast:.0%} on the faster agent"


def test_model_predicts_duration_and_success_on_synthetic_outcomes():
    records = [{"kind": k, "agent": a, "features": [1.0, 0.0], "seconds": s, "success": ok}
               for _ in range(20) for k, a, s, ok in [("x", "A", 0.005, True), ("x", "B", 0.05, True),
                                                      ("y", "A", 0.05, True), ("y", "B", 0.005, True),
                                                      ("z", "A", 0.01, False), ("z", "B", 0.01, True)]]
    net, meta = R.train(None, records, 400)
    out = {(k, a): net.run(R.encode(k, a, [1.0, 0.0])) for k in "xyz" for a in "AB"}
    duration = {key: R.from_target(float(v[0])) for key, v in out.items()}
    assert duration[("x", "A")] < duration[("x", "B")] and duration[("y", "B")] < duration[("y", "A")]
    assert out[("z", "A")][1] < 0.5 < out[("z", "B")][1]        # z fails on A, succeeds on B
    assert meta["pairs"]["z|A"] == 20 and meta["success_accuracy"] == 1.0


def test_broker_side_router_needs_no_numpy_until_a_model_exists():
    import subprocess
    import sys

    from neural import router, routing_model
    assert router.MODEL_NAME == routing_model.MODEL_NAME
    code = "import sys, neural.router; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
