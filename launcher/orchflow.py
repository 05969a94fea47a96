"""``orchflow``: talk to a running swarm (submit, status, events, memory)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from bus.auth import CurveCredentials
from bus.client import Client, outcome_value
from bus.endpoints import Endpoints
from bus.errors import AuthError, BusError, TaskFailed, TaskRejected
from store.env import orchflow_home

from . import exit_codes, keys_cli, logs_cli, task_cli
from .errors import CliError
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
    unserved = st.get("unserved") or {}
    health = "ok" if st["agents"] and not (c["malformed_frontend"] or c["malformed_backend"] or unserved) else "check"
    lines.append(f"health: {health} (agents lost {c['agents_lost']}, malformed messages "
                 f"{c['malformed_frontend'] + c['malformed_backend']}, events dropped {st['events_dropped']})")
    if unserved:
        lines.append("  no agent serves: " + ", ".join(f"{k} ({n} queued)" for k, n in unserved.items())
                     + "; `orchflow cancel` or start an agent for them")
    return "\n".join(lines)


def neural_command(c: Client, args: argparse.Namespace, events_in: str | None) -> object:
    if args.op == "list":
        return c.call("neural.list", {}, timeout=30)
    if not args.name:
        raise CliError("neural: a model name is needed")
    if args.op == "create":
        try:
            layers = [int(n) for n in (args.layers or "").split(",")]
        except ValueError:
            raise CliError("neural create: --layers takes sizes separated by commas, e.g. 2,4,1") from None
        payload = {"name": args.name, "layers": layers, "activation": args.activation,
                   "output_activation": args.output_activation or args.activation, "shortcut": args.shortcut}
        if args.seed is not None:
            payload["seed"] = args.seed
        return c.call("neural.create", payload, timeout=30)
    if args.op == "load":
        if not args.file:
            raise CliError("neural load: give NAME and a FANN network FILE")
        with open(args.file) as f:
            return c.call("neural.load", {"name": args.name, "fann": f.read()}, timeout=30)
    if args.op == "run":
        return c.call("neural.run", {"name": args.name, "version": args.version,
                                     "input": task_cli.parse_json(args.input or "[]", "--input")}, timeout=30)
    if not args.file:
        raise CliError("neural train: give NAME and a FANN training-data FILE")
    with open(args.file) as f:
        payload = {"name": args.name, "version": args.version, "data_text": f.read(), "max_epochs": args.epochs,
                   "desired_error": args.desired_error, "report_every": max(1, args.epochs // 20)}
    if args.algorithm:
        payload["algorithm"] = args.algorithm
    if args.cascade:
        payload["cascade_neurons"] = args.cascade
    with task_cli.watching(c, events_in) as sub:
        result = outcome_value(task_cli.wait_for(c, c.submit("neural.train", payload), sub, None, quiet=args.json))
    if isinstance(result, dict) and result.get("warning"):
        print(f"orchflow: warning: {result['warning']}", file=sys.stderr)
    return result


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


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)  # accepted before or after the subcommand
    common.add_argument("--home", default=argparse.SUPPRESS, help="swarm home (default $ORCHFLOW_HOME or ~/.orchflow)")
    common.add_argument("--project", default=argparse.SUPPRESS, help="project the tasks belong to (default 'default')")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    common.add_argument("--broker", default=argparse.SUPPRESS, metavar="tcp://HOST:PORT",
                        help="a remote broker's client endpoint, instead of the local swarm's; CURVE keys "
                             "from --key/--broker-key or ORCHFLOW_KEY/ORCHFLOW_BROKER_KEY")
    common.add_argument("--key", default=argparse.SUPPRESS, help="this client's .key_secret file (orchflow keys add)")
    common.add_argument("--broker-key", default=argparse.SUPPRESS, help="the broker's broker.key file")
    ap = argparse.ArgumentParser(
        prog="orchflow", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Use a running orchflow swarm (start one with orchflow-launch).",
        epilog="examples:\n"
               "  orchflow submit shell --payload '{\"cmd\": \"make test\"}' --wait && echo passed\n"
               "  orchflow result ID --wait --timeout 60\n"
               "  orchflow kinds\n\n" + exit_codes.HELP)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    task_cli.add_parsers(sub, common)
    sub.add_parser("status", parents=[common], help="agents, queues, counters")
    sub.add_parser("agents", parents=[common], help="registered agents")
    sub.add_parser("stop", parents=[common], help="stop the swarm (as orchflow-launch stop)")
    e = sub.add_parser("events", parents=[common], help="live tail of events")
    e.add_argument("topics", nargs="*", help="topic prefixes, e.g. task. agent. (default: all)")
    m = sub.add_parser("memory", parents=[common], help="swarm memory")
    m.add_argument("op", choices=["get", "put", "delete", "list", "search", "namespaces", "verify", "salvage"],
                   help="get KEY, put KEY JSON, delete KEY, list [PREFIX], search TEXT, namespaces; "
                        "verify [PATH]: check a store in a child process (exit 1 if damaged); "
                        "salvage SRC DST: copy every readable entry into a new store")
    m.add_argument("args", nargs="*")
    m.add_argument("--ns", default=None, help="namespace (default: the project's)")
    m.add_argument("--ttl", type=float, default=None, metavar="SECONDS", help="put: expire after SECONDS")
    m.add_argument("--text", action="store_true", help="put: store VALUE as text instead of parsing it as JSON")
    nn = sub.add_parser("neural", parents=[common], help="models in the neural pool")
    nn.add_argument("op", choices=["list", "create", "load", "run", "train"],
                    help="create NAME --layers 2,4,1; load NAME FILE.net; train NAME FILE.data; run NAME --input")
    nn.add_argument("name", nargs="?")
    nn.add_argument("file", nargs="?", help="load: FANN network file; train: FANN training-data file")
    nn.add_argument("--input", default=None, help="run: JSON vector or list of vectors")
    nn.add_argument("--version", type=int, default=None)
    nn.add_argument("--algorithm", default=None, choices=["incremental", "batch", "rprop", "quickprop", "sarprop"])
    nn.add_argument("--epochs", type=int, default=200)
    nn.add_argument("--desired-error", type=float, default=0.0)
    nn.add_argument("--cascade", type=int, default=None, metavar="MAX_NEURONS", help="train with Cascade2")
    nn.add_argument("--layers", default=None, metavar="N,N,...", help="create: inputs, hidden sizes, outputs")
    nn.add_argument("--activation", default="sigmoid_symmetric", help="create: hidden layers' function "
                    "(FANN names: sigmoid, sigmoid_symmetric, linear, gaussian, elliot, ...)")
    nn.add_argument("--output-activation", default=None, help="create: the output layer's (default: --activation)")
    nn.add_argument("--shortcut", action="store_true", help="create: a shortcut network (for --cascade)")
    nn.add_argument("--seed", type=int, default=None, help="create: seed of the initial weights")
    keys_cli.add_parser(sub)
    logs_cli.add_parser(sub, common)
    srv = sub.add_parser("serve", parents=[common], help="JSON-RPC 2.0 for the IDE, over stdio or WebSocket",
                         description="Serve orchflow's API (docs/IDE.md) as JSON-RPC 2.0: on stdin/stdout, one "
                                     "message per line (--stdio), or over WebSocket (--ws).")
    how = srv.add_mutually_exclusive_group(required=True)
    how.add_argument("--stdio", action="store_true", help="newline-delimited JSON-RPC on stdin/stdout")
    how.add_argument("--ws", metavar="HOST:PORT", help="WebSocket on HOST:PORT (loopback only without TLS)")
    srv.add_argument("--ensure", action="store_true", help="start a swarm if none is running")
    srv.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                     help="--ws: a browser Origin allowed to connect (repeatable; default: none)")
    srv.add_argument("--tls-cert", help="--ws: certificate (PEM) for wss://; required off loopback")
    srv.add_argument("--tls-key", help="--ws: the certificate's private key (PEM)")
    sub.add_parser("mcp", parents=[common], help="an MCP server on stdio, for AI coding assistants",
                   description="Serve orchflow's tools over MCP on stdin/stdout (claude mcp add orchflow -- "
                               "orchflow mcp).")
    t = sub.add_parser("top", parents=[common], help="live view of agents, queues, workflows and failures",
                       description="A live view of the swarm (q quits, ? lists the keys).")
    t.add_argument("--interval", type=float, default=0.5, help="seconds between refreshes (default 0.5, at least 0.1)")
    comp = sub.add_parser("completion", help="print a shell completion script",
                          description='eval "$(orchflow completion bash)" in ~/.bashrc turns on tab completion')
    comp.add_argument("shell", choices=["bash"])
    return ap


def main(argv: list[str] | None = None) -> int:
    """Every failure ends in one line on stderr and an exit code from launcher/exit_codes.py."""
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    args.project_given = hasattr(args, "project")
    args.project = getattr(args, "project", "default")
    try:
        return run(args)
    except CliError as exc:
        print(f"orchflow: {exc}", file=sys.stderr)
        return exc.code
    except TaskFailed as exc:
        print(f"orchflow: {exc}", file=sys.stderr)
        return exit_codes.for_state(exc.state)
    except (TaskRejected, AuthError) as exc:
        print(f"orchflow: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    except BusError as exc:
        print(f"orchflow: {exc}", file=sys.stderr)
        return exit_codes.UNAVAILABLE
    except KeyboardInterrupt:
        print("orchflow: interrupted", file=sys.stderr)
        return exit_codes.INTERRUPTED
    except OSError as exc:
        print(f"orchflow: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), file=sys.stderr)
        return exit_codes.USAGE if isinstance(exc, (FileNotFoundError, IsADirectoryError)) else exit_codes.INTERNAL
    except Exception as exc:  # noqa: BLE001 - a bug: one line that says so, never a traceback
        print(f"orchflow: internal error: {type(exc).__name__}: {exc} (please report)", file=sys.stderr)
        return exit_codes.INTERNAL


def connect(home: Path, args: argparse.Namespace) -> tuple[dict, CurveCredentials | None]:
    """The swarm's endpoints, and CURVE keys for a remote one."""
    remote = getattr(args, "broker", None)
    if not remote:
        state = read_state(home)
        if not state:
            raise CliError(f"no swarm found under {home}; start one with orchflow-launch", exit_codes.UNAVAILABLE)
        return state["endpoints"], None
    key = getattr(args, "key", None) or os.environ.get("ORCHFLOW_KEY")
    broker_key = getattr(args, "broker_key", None) or os.environ.get("ORCHFLOW_BROKER_KEY") \
        or str(home / "keys" / "broker.key")
    if not key:
        raise CliError("--broker tcp://... needs this client's key: --key FILE or ORCHFLOW_KEY")
    return {"frontend": remote, "events": Endpoints.events_beside(remote)}, CurveCredentials.from_files(key, broker_key)


