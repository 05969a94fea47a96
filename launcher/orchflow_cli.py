"""``orchflow``: talk to a running swarm (submit, status, events, memory)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
import time
from pathlib import Path

from bus.auth import CurveCredentials
from bus.client import Client, outcome_value
from bus.endpoints import Endpoints
from bus.errors import AuthError, BusError, TaskFailed
from store.env import orchflow_home

from . import keys_cli
from .supervisor import read_state


def render_status(st: dict) -> str:
    c = st["counters"]
    lines = [f"broker up {st['uptime']:.0f}s, protocol v{st['version']}, {st['live']} live tasks",
             f"tasks: {c['submitted']} submitted, {c['done']} done, {c['failed']} failed, {c['cancelled']} cancelled, "
             f"{c['expired']} expired, {c['retried']} retried",
             f"agents ({len(st['agents'])}):"]
    lines += [f"  {a['name']:12} {a['inflight']:>3}/{a['capacity']:<4} done {a['completed']}" for a in st["agents"]]
    workflows = st.get("workflows") or {}
    if workflows:
        lines.append(f"workflows ({len(workflows)} live):")
        for wid, wf in workflows.items():
            counts: dict[str, int] = {}
            for state in wf["steps"].values():
                counts[state] = counts.get(state, 0) + 1
            lines.append(f"  {wid} [{wf['strategy']}] " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    queues = st.get("queues") or {}
    lines.append("queues: " + (", ".join(f"{k} {v}" for k, v in queues.items()) if queues else "empty"))
    health = "ok" if st["agents"] and not (c["malformed_frontend"] or c["malformed_backend"]) else "check"
    lines.append(f"health: {health} (agents lost {c['agents_lost']}, malformed messages "
                 f"{c['malformed_frontend'] + c['malformed_backend']}, events dropped {st['events_dropped']})")
    return "\n".join(lines)


def neural_command(c: Client, args: argparse.Namespace) -> object:
    if args.op == "list":
        return c.call("neural.list", {}, timeout=30)
    if not args.name:
        raise SystemExit("orchflow neural: a model name is needed")
    if args.op == "load":
        with open(args.file) as f:
            return c.call("neural.load", {"name": args.name, "fann": f.read()}, timeout=30)
    if args.op == "run":
        return c.call("neural.run", {"name": args.name, "version": args.version,
                                     "input": json.loads(args.input or "[]")}, timeout=30)
    with open(args.file) as f:
        payload = {"name": args.name, "version": args.version, "data_text": f.read(), "max_epochs": args.epochs,
                   "desired_error": args.desired_error, "report_every": max(1, args.epochs // 20)}
    if args.algorithm:
        payload["algorithm"] = args.algorithm
    if args.cascade:
        payload["cascade_neurons"] = args.cascade
    return outcome_value(wait_with_progress(c, c.submit, "neural.train", payload, None, quiet=args.json))


def wait_with_progress(c: Client, submit, kind: str, payload: object, timeout: float | None,
                       quiet: bool) -> dict:
    """Submit, then wait for the outcome while printing the task's progress events to stderr."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with c.subscribe("task.progress") as sub:
        task = submit(kind, payload)
        while True:
            try:
                return c.outcome(task, timeout=0.2)
            except TimeoutError:
                if deadline is not None and time.monotonic() > deadline:
                    raise
                event = sub.recv(timeout=0)
                while event is not None:
                    if event[1].get("id") == task and not quiet:
                        print(f"  {format_progress(event[1].get('data'))}", file=sys.stderr, flush=True)
                    event = sub.recv(timeout=0)


def format_progress(data: object) -> str:
    if isinstance(data, dict) and "line" in data:      # shell output
        return f"[{data.get('stream', 'out')}] {data['line']}"
    if isinstance(data, dict) and "epoch" in data:     # neural training
        return f"epoch {data['epoch']}: MSE {data.get('mse', float('nan')):.6g}"
    return json.dumps(data, default=str)


