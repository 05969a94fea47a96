"""``orchflow-launch``: start, supervise and stop a local swarm."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from bus.endpoints import TcpEndpoints, metrics_address
from bus.logsetup import FORMAT_ENV, FORMATS, LEVEL_ENV, LEVELS, also_log_to, configure_logging
from store.env import orchflow_home

from . import config
from .errors import CliError
from .supervisor import (LaunchError, Supervisor, SwarmConfig, kill_children, leftover_children, pid_alive,
                         read_state, swarm_running)


def stop_swarm(home: Path) -> int:
    state = read_state(home)
    leftover = leftover_children(home)
    if leftover:  # the launcher is gone (killed): stop what its state file names
        kill_children(leftover)
        _remove_state(home)
        print(f"stopped {len(leftover)} processes left by a dead launcher: "
              + ", ".join(f"{n} (pid {p})" for n, p in leftover.items()))
        return 0
    if not state or not pid_alive(state.get("launcher_pid")):
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


def _remove_state(home: Path) -> None:
    try:
        (home / "run" / "state.json").unlink()
    except FileNotFoundError:
        pass


def swarm_status(home: Path) -> int:
    """0 and the state when the swarm answers; 1 when none runs; 3 when the launcher is
    dead but processes it started are alive (``orchflow-launch stop`` ends them)."""
    state = swarm_running(home)
    if state:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.get("started") or 0))
        print(f"running under {home} since {started} (launcher pid {state.get('launcher_pid')}"
              + ("" if state.get("ready") else ", still starting") + ")")
        print("  processes: " + ", ".join(f"{n} (pid {p})" for n, p in (state.get("pids") or {}).items()))
        print(f"  clients:   {state['endpoints']['frontend']}"
              + (f" and {state['endpoints']['frontend_tcp']} (CURVE)" if state["endpoints"].get("frontend_tcp") else ""))
        return 0
    leftover = leftover_children(home)
    if leftover:
        print(f"the launcher is gone but {len(leftover)} of its processes are running: "
              + ", ".join(f"{n} (pid {p})" for n, p in leftover.items()) + "; stop them with: orchflow-launch stop")
        return 3
    print(f"no swarm is running under {home}")
    return 1


def detach(home: Path, args: list[str]) -> int:
    """Start the launcher in a new session with its output in the swarm's log directory,
    and return once it reports ready (or failed)."""
    import subprocess
    if swarm_running(home):
        print(f"orchflow-launch: a swarm is already running under {home}; stop it with: orchflow-launch stop",
              file=sys.stderr)
        return 2
    (home / "logs").mkdir(parents=True, exist_ok=True)
    log_path = home / "logs" / "launcher.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "launcher.orchflow_launch", *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env=dict(os.environ, ORCHFLOW_HOME=str(home)))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"orchflow-launch: the swarm did not start (exit {proc.returncode}); see {log_path}", file=sys.stderr)
            return 1
        state = swarm_running(home)
        if state:
            print(f"orchflow swarm running in the background (launcher pid {state['launcher_pid']}) under {home}")
            print(f"  clients: {state['endpoints']['frontend']}\n  logs:    {log_path}\n"
                  f"  stop with: orchflow-launch stop")
            return 0
        time.sleep(0.1)
    print(f"orchflow-launch: no ready swarm after 30 s; see {log_path}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="orchflow-launch", description="Start and supervise a local orchflow swarm.",
                                 epilog="Settings may also live in $ORCHFLOW_HOME/config.toml (agents, capacity, "
                                        "neural_workers, neural_start, learned_routing, log_level, result_ttl, heartbeat, tcp); flags win.")
    ap.add_argument("command", nargs="?", choices=["start", "stop", "status"], default="start")
    ap.add_argument("--home", default=None, help="swarm home (default $ORCHFLOW_HOME or ~/.orchflow)")
    ap.add_argument("--agents", type=int, default=None, help="built-in agent processes, also serving memory (default 1)")
    ap.add_argument("--capacity", type=int, default=None, help="concurrent tasks per agent (default 8)")
    ap.add_argument("--neural-workers", type=int, default=None, help="neural worker processes (default 1)")
    ap.add_argument("--neural-start", default=None, choices=config.NEURAL_STARTS,
                    help="start the neural workers with the first neural.* task (demand, the default) "
                         "or with the swarm (eager)")
    ap.add_argument("--learned-routing", action="store_true", default=None,
                    help="route tasks by a model the neural pool learns from every task's outcome "
                         "(costs the broker ~14 us per task; pays off when agents differ in speed)")
    ap.add_argument("--log-level", default=None, choices=LEVELS, type=str.upper,
                    help="every process's log level (default INFO); logs are in $ORCHFLOW_HOME/logs")
    ap.add_argument("--log-format", default=None, choices=FORMATS,
                    help="text lines (default) or json: one JSON object per line, for log shippers")
    ap.add_argument("--metrics", default=None, metavar="[HOST:]PORT",
                    help="serve Prometheus metrics at http://HOST:PORT/metrics (HOST defaults to 127.0.0.1)")
    ap.add_argument("--unserved-grace", type=float, default=None, metavar="SECONDS",
                    help="fail queued tasks of a kind no agent has served for SECONDS (default: they wait)")
    ap.add_argument("--result-ttl", type=float, default=None, metavar="SECONDS",
                    help="how long finished tasks, failed ones (dead letters) included, are kept (default 3600)")
    ap.add_argument("--demo", action="store_true", help="run the demo workload, then stop")
    ap.add_argument("--tcp", default=None, metavar="HOST:PORT",
                    help="also accept remote peers over TCP, CURVE keys only (orchflow keys): clients on "
                         "PORT, agents on PORT+1, events on PORT+2 (default: ipc only, this machine)")
    ap.add_argument("--detach", action="store_true", help="run in the background; return once the swarm is ready")
    ap.add_argument("--no-verify", action="store_true",
                    help="start without checking the memory and journal for damage first")
    args = ap.parse_args(argv)
    home = Path(args.home or orchflow_home())
    try:
        conf = config.settings(home, {"agents": args.agents, "capacity": args.capacity,
                                      "neural_workers": args.neural_workers, "neural_start": args.neural_start,
                                      "learned_routing": args.learned_routing,
                                      "log_level": args.log_level,
                                      "result_ttl": args.result_ttl, "tcp": args.tcp,
                                      "unserved_grace": args.unserved_grace,
                                      "log_format": args.log_format, "metrics": args.metrics})
    except CliError as exc:
        print(f"orchflow-launch: {exc}", file=sys.stderr)
        return 2
    if conf["tcp"]:
        try:
            TcpEndpoints.at(conf["tcp"])
        except ValueError as exc:
            ap.error(f"--tcp: {exc}")
    if conf["agents"] < 1:
        ap.error("--agents must be at least 1 (the built-in agents also serve the swarm memory)")
    if conf["metrics"]:
        try:
            conf["metrics"] = metrics_address(conf["metrics"])
        except ValueError as exc:
            ap.error(f"--metrics: {exc}")
    os.environ[LEVEL_ENV] = conf["log_level"].upper()  # every child inherits it
    os.environ[FORMAT_ENV] = conf["log_format"]
    configure_logging()
    if args.command == "stop":
        return stop_swarm(home)
    if args.command == "status":
        return swarm_status(home)
    os.umask(0o077)  # journal, memory, logs, keys and the state file are the owner's alone
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if args.detach:
        return detach(home, [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--detach"])
    (home / "logs").mkdir(parents=True, exist_ok=True)
    also_log_to(str(home / "logs" / "launcher.log"))
    sup = Supervisor(SwarmConfig(home=home, agents=conf["agents"], agent_capacity=conf["capacity"],
                                 neural_workers=conf["neural_workers"],
                                 # the demo trains a network at once, and runs in the thread that
                                 # would start workers on demand
                                 neural_start="eager" if args.demo else conf["neural_start"],
                                 learned_routing=conf["learned_routing"],
                                 tcp=conf["tcp"], heartbeat=conf["heartbeat"],
                                 result_ttl=conf["result_ttl"], unserved_grace=conf["unserved_grace"],
                                 verify_stores=not args.no_verify, metrics=conf["metrics"]))
    # Before start(): a stop that comes as soon as the state file says ready (a script's
    # `orchflow-launch --detach; ...; orchflow-launch stop`) must drain the agents, not
    # find a launcher whose SIGTERM still kills it on the spot.
    sup.install_signal_handlers()
    try:
        t = time.monotonic()
        sup.start()
    except LaunchError as exc:
        print(f"orchflow-launch: {exc}", file=sys.stderr)
        return 2
    try:
        ep = sup.endpoints
        print(f"orchflow swarm ready in {time.monotonic() - t:.2f}s under {home}")
        tcp = TcpEndpoints.at(conf["tcp"]) if conf["tcp"] else None
        print(f"  clients:  {ep.frontend}" + (f" and {tcp.frontend} (CURVE)" if tcp else "")
              + f"\n  agents:   {ep.backend}" + (f" and {tcp.backend} (CURVE)" if tcp else "")
              + f"\n  events:   {ep.events}" + (f" and {tcp.events} (CURVE)" if tcp else ""))
        if tcp:
            print(f"  keys:     {home / 'keys'} (orchflow keys list)")
        if conf["metrics"]:
            print(f"  metrics:  http://{conf['metrics']}/metrics")
        print(f"  state:    {sup.config.state_file}\n  logs:     {home / 'logs'} (orchflow logs)")
        if args.demo:  # a short run: Ctrl-C interrupts it at once
            signal.signal(signal.SIGINT, signal.default_int_handler)
            from .demo import run_demo
            ok = run_demo(ep, conf["agents"])
            print("\ndemo finished: " + ("all steps succeeded" if ok else "SOME STEPS FAILED"))
            return 0 if ok else 1
        print("stop with Ctrl-C or: orchflow-launch stop")
        sup.supervise()
        return 0
    finally:
        sup.shutdown()


if __name__ == "__main__":
    sys.exit(main())
