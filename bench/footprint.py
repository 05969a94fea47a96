"""The default swarm's footprint: cold start and memory, idle and after many tasks.

    python bench/footprint.py [--tasks 100000]

Starts ``orchflow-launch`` with no options in a fresh home (as the README's first
command does) and two SDK agents (``@agent.handler``, a plain ``def`` placed by the agent, capacity 4), then:

* cold start: seconds from spawning the launcher to the first ``Client.call()`` result;
* memory of every swarm process (launcher, broker, built-in agent; the neural workers
  start with the first neural task) idle, then after ``--tasks`` tasks submitted with
  ``Client.submit()`` in loops of 10,000 and awaited with ``results()``, journal on.

Each row gives RSS (what ``ps`` shows: shared library pages count once per process),
PSS (shared pages split among the processes sharing them) and anonymous memory (the
process's own heap). The baseline row is a bare ``python3 -c 'import zmq, msgpack'``
measured in the same run: the floor every Python process of a swarm pays.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bus import Client  # noqa: E402

from peers import AGENT, stop_swarm  # noqa: E402  bench/peers.py: the same doubler agent, as the README teaches


def memory(pid: int) -> dict[str, float]:
    """RSS, anonymous RSS and PSS of one process, MiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "RssAnon:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) / 1024
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                out["Pss"] = int(line.split()[1]) / 1024
    return out


def row(label: str, pids: dict[str, int]) -> str:
    per = {name: memory(pid) for name, pid in pids.items()}
    total = {k: sum(m[k] for m in per.values()) for k in ("VmRSS", "Pss", "RssAnon")}
    names = ", ".join(f"{n} {m['VmRSS']:.0f}" for n, m in sorted(per.items()))
    return (f"{label:44} {total['VmRSS']:8.0f} {total['Pss']:8.0f} {total['RssAnon']:8.0f}   {names}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=100_000)
    args = ap.parse_args()
    for package in ("bus", "agents", "store", "launcher", "neural"):  # as pip install . does
        compileall.compile_dir(str(ROOT / package), quiet=1)
    work = tempfile.mkdtemp(prefix="of-footprint-")
    home = os.path.join(work, "home")
    env = dict(os.environ, ORCHFLOW_HOME=home, PYTHONPATH=str(ROOT))
    Path(work, "agent.py").write_text(AGENT)
    baseline = subprocess.Popen([sys.executable, "-c", "import zmq, msgpack, time; time.sleep(60)"])
    t0 = time.perf_counter()
    launcher = subprocess.Popen([sys.executable, "-m", "launcher.orchflow_launch"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    agents = [subprocess.Popen([sys.executable, os.path.join(work, "agent.py"), f"doubler{i}"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(2)]
    os.environ["ORCHFLOW_HOME"] = home
    state_file = os.path.join(home, "run", "state.json")
    try:
        while True:
            try:
                with Client(ack_timeout=0.2) as c:
                    if c.call("double", 1, timeout=10) == 2:
                        break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.005)
        cold = time.perf_counter() - t0
        while not (os.path.exists(state_file) and json.load(open(state_file)).get("ready")):
            time.sleep(0.05)
        time.sleep(1.0)
        swarm = dict(json.load(open(state_file))["pids"], launcher=launcher.pid)
        users = {f"doubler{i}": a.pid for i, a in enumerate(agents)}
        print(f"footprint of the default swarm (orchflow-launch, no options); {os.cpu_count()} cores\n")
        print(f"cold start, spawn of orchflow-launch to the first call() result: {cold:.3f} s\n")
        print(f"{'':44} {'RSS MiB':>8} {'PSS':>8} {'anon':>8}   per process RSS")
        print(row("baseline: python -c 'import zmq, msgpack'", {"python": baseline.pid}))
        print(row("swarm, idle", swarm))
        print(row("swarm + 2 SDK agents, idle", {**swarm, **users}))
        started = time.perf_counter()
        with Client() as c:
            done = 0
            while done < args.tasks:
                n = min(10_000, args.tasks - done)
                ids = [c.submit("double", i) for i in range(n)]
                c.results(ids, timeout=600)
                done += n
        took = time.perf_counter() - started
        time.sleep(1.0)
        swarm = dict(json.load(open(state_file))["pids"], launcher=launcher.pid)
        print(row(f"swarm, after {args.tasks:,} tasks", swarm))
        print(row(f"swarm + 2 SDK agents, after {args.tasks:,} tasks", {**swarm, **users}))
        print(f"\n{args.tasks:,} tasks: Client.submit() x 10,000 then results(), @agent.handler (plain def, default placement), "
              f"journal on (fsync), 2 agents x 4: {args.tasks / took:,.0f} tasks/s")
    finally:
        stop_swarm(launcher, agents)
        baseline.kill()
        baseline.wait()


if __name__ == "__main__":
    main()
