"""``python -m bus``: run a broker process on ipc endpoints in a directory."""

from __future__ import annotations

import argparse
import os

from .lifeline import die_with_parent
from .logsetup import configure_logging
from .broker import BrokerConfig, serve
from .endpoints import TcpEndpoints, metrics_address


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bus", description=__doc__)
    ap.add_argument("--run-dir", required=True, help="directory for the ipc endpoints (created 0700)")
    ap.add_argument("--journal", default=None, help="LMDB directory for the durable task journal")
    ap.add_argument("--heartbeat", type=float, default=1.0)
    ap.add_argument("--unserved-grace", type=float, default=None, metavar="SECONDS",
                    help="fail queued tasks of a kind no agent has served for this long (default: wait)")
    ap.add_argument("--result-ttl", type=float, default=3600.0, metavar="SECONDS",
                    help="how long finished tasks (failed ones, the dead letters, too) are kept")
    ap.add_argument("--liveness", type=int, default=3)
    ap.add_argument("--durable", choices=["sync", "nosync"], default="sync",
                    help="fsync each group commit (sync) or leave it to the OS (nosync)")
    ap.add_argument("--memory", default=None,
                    help="swarm memory (LMDB dir) where every finished task leaves an outcome record for routing")
    ap.add_argument("--learned-routing", action="store_true",
                    help="route by the neural pool's routing model (needs --memory); least-loaded otherwise")
    ap.add_argument("--record-outcomes", action="store_true",
                    help="leave an outcome record per answered task in --memory (learned routing does)")
    ap.add_argument("--routing-refresh", type=float, default=5.0, help="seconds between routing-model checks")
    ap.add_argument("--retrain-interval", type=float, default=30.0,
                    help="learned routing: seconds between retraining requests to the neural pool")
    ap.add_argument("--retrain-min-outcomes", type=int, default=50)
    ap.add_argument("--tcp", default=None, metavar="HOST:PORT",
                    help="also accept remote peers, CURVE only: clients on PORT, agents on PORT+1, "
                         "events on PORT+2 (nothing but ipc:// unless given); needs --keys-home")
    ap.add_argument("--metrics", default=None, metavar="[HOST:]PORT",
                    help="serve Prometheus metrics over HTTP (HOST defaults to 127.0.0.1)")
    ap.add_argument("--keys-home", default=None, metavar="DIR",
                    help="swarm home whose keys/ holds the broker certificate and the allowed identities "
                         "(orchflow keys); also applies `orchflow keys local` restrictions to ipc peers")
    args = ap.parse_args(argv)
    if args.tcp and not args.keys_home:
        ap.error("--tcp needs --keys-home: over TCP only identities with keys get in")
    tcp = TcpEndpoints.at(args.tcp) if args.tcp else None
    die_with_parent()  # never outlive orchflow-launch
    configure_logging()
    os.makedirs(args.run_dir, mode=0o700, exist_ok=True)
    journal = None
    if args.journal:
        from store.journal import TaskJournal
        journal = TaskJournal(args.journal, sync=args.durable == "sync")
    outcomes = router = memory = None
    if args.memory and (args.learned_routing or args.record_outcomes or args.metrics):
        from store import Memory
        memory = Memory(args.memory, sync=False)  # learning data: no fsync per turn
    if memory is not None and (args.learned_routing or args.record_outcomes):
        # An outcome record per task (and a model retrained from them): about 14 µs of the
        # broker's time per task (bench/peers.py), so only when asked for.
        from .outcomes import OutcomeRecorder
        outcomes = OutcomeRecorder(memory)
    if memory is not None and args.learned_routing:
        from neural.router import LearnedRouter
        router = LearnedRouter(memory, refresh=args.routing_refresh)
    middleware = []
    if args.metrics:
        from .middleware.prometheus import Metrics, serve_metrics
        metrics = Metrics(run_dir=args.run_dir, memory_stats=memory.stats if memory is not None else None)
        serve_metrics(metrics, metrics_address(args.metrics))
        middleware.append(metrics)
    serve(BrokerConfig.in_directory(args.run_dir, heartbeat_interval=args.heartbeat,
                                    heartbeat_liveness=args.liveness, keys_home=args.keys_home,
                                    result_ttl=args.result_ttl, unserved_grace=args.unserved_grace,
                                    frontend_tcp=tcp and tcp.frontend, backend_tcp=tcp and tcp.backend,
                                    events_tcp=tcp and tcp.events,
                                    retrain_interval=args.retrain_interval,
                                    retrain_min_outcomes=args.retrain_min_outcomes), journal, outcomes, router, middleware)


if __name__ == "__main__":
    main()