def store_command(home: Path, args: argparse.Namespace) -> int:
    """``memory verify`` and ``memory salvage`` work on the files, swarm running or not."""
    from store.verify import salvage, verify
    if args.op == "verify":
        path = args.args[0] if args.args else str(home / "memory")
        if not os.path.exists(os.path.join(path, "data.mdb")):
            print(f"orchflow memory verify: no store at {path}", file=sys.stderr)
            return 2
        report = verify(path)
        print(json.dumps(asdict(report)) if args.json else report.text())
        return 0 if report.ok else 1
    if len(args.args) != 2:
        print("orchflow memory salvage: give SRC and DST (a new directory)", file=sys.stderr)
        return 2
    src, dst = args.args
    if os.path.exists(os.path.join(dst, "data.mdb")):
        print(f"orchflow memory salvage: {dst} already holds a store; give a new directory", file=sys.stderr)
        return 2
    summary = salvage(src, dst)
    print(json.dumps(summary, indent=None if args.json else 2))
    return 0


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)  # accepted before or after the subcommand
    common.add_argument("--home", default=argparse.SUPPRESS, help="swarm home (default $ORCHFLOW_HOME or ~/.orchflow)")
    common.add_argument("--project", default=argparse.SUPPRESS, help="project the tasks belong to")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    common.add_argument("--broker", default=argparse.SUPPRESS, metavar="tcp://HOST:PORT",
                        help="a remote broker's client endpoint, instead of the local swarm's; CURVE keys "
                             "from --key/--broker-key or ORCHFLOW_KEY/ORCHFLOW_BROKER_KEY")
    common.add_argument("--key", default=argparse.SUPPRESS, help="this client's .key_secret file (orchflow keys add)")
    common.add_argument("--broker-key", default=argparse.SUPPRESS, help="the broker's broker.key file")
    ap = argparse.ArgumentParser(prog="orchflow", description="Use a running orchflow swarm.", parents=[common])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("submit", parents=[common], help="submit a task (--wait for its result)")
    s.add_argument("kind")
    s.add_argument("--payload", default="null", help="JSON")
    s.add_argument("--wait", action="store_true")
    s.add_argument("--timeout", type=float, default=None)
    sub.add_parser("status", parents=[common], help="agents, queues, counters")
    sub.add_parser("agents", parents=[common], help="registered agents")
    sub.add_parser("stop", parents=[common], help="stop the swarm (as orchflow-launch stop)")
    e = sub.add_parser("events", parents=[common], help="live tail of events")
    e.add_argument("topics", nargs="*")
    m = sub.add_parser("memory", parents=[common], help="swarm memory")
    m.add_argument("op", choices=["get", "put", "delete", "list", "search", "namespaces", "verify", "salvage"],
                   help="verify [PATH]: check a store in a child process (exit 1 if damaged); "
                        "salvage SRC DST: copy every readable entry into a new store")
    m.add_argument("args", nargs="*")
    m.add_argument("--ns", default=None)
    m.add_argument("--ttl", type=float, default=None)
    nn = sub.add_parser("neural", parents=[common], help="models in the neural pool")
    nn.add_argument("op", choices=["list", "load", "run", "train"])
    nn.add_argument("name", nargs="?")
    nn.add_argument("file", nargs="?", help="load: FANN network file; train: FANN training-data file")
    nn.add_argument("--input", default=None, help="run: JSON vector or list of vectors")
    nn.add_argument("--version", type=int, default=None)
    nn.add_argument("--algorithm", default=None, choices=["incremental", "batch", "rprop", "quickprop", "sarprop"])
    nn.add_argument("--epochs", type=int, default=200)
    nn.add_argument("--desired-error", type=float, default=0.0)
    nn.add_argument("--cascade", type=int, default=None, metavar="MAX_NEURONS", help="train with Cascade2")
    keys_cli.add_parser(sub)
    args = ap.parse_args(argv)
    args.json = getattr(args, "json", False)
    args.project = getattr(args, "project", "default")
    home = Path(getattr(args, "home", None) or orchflow_home())
    if args.cmd == "stop":
        from .cli import stop_swarm
        return stop_swarm(home)
    if args.cmd == "keys":
        return keys_cli.run(home, args)
    if args.cmd == "memory" and args.op in ("verify", "salvage"):
        return store_command(home, args)
    remote = getattr(args, "broker", None)
    curve = None
    if remote:
        ep = {"frontend": remote, "events": Endpoints.events_beside(remote)}
        try:
            key = getattr(args, "key", None) or os.environ.get("ORCHFLOW_KEY")
            broker_key = getattr(args, "broker_key", None) or os.environ.get("ORCHFLOW_BROKER_KEY") \
                or str(home / "keys" / "broker.key")
            if not key:
                raise AuthError("--broker tcp://... needs this client's key: --key FILE or ORCHFLOW_KEY")
            curve = CurveCredentials.from_files(key, broker_key)
        except AuthError as exc:
            print(f"orchflow: {exc}", file=sys.stderr)
            return 2
    else:
        state = read_state(home)
        if not state:
            print(f"orchflow: no swarm found under {home}; start one with orchflow-launch", file=sys.stderr)
            return 2
        ep = state["endpoints"]

    def show(value: object) -> None:
        print(json.dumps(value, indent=None if args.json else 2, default=str))

    try:
        with Client(ep["frontend"], events=ep["events"], project=args.project, curve=curve) as c:
            if args.cmd == "submit":
                if not args.wait:
                    show({"id": c.submit(args.kind, json.loads(args.payload))})
                else:
                    show(wait_with_progress(c, c.submit, args.kind, json.loads(args.payload), args.timeout,
                                            quiet=args.json))
            elif args.cmd == "status":
                status = c.status()
                show(status) if args.json else print(render_status(status))
            elif args.cmd == "agents":
                agents = c.status()["agents"]
                if args.json:
                    show(agents)
                else:
                    for a in agents:
                        print(f"{a['name']:12} {a['inflight']:>3}/{a['capacity']:<4} done {a['completed']:<8} "
                              f"{', '.join(a['kinds'])}")
            elif args.cmd == "events":
                for topic, body in c.subscribe(*args.topics):
                    print(json.dumps({"topic": topic, **body}) if args.json else f"{topic:16} {body}", flush=True)
            elif args.cmd == "neural":
                show(neural_command(c, args))
            elif args.cmd == "memory":
                kind = {"list": "memory.items"}.get(args.op, f"memory.{args.op}")
                payload: dict = {"ns": args.ns} if args.ns else {}
                if args.op in ("get", "delete"):
                    payload["key"] = args.args[0]
                elif args.op == "put":
                    payload.update(key=args.args[0], value=json.loads(args.args[1]), ttl=args.ttl)
                elif args.op == "list":
                    payload["prefix"] = args.args[0] if args.args else ""
                elif args.op == "search":
                    payload["text"] = args.args[0]
                show(c.call(kind, payload, timeout=10))
    except TaskFailed as exc:
        print(f"orchflow: {exc}", file=sys.stderr)
        return 1
    except BusError as exc:
        print(f"orchflow: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
