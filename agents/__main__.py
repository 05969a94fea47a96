"""``python -m agents``: run an agent process serving built-in kinds."""

from __future__ import annotations

import argparse
import logging

from bus.lifeline import die_with_parent
from .builtin import BUILTINS, add_builtins
from .runtime import Agent


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m agents", description=__doc__)
    ap.add_argument("--endpoint", required=True, help="broker back end, e.g. ipc:///tmp/x/backend")
    ap.add_argument("--name", default=None)
    ap.add_argument("--capacity", type=int, default=1)
    ap.add_argument("--kinds", default="sys.noop,sys.echo,sys.sleep,sys.spin,sys.fail,shell",
                    help=f"comma-separated, from: {', '.join(BUILTINS)}")
    ap.add_argument("--heartbeat", type=float, default=1.0)
    ap.add_argument("--memory", default=None, help="also serve memory.* kinds from this LMDB directory")
    ap.add_argument("--events-in", default=None,
                    help="with --memory: publish the change feed as memory.changed events (one agent only)")
    args = ap.parse_args(argv)
    die_with_parent()  # never outlive orchflow-launch
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    agent = Agent(args.endpoint, name=args.name, capacity=args.capacity, heartbeat_interval=args.heartbeat)
    add_builtins(agent, [k for k in args.kinds.split(",") if k])
    stop = None
    if args.memory:
        from .memory_agent import serve_memory
        stop = serve_memory(agent, args.memory, args.events_in)
    agent.install_signal_handlers()
    try:
        agent.run()
    finally:
        if stop is not None:
            stop.set()


if __name__ == "__main__":
    main()
