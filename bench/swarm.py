"""Swarm benchmark: the seed document's parallelism claims, measured honestly.

* 64 I/O-bound tasks (100 ms sleeps) on 1 agent vs 8 agents (one task at a time each);
* CPU-bound tasks on 1 agent vs 2 agents (this machine's cores);
* launch-to-ready time of ``orchflow-launch`` and RSS of the whole default swarm;
* neural pool throughput for concurrent single-sample requests, with and without
  micro-batching;
* the broker's CPU per 10,000 tasks, and per 10 idle seconds, with ``orchflow top``
  attached (in a tmux terminal, at its fastest refresh, 10 Hz) and without.

    python bench/swarm.py [--only top]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bus import Client  # noqa: E402
from launcher.procs import ProcessGroup  # noqa: E402
from neural import Network  # noqa: E402


def fan_out(tmp: str, agents: int, kind: str, payloads: list, label: str) -> float:
    with ProcessGroup(os.path.join(tmp, f"{label}{agents}")) as g:
        g.broker()
        for i in range(agents):
            g.agent(f"a{i}", capacity=1, kinds=kind)
        g.wait_agents(agents)
        with Client(g.endpoints.frontend, ack_timeout=10) as c:
            c.call(kind, payloads[0], timeout=60)  # warm up every path once
            t = time.perf_counter()
            ids = c.submit_many(kind, payloads)
            outcomes = c.results(ids, timeout=600)
            elapsed = time.perf_counter() - t
        assert all(o["state"] == "done" for o in outcomes)
    return elapsed


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def launch_and_measure(tmp: str) -> tuple[float, float, int]:
    home = os.path.join(tmp, "home")
    env = dict(os.environ, ORCHFLOW_HOME=home)
    state_file = os.path.join(home, "run", "state.json")
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "launcher.orchflow_launch"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()  # "orchflow swarm ready in X s" once every child registered
        ready = time.perf_counter() - t
        reported = float(line.split("ready in ")[1].split("s")[0]) if "ready in" in line else float("nan")
        time.sleep(1.0)  # settle after imports
        state = json.load(open(state_file))
        pids = [proc.pid, *state["pids"].values()]
        total = sum(rss_kb(p) for p in pids)
        return ready, reported, total
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def top_cost(tmp: str, n: int = 10_000) -> list[tuple[str, float, float]]:
    """Broker CPU seconds for ``n`` tasks and for 10 idle seconds, without and with
    ``orchflow top --interval 0.1`` running in a real (tmux) terminal.  The tasks:
    the default swarm (2 agents x capacity 4, journal on, fsync), ``Client.submit()``
    one by one of the inline ``sys.echo`` kind, then ``results()``."""
    home = os.path.join(tmp, "tophome")
    env = dict(os.environ, ORCHFLOW_HOME=home)
    proc = subprocess.Popen([sys.executable, "-m", "launcher.orchflow_launch"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True, cwd=ROOT)
    sock = f"orchflow-bench-{os.getpid()}"
    rows = []
    try:
        proc.stdout.readline()
        state = json.load(open(os.path.join(home, "run", "state.json")))
        broker = state["pids"]["broker"]
        ep = state["endpoints"]
        for label, attached in (("without top", False), ("with top (10 Hz)", True)):
            if attached:
                subprocess.run(["tmux", "-L", sock, "new-session", "-d", "-s", "top", "-x", "160", "-y", "48",
                                f"env -u COLUMNS -u LINES ORCHFLOW_HOME={home} orchflow top --interval 0.1"],
                               check=True, env=env)
                time.sleep(2.0)  # started, first draws done
            idle0 = cpu_seconds(broker)
            time.sleep(10.0)
            idle = cpu_seconds(broker) - idle0
            with Client(ep["frontend"], events=ep["events"]) as c:
                c.call("sys.echo", 0, timeout=10)
                busy0 = cpu_seconds(broker)
                ids = [c.submit("sys.echo", i) for i in range(n)]
                c.results(ids, timeout=300)
                busy = cpu_seconds(broker) - busy0
            rows.append((label, busy, idle))
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    return rows


def neural_throughput(tmp: str, batching: bool, n: int = 2000) -> float:
    with ProcessGroup(os.path.join(tmp, f"nn{int(batching)}")) as g:
        g.broker()
        extra = ["--memory", os.path.join(g.run_dir, "memory")] + ([] if batching else ["--no-batching"])
        g.agent("neural0", capacity=256, module="neural.pool", extra=extra)
        g.wait_agents(1)
        net = Network.create_standard(8, 16, 4, seed=1)
        with Client(g.endpoints.frontend, ack_timeout=10) as c:
            c.call("neural.load", {"name": "m", "fann": net.dumps()}, timeout=10)
            c.call("neural.run", {"name": "m", "input": [0.0] * 8}, timeout=10)
            payloads = [{"name": "m", "input": [i / n] * 8} for i in range(n)]
            t = time.perf_counter()
            ids = [c.submit_nowait("neural.run", p) for p in payloads]  # n independent concurrent requests
            outcomes = c.results(ids, timeout=120)
            elapsed = time.perf_counter() - t
            stats = c.call("neural.stats", {}, timeout=10)
        assert all(o["state"] == "done" for o in outcomes)
    return n / elapsed, stats["max_batch"]


def print_top_cost(tmp: str) -> None:
    if not shutil.which("tmux"):
        print("orchflow top cost: skipped, tmux is not installed (apt-get install tmux)")
        return
    rows = top_cost(tmp)
    print("broker CPU, default swarm (2 agents x 4, journal on), Client.submit() loop of 10,000 sys.echo tasks "
          "then results():")
    for label, busy, idle in rows:
        print(f"  {label:18} {busy:6.2f} s CPU per 10k tasks   {idle:5.2f} s CPU per 10 idle seconds")
    (_, b0, i0), (_, b1, i1) = rows
    print(f"  top's cost: {b1 - b0:+.2f} s per 10k tasks ({(b1 - b0) / b0:+.1%}), {i1 - i0:+.2f} s per 10 idle s "
          f"({(i1 - i0) / 10:.1%} of one core)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["top"], help="run one part")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="orchflow-swarm-") as tmp:
        print(f"swarm benchmark ({os.cpu_count()} cores)\n")
        if args.only == "top":
            print_top_cost(tmp)
            return
        sleeps = [0.1] * 64
        one = fan_out(tmp, 1, "sys.sleep", sleeps, "io")
        eight = fan_out(tmp, 8, "sys.sleep", sleeps, "io")
        print(f"64 I/O-bound tasks of 100 ms: 1 agent {one:.2f}s, 8 agents {eight:.2f}s = {one / eight:.2f}x "
              f"(ideal 8x, target >= 7.5x)")
        spins = [4_000_000] * 16
        runs = [(fan_out(tmp, 1, "sys.spin", spins, f"cpu{k}-"), fan_out(tmp, 2, "sys.spin", spins, f"cpu{k}-"))
                for k in range(3)]
        one, two = sorted(runs, key=lambda r: r[0] / r[1])[1]  # the median run of three
        print(f"16 CPU-bound tasks (median of 3): 1 agent {one:.2f}s, 2 agents {two:.2f}s = {one / two:.2f}x "
              f"(ideal 2x on 2 cores, target >= 1.9x; all: {', '.join(f'{a / b:.2f}x' for a, b in runs)})")
        ready, reported, rss = launch_and_measure(tmp)
        print(f"orchflow-launch to ready (broker + 2 agents + 1 neural worker registered): "
              f"{ready:.2f}s wall incl. interpreter start, {reported:.2f}s as the launcher reports it (target < 1 s)")
        print(f"RSS of the whole default swarm (launcher + 4 children): {rss / 1024:.0f} MB (target <= 150 MB)")
        batched, max_batch = neural_throughput(tmp, True)
        single, _ = neural_throughput(tmp, False)
        print(f"neural pool, 2000 concurrent single-sample runs (8-16-4 net): micro-batched {batched:,.0f}/s "
              f"(largest batch {max_batch}), one by one {single:,.0f}/s = {batched / single:.2f}x")
        print_top_cost(tmp)


if __name__ == "__main__":
    main()
