"""``python -m agents``: run an agent process serving built-in kinds."""

from __future__ import annotations

import argparse
import logging

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
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    agent = Agent(args.endpoint, name=args.name, capacity=args.capacity, heartbeat_interval=args.heartbeat)
    add_builtins(agent, [k for k in args.kinds.split(",") if k])
    agent.install_signal_handlers()
    agent.run()


if __name__ == "__main__":
    main()