def run(args: argparse.Namespace) -> int:
    home = Path(getattr(args, "home", None) or orchflow_home())
    if args.cmd == "stop":
        from .orchflow_launch import stop_swarm
        return stop_swarm(home)
    if args.cmd == "keys":
        return keys_cli.run(home, args)
    if args.cmd == "completion":
        from .completion import bash_script
        print(bash_script(build_parser()), end="")
        return exit_codes.DONE
    if args.cmd == "memory" and args.op in ("verify", "salvage"):
        return store_command(home, args)
    if args.cmd == "logs":
        return logs_cli.run(home, args)
    if args.cmd == "serve":
        if args.stdio:
            from bridge.stdio import run as serve_stdio
            return serve_stdio(home, args.ensure, args.project)
        from bridge.ws import run as serve_ws
        return serve_ws(home, args.ws, args.ensure, args.project, args.allow_origin, args.tls_cert, args.tls_key)
    if args.cmd == "mcp":
        from bridge.mcp_server import run as serve_mcp
        return serve_mcp(home, args.project)
    ep, curve = connect(home, args)
    events_in = ep.get("events_in")  # local swarms only: what Subscription.wait_live probes through

    with Client(ep["frontend"], events=ep["events"], project=args.project, curve=curve) as c:
        if args.cmd == "submit":
            return task_cli.submit_command(c, args, events_in)
        if args.cmd == "result":
            return task_cli.result_command(c, args)
        if args.cmd == "cancel":
            return task_cli.cancel_command(c, args)
        if args.cmd == "kinds":
            on_demand = [] if getattr(args, "broker", None) else (read_state(home) or {}).get("on_demand", [])
            return task_cli.kinds_command(c, args, on_demand)
        if args.cmd in ("tasks", "purge", "retry", "schedule"):
            return getattr(task_cli, f"{args.cmd}_command")(c, args)
        if args.cmd == "top":
            from .top import run_top
            return run_top(c, args, ep["frontend"])
        if args.cmd == "status":
            status = c.status()
            task_cli.show(status, True) if args.json else print(render_status(status))
        elif args.cmd == "agents":
            agents = c.status()["agents"]
            if args.json:
                task_cli.show(agents, True)
            else:
                for a in agents:
                    print(f"{a['name']:12} {a['inflight']:>3}/{a['capacity']:<4} done {a['completed']:<8} "
                          f"{', '.join(a['kinds'])}")
        elif args.cmd == "events":
            for topic, body in c.subscribe(*args.topics):
                print(json.dumps({"topic": topic, **body}, default=str) if args.json and isinstance(body, dict)
                      else task_cli.format_event(topic, body), flush=True)
        elif args.cmd == "neural":
            task_cli.show(neural_command(c, args, events_in), args.json)
        elif args.cmd == "memory":
            task_cli.show(c.call(*memory_request(args), timeout=10), args.json)
    return exit_codes.DONE


