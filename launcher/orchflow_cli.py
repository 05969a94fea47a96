"""``orchflow``: talk to a running swarm (submit, status, events, memory)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bus.client import Client
from bus.errors import BusError, TaskFailed
from store.env import orchflow_home

from .supervisor import read_state


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
    with c.subscribe("task.progress") as sub:
        task = c.submit("neural.train", payload)
        while True:  # show progress until the result is there
            try:
                return c.result(task, timeout=0.2)
            except TimeoutError:
                event = sub.recv(timeout=0)
                while event is not None:
                    if event[1].get("id") == task and not args.json:
                        d = event[1]["data"]
                        print(f"  epoch {d.get('epoch')}: MSE {d.get('mse'):.6g}", file=sys.stderr, flush=True)
                    event = sub.recv(timeout=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="orchflow", description="Use a running orchflow swarm.")
    ap.add_argument("--home", default=None)
    ap.add_argument("--project", default="default")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("submit")
    s.add_argument("kind")
    s.add_argument("--payload", default="null", help="JSON")
    s.add_argument("--wait", action="store_true")
    s.add_argument("--timeout", type=float, default=None)
    sub.add_parser("status")
    e = sub.add_parser("events")
    e.add_argument("topics", nargs="*")
    m = sub.add_parser("memory")
    m.add_argument("op", choices=["get", "put", "delete", "list", "search", "namespaces"])
    m.add_argument("args", nargs="*")
    m.add_argument("--ns", default=None)
    m.add_argument("--ttl", type=float, default=None)
    nn = sub.add_parser("neural", help="models in the neural pool")
    nn.add_argument("op", choices=["list", "load", "run", "train"])
    nn.add_argument("name", nargs="?")
    nn.add_argument("file", nargs="?", help="load: FANN network file; train: FANN training-data file")
    nn.add_argument("--input", default=None, help="run: JSON vector or list of vectors")
    nn.add_argument("--version", type=int, default=None)
    nn.add_argument("--algorithm", default=None, choices=["incremental", "batch", "rprop", "quickprop", "sarprop"])
    nn.add_argument("--epochs", type=int, default=200)
    nn.add_argument("--desired-error", type=float, default=0.0)
    nn.add_argument("--cascade", type=int, default=None, metavar="MAX_NEURONS", help="train with Cascade2")
    args = ap.parse_args(argv)
    home = Path(args.home or orchflow_home())
    state = read_state(home)
    if not state:
        print(f"orchflow: no swarm found under {home}; start one with orchflow-launch", file=sys.stderr)
        return 2
    ep = state["endpoints"]

    def show(value: object) -> None:
        print(json.dumps(value, indent=None if args.json else 2, default=str))

    try:
        with Client(ep["frontend"], events=ep["events"], project=args.project) as c:
            if args.cmd == "submit":
                task_id = c.submit(args.kind, json.loads(args.payload))
                show(c.outcome(task_id, timeout=args.timeout) if args.wait else {"id": task_id})
            elif args.cmd == "status":
                show(c.status())
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
