"""``python -m agents``: run an agent process serving built-in kinds."""

from __future__ import annotations

import argparse
import os

from bus.auth import CurveCredentials
from bus.lifeline import die_with_parent
from bus.logsetup import configure_logging
from .builtin import BUILTINS, add_builtins
from .runtime import Agent


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m agents", description=__doc__)
    ap.add_argument("--endpoint", required=True,
                    help="broker back end, e.g. ipc:///tmp/x/backend, or tcp://HOST:PORT+1 with CURVE keys")
    ap.add_argument("--key", default=None, help="tcp: this agent's .key_secret file (default $ORCHFLOW_KEY)")
    ap.add_argument("--broker-key", default=None, help="tcp: the broker's broker.key (default $ORCHFLOW_BROKER_KEY)")
    ap.add_argument("--name", default=None)
    ap.add_argument("--capacity", type=int, default=1)
    ap.add_argument("--prefetch", type=int, default=0,
                    help="tasks held queued beyond capacity (default 0: shell commands are long, and a queued "
                         "one should go to whichever agent frees up first)")
    ap.add_argument("--kinds", default="sys.noop,sys.echo,sys.sleep,sys.spin,sys.fail,shell",
                    help=f"comma-separated, from: {', '.join(BUILTINS)}")
    ap.add_argument("--heartbeat", type=float, default=1.0)
    ap.add_argument("--memory", default=None, help="also serve memory.* kinds from this LMDB directory")
    ap.add_argument("--events-in", default=None,
                    help="with --memory: publish the change feed as memory.changed events (one agent only)")
    args = ap.parse_args(argv)
    die_with_parent()  # never outlive orchflow-launch
    configure_logging()
    curve = None
    if args.key:
        curve = CurveCredentials.from_files(args.key, args.broker_key or os.environ.get("ORCHFLOW_BROKER_KEY", ""))
    agent = Agent(args.endpoint, name=args.name, capacity=args.capacity, prefetch=args.prefetch,
                  heartbeat_interval=args.heartbeat, curve=curve)
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