def memory_request(args: argparse.Namespace) -> tuple[str, dict]:
    """The memory agent's kind and payload for ``orchflow memory OP ARGS``."""
    need = {"get": 1, "delete": 1, "put": 2, "search": 1}.get(args.op, 0)
    if len(args.args) < need:
        names = {"get": "KEY", "delete": "KEY", "put": "KEY VALUE", "search": "TEXT"}[args.op]
        raise CliError(f"memory {args.op}: give {names}")
    kind = {"list": "memory.items"}.get(args.op, f"memory.{args.op}")
    payload: dict = {"ns": args.ns} if args.ns else {}
    if args.op in ("get", "delete"):
        payload["key"] = args.args[0]
    elif args.op == "put":
        value = args.args[1] if args.text else None
        if not args.text:
            try:
                value = task_cli.parse_json(args.args[1], "VALUE")
            except CliError as exc:
                raise CliError(f"memory put: {exc}; a string needs JSON quotes "
                               f"('\"{args.args[1][:40]}\"'), or pass --text to store it as text") from None
        payload.update(key=args.args[0], value=value, ttl=args.ttl)
    elif args.op == "list":
        payload["prefix"] = args.args[0] if args.args else ""
    elif args.op == "search":
        payload["text"] = args.args[0]
    return kind, payload


if __name__ == "__main__":
    sys.exit(main())
