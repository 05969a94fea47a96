"""``python -m bus``: run a broker process on ipc endpoints in a directory."""

from __future__ import annotations

import argparse
import logging
import os

from .broker import BrokerConfig, serve


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bus", description=__doc__)
    ap.add_argument("--run-dir", required=True, help="directory for the ipc endpoints (created 0700)")
    ap.add_argument("--journal", default=None, help="LMDB directory for the durable task journal")
    ap.add_argument("--heartbeat", type=float, default=1.0)
    ap.add_argument("--liveness", type=int, default=3)
    ap.add_argument("--durable", choices=["sync", "nosync"], default="sync",
                    help="fsync each group commit (sync) or leave it to the OS (nosync)")
    ap.add_argument("--memory", default=None,
                    help="swarm memory (LMDB dir) where every finished task leaves an outcome record for routing")
    ap.add_argument("--tcp-backend", default=None, metavar="tcp://HOST:PORT",
                    help="also accept agents over TCP (remote agents); nothing but ipc:// unless given")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.makedirs(args.run_dir, mode=0o700, exist_ok=True)
    journal = None
    if args.journal:
        from store.journal import TaskJournal
        journal = TaskJournal(args.journal, sync=args.durable == "sync")
    outcomes = None
    if args.memory:
        from store import Memory

        from .outcomes import OutcomeRecorder
        outcomes = OutcomeRecorder(Memory(args.memory, sync=False))  # learning data: no fsync per turn
    serve(BrokerConfig.in_directory(args.run_dir, heartbeat_interval=args.heartbeat,
                                    heartbeat_liveness=args.liveness, backend_tcp=args.tcp_backend), journal, outcomes)


if __name__ == "__main__":
    main()
