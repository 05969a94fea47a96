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

        n = 4 * agents
        out(f"\n[1/3] fan-out: {n} shell tasks of 0.5 s each over {agents} agents")
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

        out("\n[2/3] swarm memory across two projects")
        with Client(endpoints.frontend, project="webapp") as web, Client(endpoints.frontend, project="cli") as cli:
            web.call("memory.put", {"key": "test-cmd", "value": "npm test"}, timeout=10)
            web.call("memory.put", {"ns": "shared", "key": "lesson", "value": "run lint before tests"}, timeout=10)
            other = cli.call("memory.get", {"ns": "project:webapp", "key": "test-cmd"}, timeout=10)
            shared = cli.call("memory.get", {"ns": "shared", "key": "lesson"}, timeout=10)
            denied = cli.outcome(cli.submit("memory.put", {"ns": "project:webapp", "key": "test-cmd", "value": "x"}),
                                 timeout=10)
        good = other == "npm test" and shared == "run lint before tests" and denied["state"] == "failed"
        ok &= good
        out(f"      project 'cli' reads webapp's test command: {other!r}; shared lesson: {shared!r}")
        out(f"      project 'cli' writing webapp's namespace: {denied['state']} ({denied['error'][:60]}...)")

        out("\n[3/3] events seen on the bus while this ran")
        time.sleep(0.3)
        stop.set()
        tailer.join(2)
        sub.close()
        for topic, count in sorted(seen.items()):
            out(f"      {topic:16} {count}")
        ok &= seen["task.done"] >= n
        status = c.status()
        out(f"\nbroker: {len(status['agents'])} agents, counters {status['counters']}")
        out("neural model training through the pool: not part of this build yet (see the neural issue)")
    return ok
