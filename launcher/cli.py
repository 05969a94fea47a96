"""``orchflow-launch``: start, supervise and stop a local swarm."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

from store.env import orchflow_home

from .supervisor import LaunchError, Supervisor, SwarmConfig, pid_alive, read_state, swarm_running


def stop_swarm(home: Path) -> int:
    state = read_state(home)
    if not state or not swarm_running(home):
        print(f"no swarm is running under {home}")
        return 1
    pid = state["launcher_pid"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            print(f"stopped the swarm (launcher pid {pid})")
            return 0
        time.sleep(0.1)
    print(f"launcher pid {pid} did not stop within 40s", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="orchflow-launch", description="Start and supervise a local orchflow swarm.")
    ap.add_argument("command", nargs="?", choices=["start", "stop", "status"], default="start")
    ap.add_argument("--home", default=None, help="swarm home (default $ORCHFLOW_HOME or ~/.orchflow)")
    ap.add_argument("--agents", type=int, default=2, help="built-in agent processes, also serving memory (default 2)")
    ap.add_argument("--capacity", type=int, default=4, help="concurrent tasks per agent (default 4)")
    ap.add_argument("--neural-workers", type=int, default=1, help="neural worker processes (default 1)")
    ap.add_argument("--demo", action="store_true", help="run the demo workload, then stop")
    args = ap.parse_args(argv)
    if args.agents < 1:
        ap.error("--agents must be at least 1 (the built-in agents also serve the swarm memory)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    home = Path(args.home or orchflow_home())
    if args.command == "stop":
        return stop_swarm(home)
    if args.command == "status":
        state = swarm_running(home)
        print(f"running: {state}" if state else f"no swarm is running under {home}")
        return 0 if state else 1
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    sup = Supervisor(SwarmConfig(home=home, agents=args.agents, agent_capacity=args.capacity,
                                 neural_workers=args.neural_workers))
    try:
        t = time.monotonic()
        sup.start()
    except LaunchError as exc:
        print(f"orchflow-launch: {exc}", file=sys.stderr)
        return 2
    try:
        ep = sup.endpoints
        print(f"orchflow swarm ready in {time.monotonic() - t:.2f}s under {home}")
        print(f"  clients:  {ep.frontend}\n  agents:   {ep.backend}\n  events:   {ep.events}")
        print(f"  state:    {sup.config.state_file}\n  logs:     {home / 'logs'}")
        if args.demo:
            from .demo import run_demo
            ok = run_demo(ep, args.agents)
            print("\ndemo finished: " + ("all steps succeeded" if ok else "SOME STEPS FAILED"))
            return 0 if ok else 1
        print("stop with Ctrl-C or: orchflow-launch stop")
        sup.install_signal_handlers()
        sup.supervise()
        return 0
    finally:
        sup.shutdown()


if __name__ == "__main__":
    sys.exit(main())
