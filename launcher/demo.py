"""The demo workload the README's run command shows: the parts working together."""

from __future__ import annotations

import threading
import time
from collections import Counter

from bus.client import Client
from bus.endpoints import Endpoints


def run_demo(endpoints: Endpoints, agents: int, out=print) -> bool:
    """Returns True when every step produced what it should."""
    ok = True
    seen: Counter[str] = Counter()
    with Client(endpoints.frontend, events=endpoints.events) as c:
        sub = c.subscribe("task.", "agent.", "memory.")
        stop = threading.Event()

        def tail() -> None:
            while not stop.is_set():
                event = sub.recv(timeout=0.1)
                if event:
                    seen[event[0]] += 1

        tailer = threading.Thread(target=tail, daemon=True)
        tailer.start()
        time.sleep(0.2)  # let the subscription reach the proxy

        n = max(8, 4 * agents)
        out(f"\n[1/4] fan-out: {n} shell tasks of 0.5 s each over {agents} built-in agent "
            f"process{'es' if agents > 1 else ''}")
        t = time.monotonic()
        ids = [c.submit("shell", {"cmd": f"sleep 0.5; echo task {i} ran in $PWD", "timeout": 30})
               for i in range(n)]
        results = [c.result(i, timeout=60) for i in ids]
        wall = time.monotonic() - t
        good = all(r["exit_code"] == 0 for r in results)
        ok &= good
        out(f"      {n} tasks done in {wall:.2f}s (sequential would take {n * 0.5:.1f}s): "
            f"{n * 0.5 / wall:.1f}x; all exit 0: {good}")
        out(f"      e.g. {results[0]['stdout']!r}")

        out("\n[2/4] swarm memory across two projects")
        with Client(endpoints.frontend, project="webapp") as web, Client(endpoints.frontend, project="cli") as cli:
            web.call("memory.put", {"key": "test-cmd", "value": "npm test"}, timeout=10)
            web.call("memory.put", {"ns": "shared", "key": "lesson", "value": "run lint before tests"}, timeout=10)
            own = web.call("memory.get", {"key": "test-cmd"}, timeout=10)
            shared = cli.call("memory.get", {"ns": "shared", "key": "lesson"}, timeout=10)
            denied = cli.outcome(cli.submit("memory.get", {"ns": "project:webapp", "key": "test-cmd"}), timeout=10)
        good = own == "npm test" and shared == "run lint before tests" and denied["state"] == "failed"
        ok &= good
        out(f"      webapp's own test command: {own!r}; a lesson shared with every project: {shared!r}")
        out(f"      project 'cli' reading webapp's namespace: {denied['state']} ({denied['error'][:70]}...)")

        out("\n[3/4] a neural model trained and evaluated through the neural pool")
        from neural import Network
        net = Network.create_standard(2, 3, 1, seed=4)
        net.set_activation(5)  # sigmoid symmetric
        xor_in = [[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]]
        xor_out = [[-1.0], [1.0], [1.0], [-1.0]]
        c.call("neural.load", {"name": "demo-xor", "fann": net.dumps()}, timeout=10)
        trained = c.call("neural.train", {"name": "demo-xor", "algorithm": "rprop", "max_epochs": 500,
                                          "desired_error": 0.001, "data": {"inputs": xor_in, "outputs": xor_out}},
                         timeout=60)
        ids = c.submit_many("neural.run", [{"name": "demo-xor", "input": x} for x in xor_in])
        answers = [o["result"][0] for o in c.results(ids, timeout=20)]
        good = trained["mse"] < 0.001 and all((a > 0) == (y[0] > 0) for a, y in zip(answers, xor_out))
        ok &= good
        out(f"      xor trained by RPROP to MSE {trained['mse']:.2e} (model version {trained['version']}); "
            f"answers {[round(a, 3) for a in answers]}: {'right' if good else 'WRONG'}")

        out("\n[4/4] events seen on the bus while this ran")
        time.sleep(0.3)
        stop.set()
        tailer.join(2)
        sub.close()
        for topic, count in sorted(seen.items()):
            out(f"      {topic:16} {count}")
        ok &= seen["task.done"] >= n
        status = c.status()
        out(f"\nbroker: {len(status['agents'])} agents, counters {status['counters']}")
    return ok
