"""orchflow at its defaults, exactly as the README teaches, beside Ray, Celery, Dramatiq and RQ.

The same workload for every system, from this one script, in one run:

* ``double(x)``: 10,000 tasks submitted one by one with each system's ordinary call
  (orchflow ``Client.submit()``, Ray ``.remote()``, Celery ``.delay()``, Dramatiq
  ``.send()``, RQ ``Queue.enqueue()``), then all their results awaited;
* 500 sequential round trips (orchflow ``Client.call()``, Ray ``ray.get(f.remote())``,
  Celery ``.delay().get()``, Dramatiq ``.send().get_result(block=True)``, RQ polling);
* cold start: from launching the system's processes to the first result in hand;
* RSS of every process of the system: idle after start, and after the load.

Workers: 2 processes x 4 concurrent tasks everywhere (orchflow: two SDK agents,
``@agent.handler`` on a plain ``def``, capacity 4, beside the default swarm that
``orchflow-launch`` starts; Ray: ``num_cpus=2`` with 4 concurrent tasks each is not a
Ray notion, so Ray runs its default of one task per CPU).  Durability: orchflow
fsyncs its journal (its default); the Redis peers run redis-server with persistence
off (their usual default) and say so in their row.

Each system runs ``--repeat`` times, each time in a fresh process (cold), and the
figures are medians.  redis-server (Debian's) is started here on 127.0.0.1 on a free
port and stopped by PID.  Peers install from the ``[peers]`` extra; a peer that is not
installed is reported as such, never silently left out.

    python bench/peers.py [--tasks 10000] [--calls 500] [--repeat 3] [--systems orchflow,ray,...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # before bench/, whose bus.py would shadow the bus package
SYSTEMS = ("orchflow", "ray", "celery", "dramatiq", "rq")
WORKERS, CONCURRENCY = 2, 4


# ---------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(submit_all, call_one, tasks: int, calls: int) -> dict[str, float]:
    t = time.perf_counter()
    submit_all(tasks)
    rate = tasks / (time.perf_counter() - t)
    lat = []
    for i in range(calls):
        t = time.perf_counter()
        assert call_one(i) == 2 * i
        lat.append((time.perf_counter() - t) * 1e6)
    return {"tasks_s": rate, "p50_us": percentile(lat, 0.5), "p99_us": percentile(lat, 0.99)}


class Redis:
    """redis-server on 127.0.0.1, a free port, no persistence (the peers' usual setup)."""

    def __init__(self, work: str) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", work], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# ---------------------------------------------------------------------------- orchflow

AGENT = """
import sys
from agents import Agent
agent = Agent(name=sys.argv[1], capacity=4)

@agent.handler("double")
def double(x, ctx):
    return 2 * x

agent.install_signal_handlers()
agent.run()
"""


def stop_swarm(launcher: subprocess.Popen, agents: list[subprocess.Popen]) -> None:
    """The agents first (they drain), then the launcher (it drains its own and stops)."""
    for a in agents:
        a.terminate()
    launcher.send_signal(signal.SIGTERM)
    launcher.wait(60)
    for a in agents:
        a.wait(10)


def run_orchflow(work: str, tasks: int, calls: int) -> dict[str, float]:
    from bus import Client
    home = os.path.join(work, "home")
    env = dict(os.environ, ORCHFLOW_HOME=home, PYTHONPATH=str(ROOT))
    Path(work, "agent.py").write_text(AGENT)
    t0 = time.perf_counter()
    launcher = subprocess.Popen([sys.executable, "-m", "launcher.orchflow_launch"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    agents = [subprocess.Popen([sys.executable, os.path.join(work, "agent.py"), f"doubler{i}"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(WORKERS)]
    os.environ["ORCHFLOW_HOME"] = home
    try:
        while True:  # the first result in hand: the swarm and an agent are up
            try:
                with Client() as c:
                    if c.call("double", 1, timeout=30) == 2:
                        break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.01)
        cold = time.perf_counter() - t0
        time.sleep(1.0)
        pids = descendants(launcher.pid) + [a.pid for a in agents]
        idle = rss_mib(pids)
        with Client() as c:
            def submit_all(n: int) -> None:
                ids = [c.submit("double", i) for i in range(n)]
                assert [o["result"] for o in c.results(ids, timeout=600)] == [2 * i for i in range(n)]

            row = measure(submit_all, lambda i: c.call("double", i, timeout=30), tasks, calls)
        row.update(cold_s=cold, rss_idle_mib=idle, rss_load_mib=rss_mib(pids))
        return row
    finally:
        stop_swarm(launcher, agents)


# ---------------------------------------------------------------------------- Ray


def run_ray(work: str, tasks: int, calls: int) -> dict[str, float]:
    import ray
    t0 = time.perf_counter()
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False, _temp_dir=os.path.join(work, "ray"))

    @ray.remote
    def double(x):
        return 2 * x

    try:
        assert ray.get(double.remote(1)) == 2
        cold = time.perf_counter() - t0
        time.sleep(1.0)
        pids = [p for p in descendants(os.getpid()) if p != os.getpid()]
        pids += [int(p) for p in os.listdir("/proc") if p.isdigit() and _cmd_has(int(p), os.path.join(work, "ray"))]
        pids = sorted(set(pids))
        idle = rss_mib(pids)

        def submit_all(n: int) -> None:
            refs = [double.remote(i) for i in range(n)]
            assert ray.get(refs) == [2 * i for i in range(n)]

        row = measure(submit_all, lambda i: ray.get(double.remote(i)), tasks, calls)
        row.update(cold_s=cold, rss_idle_mib=idle, rss_load_mib=rss_mib(pids))
        return row
    finally:
        ray.shutdown()


def _cmd_has(pid: int, text: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return text.encode() in f.read()
    except OSError:
        return False


# ---------------------------------------------------------------------------- Redis peers

CELERY_APP = """
from celery import Celery
app = Celery("peer", broker="{url}", backend="{url}")
app.conf.update(worker_prefetch_multiplier=4, result_expires=600)

@app.task
def double(x):
    return 2 * x
"""

DRAMATIQ_APP = """
import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend
broker = RedisBroker(url="{url}")
broker.add_middleware(Results(backend=RedisBackend(url="{url}")))
dramatiq.set_broker(broker)

@dramatiq.actor(store_results=True, max_retries=0)
def double(x):
    return 2 * x
"""

RQ_APP = """
def double(x):
    return 2 * x
"""


def _workers(work: str, argv_of, env: dict) -> list[subprocess.Popen]:
    return [subprocess.Popen(argv_of(i), cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True) for i in range(WORKERS)]


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def run_redis_peer(name: str, work: str, tasks: int, calls: int) -> dict[str, float]:
    redis = Redis(work)
    env = dict(os.environ, PYTHONPATH=work)
    module = "peer_tasks"
    app = {"celery": CELERY_APP, "dramatiq": DRAMATIQ_APP, "rq": RQ_APP}[name]
    Path(work, f"{module}.py").write_text(app.format(url=redis.url))
    sys.path.insert(0, work)
    argv = {
        "celery": lambda i: [sys.executable, "-m", "celery", "-A", module, "worker", "-c", str(CONCURRENCY),
                             "--pool", "prefork", "-n", f"w{i}@%h", "--without-gossip", "--without-mingle",
                             "--without-heartbeat", "-l", "WARNING"],
        "dramatiq": lambda i: [sys.executable, "-m", "dramatiq", module, "--processes", "1", "--threads",
                               str(CONCURRENCY)],
        "rq": lambda i: [sys.executable, "-m", "rq.cli", "worker", "--url", redis.url, "-q"],
    }[name]
    t0 = time.perf_counter()
    procs = _workers(work, argv, env)
    try:
        submit_all, call_one = _client(name, module, redis.url)
        assert call_one(1) == 2
        cold = time.perf_counter() - t0
        time.sleep(1.0)
        pids = [p for w in procs for p in descendants(w.pid)] + [redis.proc.pid]
        idle = rss_mib(pids)
        row = measure(submit_all, call_one, tasks, calls)
        row.update(cold_s=cold, rss_idle_mib=idle, rss_load_mib=rss_mib(pids))
        return row
    finally:
        _stop(procs)
        redis.stop()


def _client(name: str, module: str, url: str):
    mod = __import__(module)
    if name == "celery":
        def submit_all(n: int) -> None:
            results = [mod.double.delay(i) for i in range(n)]
            assert [r.get(timeout=600) for r in results] == [2 * i for i in range(n)]
        return submit_all, lambda i: mod.double.delay(i).get(timeout=30)
    if name == "dramatiq":
        def submit_all(n: int) -> None:
            messages = [mod.double.send(i) for i in range(n)]
            assert [m.get_result(block=True, timeout=600_000) for m in messages] == [2 * i for i in range(n)]
        return submit_all, lambda i: mod.double.send(i).get_result(block=True, timeout=30_000)
    from redis import Redis as RedisClient
    from rq import Queue
    queue = Queue(connection=RedisClient.from_url(url))

    def wait(job, timeout: float):
        deadline = time.monotonic() + timeout
        while (value := job.return_value()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(job.id)
            time.sleep(0.001)
        return value

    def submit_all(n: int) -> None:
        jobs = [queue.enqueue(mod.double, i) for i in range(n)]
        assert [wait(j, 600) for j in jobs] == [2 * i for i in range(n)]
    return submit_all, lambda i: wait(queue.enqueue(mod.double, i), 30)


# ---------------------------------------------------------------------------- driver

DURABILITY = {"orchflow": "fsync'd journal (default)", "ray": "in memory (no broker)",
              "celery": "Redis, persistence off", "dramatiq": "Redis, persistence off", "rq": "Redis, persistence off"}
CALLS = {"orchflow": "Client.submit() / call(), @agent.handler (plain def, default placement), 2 agents x 4",
         "ray": ".remote() / ray.get(), num_cpus=2",
         "celery": ".delay() / .get(), 2 workers x prefork 4",
         "dramatiq": ".send() / get_result(), 2 workers x 4 threads",
         "rq": "enqueue() / poll return_value(), 2 workers x 1"}


def role(system: str, tasks: int, calls: int) -> None:
    work = tempfile.mkdtemp(prefix=f"of-peer-{system}-")
    try:
        row = run_orchflow(work, tasks, calls) if system == "orchflow" else \
            run_ray(work, tasks, calls) if system == "ray" else run_redis_peer(system, work, tasks, calls)
        print(json.dumps(row))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def available(system: str) -> str | None:
    """None if the system can run here, else why not."""
    module = {"orchflow": "bus", "ray": "ray", "celery": "celery", "dramatiq": "dramatiq", "rq": "rq"}[system]
    try:
        __import__(module)
    except ImportError:
        return "not installed (pip install '.[peers]')"
    if system in ("celery", "dramatiq", "rq") and shutil.which("redis-server") is None:
        return "redis-server not installed (apt-get install redis-server)"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--role", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        role(args.role, args.tasks, args.calls)
        return
    print(f"peers: double(x), {args.tasks} tasks submitted one by one then awaited, {args.calls} sequential "
          f"round trips; {os.cpu_count()} cores; medians of {args.repeat} cold runs\n")
    print(f"{'system':10} {'tasks/s':>9} {'p50 us':>8} {'p99 us':>8} {'cold s':>7} {'RSS idle':>9} "
          f"{'RSS load':>9}  durability; calls")
    # The peers run from site-packages, byte-compiled when pip installed them; orchflow runs
    # from this checkout, so compile it the same way first (pip install . does it too).
    # Otherwise every process of the swarm compiles its modules from source at start,
    # which costs ~0.2 s of cold start where PYTHONDONTWRITEBYTECODE is set.
    import compileall
    for package in ("bus", "agents", "store", "launcher", "neural"):
        compileall.compile_dir(str(ROOT / package), quiet=1)
    rows = {}
    for system in args.systems.split(","):
        why = available(system)
        if why:
            print(f"{system:10} {'-':>9} {'-':>8} {'-':>8} {'-':>7} {'-':>9} {'-':>9}  NOT MEASURED: {why}")
            continue
        runs = []
        for _ in range(args.repeat):
            done = subprocess.run([sys.executable, __file__, "--role", system, "--tasks", str(args.tasks),
                                   "--calls", str(args.calls)], capture_output=True, text=True, timeout=1800,
                                  cwd=str(ROOT))
            if done.returncode != 0:
                print(f"{system:10} FAILED: {done.stderr.strip().splitlines()[-1:]}")
                break
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        if not runs:
            continue
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rows[system] = med
        print(f"{system:10} {med['tasks_s']:9.0f} {med['p50_us']:8.0f} {med['p99_us']:8.0f} {med['cold_s']:7.2f} "
              f"{med['rss_idle_mib']:8.0f}M {med['rss_load_mib']:8.0f}M  {DURABILITY[system]}; {CALLS[system]}",
              flush=True)
    if "orchflow" in rows:
        ours = rows["orchflow"]
        for peer, row in rows.items():
            if peer != "orchflow":
                print(f"orchflow vs {peer}: throughput {ours['tasks_s'] / row['tasks_s']:.1f}x, "
                      f"p50 {ours['p50_us'] / row['p50_us']:.2f}x of theirs")


if __name__ == "__main__":
    main()
