"""What a slow subscriber costs the broker: RSS while one subscriber reads nothing.

An agent (raw OFP, one task of kind ``bench.progress``) sends ``--events`` PROGRESS
entries of ``--size`` bytes each; a SUB subscribed to ``task.progress`` never reads.
Printed beside each other, in one run: the broker's RSS idle, with the backlog, and
after the subscriber closes; and the bound the configuration promises
(DEFAULT_EVENT_HWM x MAX_EVENT_BYTES per queue).  On b788953 the same workload
(20,000 events of 16 KiB) added 289 MB and 320-359 MB stayed after the close.

    python bench/event_backlog.py [--events 20000] [--size 16384]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import zmq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bus import Client  # noqa: E402
from bus import protocol as P  # noqa: E402
from bus.events import DEFAULT_EVENT_HWM, MAX_EVENT_BYTES  # noqa: E402
from bus.protocol import Command  # noqa: E402
from launcher.procs import ProcessGroup  # noqa: E402


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(events: int, size: int, slow_subscriber: bool) -> tuple[float, float, float, int]:
    """Broker RSS idle, after the events, after the subscriber closed; events dropped."""
    with ProcessGroup(os.path.join(tempfile.mkdtemp(prefix="of-bench-"), "run")) as group:
        broker = group.broker()
        ctx = zmq.Context.instance()
        agent = ctx.socket(zmq.DEALER)
        agent.connect(group.endpoints.backend)
        agent.send_multipart(P.agent_message(Command.READY, {"name": "chatty", "kinds": ["bench.progress"]}))
        with Client(group.endpoints.frontend) as c:
            sub = c.subscribe("task.progress") if slow_subscriber else None
            time.sleep(0.5)
            task_id = c.submit("bench.progress", None)
            while P.parse(agent.recv_multipart(), P.AGENT)[0] is not Command.TASK:
                pass
            time.sleep(0.5)
            idle = rss_mib(broker.pid)
            data = "d" * size
            for _ in range(0, events, 10):
                agent.send_multipart(P.agent_message(Command.PROGRESS, [{"id": task_id, "data": data}] * 10))
                if _ % 1000 == 0:
                    c.status()  # keep the agent from running far ahead of the broker
            c.status()  # the broker has read everything before this answer
            time.sleep(1.0)
            backlog = rss_mib(broker.pid)
            if sub is not None:
                sub.close()
            time.sleep(2.0)
            after = rss_mib(broker.pid)
            dropped = c.status()["events_dropped"]
        agent.close()
    return idle, backlog, after, dropped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--size", type=int, default=16 * 1024)
    args = ap.parse_args()
    print(f"{args.events} task.progress events of {args.size} B data (PROGRESS of 10 entries), 1 raw agent, "
          f"no journal; broker RSS in MiB")
    print(f"{'subscriber':28} {'idle':>8} {'after events':>13} {'after close':>12} {'dropped':>8}")
    for slow in (False, True):
        idle, backlog, after, dropped = measure(args.events, args.size, slow)
        label = "one that never reads" if slow else "none (baseline)"
        print(f"{label:28} {idle:8.1f} {backlog:8.1f} (+{backlog - idle:5.1f}) {after:7.1f} (+{after - idle:5.1f}) "
              f"{dropped:8d}")
    bound = DEFAULT_EVENT_HWM * MAX_EVENT_BYTES / 2 ** 20
    print(f"configured bound per subscriber queue: {bound:.1f} MiB (HWM {DEFAULT_EVENT_HWM} x {MAX_EVENT_BYTES} B); "
          f"events over {MAX_EVENT_BYTES} B are cut to a preview")
    print("b788953, same workload (issue #11): +289 MB with the backlog, 320-359 MB held after close")


if __name__ == "__main__":
    main()
