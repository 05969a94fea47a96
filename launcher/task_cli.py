"""``orchflow submit``, ``result``, ``cancel`` and ``kinds``: tasks from a terminal or a script.

The exit code follows the task's state (launcher/exit_codes.py), every error is one
line, and a waited-for task shows its progress up to the last line: the wait ends on
the task's final *event*, which the broker publishes after every progress event of
the task, not on the RESULT, which travels another socket and can overtake them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from bus import protocol as P
from bus.client import Client, Subscription
from bus.errors import UnknownTask

from . import exit_codes
from .errors import CliError

FINAL_TOPICS = ("task.done", "task.failed", "task.cancelled", "task.expired")
#: How long a wait goes on reading events once the RESULT is in, for progress the
#: RESULT overtook, when the final event itself was lost (a full event queue).
PROGRESS_GRACE = 1.0


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser("submit", parents=[common], help="submit a task (--wait: its result decides the exit code)",
                       description="Submit a task of KIND.  Without --wait, print its id.  With --wait, print "
                                   "its progress on stderr and its outcome on stdout, and exit with its state.",
                       epilog="examples:\n"
                              "  orchflow submit shell --payload '{\"cmd\": \"make test\"}' --wait\n"
                              "  orchflow submit shell --payload @job.json --wait --timeout 600\n"
                              "  echo '{\"cmd\": \"ls\"}' | orchflow submit shell --payload - --wait\n\n"
                              + exit_codes.HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("kind", help="the task kind; `orchflow kinds` lists what the swarm serves")
    s.add_argument("--payload", default="null", metavar="JSON|@FILE|-",
                   help="the payload: JSON text, @FILE to read it from a file, - for stdin (default null)")
    s.add_argument("--wait", action="store_true", help="wait for the outcome; exit with its state")
    s.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="with --wait: stop waiting after SECONDS, exit 5, print the id (the task goes on)")
    s.add_argument("--priority", type=int, default=None, help="0..9, higher first (default 5)")
    s.add_argument("--retries", type=int, default=None, metavar="N",
                   help="run again up to N times if it fails or its agent is lost, with exponential backoff")
    s.add_argument("--backoff", type=float, default=None, metavar="SECONDS",
                   help="with --retries: the first wait (default 1; doubles each time, jittered, capped at 300)")
    s.add_argument("--delay", type=float, default=None, metavar="SECONDS", help="run no sooner than SECONDS from now")
    s.add_argument("--deadline", type=float, default=None, metavar="SECONDS",
                   help="expire the task if it has not ended SECONDS from now")
    s.add_argument("--no-cwd", action="store_true",
                   help="shell: do not send this directory as the task's cwd (the agent's own is used)")
    s.add_argument("--detach-on-interrupt", action="store_true",
                   help="Ctrl-C leaves the task running instead of cancelling it")
    r = sub.add_parser("result", parents=[common], help="a task's outcome (exit code follows its state)",
                       epilog=exit_codes.HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("id")
    r.add_argument("--wait", action="store_true", help="wait until the task ends")
    r.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="with --wait: at most this long")
    c = sub.add_parser("cancel", parents=[common], help="cancel tasks or workflows by id")
    c.add_argument("ids", nargs="+", metavar="ID")
    sub.add_parser("kinds", parents=[common], help="the kinds the swarm serves, their agents and payload fields")
    t = sub.add_parser("tasks", parents=[common], help="live and recently finished tasks, newest first",
                       description="List tasks.  --state failed lists the dead letters (kept for the result "
                                   "retention); `orchflow retry ID` runs one again.")
    t.add_argument("--state", default=None, help="live, queued, running, done, failed, cancelled or expired")
    t.add_argument("--kind", default=None)
    t.add_argument("--limit", type=int, default=50)
    p = sub.add_parser("purge", parents=[common], help="cancel every queued task of a kind")
    p.add_argument("kind")
    rt = sub.add_parser("retry", parents=[common], help="run failed, cancelled or expired tasks again")
    rt.add_argument("ids", nargs="+", metavar="ID")
    sc = sub.add_parser("schedule", parents=[common], help="periodic tasks: add NAME CRON KIND, list, remove NAME",
                        epilog="example:\n  orchflow schedule add nightly '0 3 * * *' shell "
                               "--payload '{\"cmd\": \"make backup\"}'\n\nCRON: minute hour day month "
                               "weekday (a sixth field: seconds), in the broker's local time.",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sc.add_argument("op", choices=["add", "list", "remove"])
    sc.add_argument("args", nargs="*", metavar="ARG")
    sc.add_argument("--payload", default="null", metavar="JSON|@FILE|-", help="add: the tasks' payload")
    sc.add_argument("--retries", type=int, default=None, metavar="N", help="add: retries of each run")


# ---------------------------------------------------------------------------- input


def parse_json(text: str, what: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{what} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    try:
        P.pack(value)
    except UnicodeEncodeError:
        raise CliError(f"{what} holds text that is not valid UTF-8") from None
    except (ValueError, OverflowError, TypeError) as exc:
        raise CliError(f"{what} cannot be sent: {exc}") from None
    return value


def read_payload(spec: str, stdin: Callable[[], bytes] = lambda: sys.stdin.buffer.read()) -> Any:
    """``--payload``: JSON text, ``@FILE``, or ``-`` for stdin (no argv length limit)."""
    if spec == "-":
        raw, what = stdin(), "the payload on stdin"
    elif spec.startswith("@"):
        what = f"the payload in {spec[1:]}"
        try:
            with open(spec[1:], "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise CliError(f"cannot read --payload {spec}: {exc.strerror or exc}") from None
    else:
        return parse_json(spec, "--payload")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"{what} is not UTF-8") from None
    return parse_json(text, what)


def with_caller_cwd(kind: str, payload: Any) -> Any:
    """A shell task runs where the person typing is, as a local command would."""
    if kind != "shell":
        return payload
    if isinstance(payload, str):
        payload = {"cmd": payload}
    if isinstance(payload, dict) and "cwd" not in payload:
        payload = {**payload, "cwd": os.getcwd()}
    return payload


# ---------------------------------------------------------------------------- output


def format_progress(data: object) -> str:
    if isinstance(data, dict) and "line" in data:      # shell output
        return f"[{data.get('stream', 'out')}] {data['line']}"
    if isinstance(data, dict) and "epoch" in data:     # neural training
        return f"epoch {data['epoch']}: MSE {data.get('mse', float('nan')):.6g}"
    return data if isinstance(data, str) else json.dumps(data, default=str)


def format_event(topic: str, body: object) -> str:
    """One event as a line a person reads: local time, topic, then key=value pairs."""
    if not isinstance(body, dict):
        return f"{time.strftime('%H:%M:%S')}  {topic:16} {body!r}"
    ts = body.get("ts")
    when = time.strftime("%H:%M:%S", time.localtime(ts if isinstance(ts, (int, float)) else None))
    fields = " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v, default=str)}"
                      for k, v in body.items() if k != "ts")
    return f"{when}  {topic:16} {fields}"


def show(value: object, as_json: bool) -> None:
    print(json.dumps(value, indent=None if as_json else 2, default=str), flush=True)


def report_outcome(outcome: dict, as_json: bool) -> int:
    """Print the outcome; a failure also gets one line on stderr.  Returns the exit code."""
    show(outcome, as_json)
    state = outcome.get("state", "?")
    if state != "done":
        print(f"orchflow: task {outcome.get('id')} {state}: {outcome.get('error')}", file=sys.stderr)
    return exit_codes.for_state(state)


# ---------------------------------------------------------------------------- waiting


class StillRunning(Exception):
    """The wait's --timeout ran out; the task goes on."""


def wait_for(c: Client, task_id: str, sub: Subscription | None, timeout: float | None,
             quiet: bool = False) -> dict:
    """The task's outcome, with its progress printed to stderr, the last line included."""
    deadline = None if timeout is None else time.monotonic() + timeout
    outcome: dict | None = None
    final_event = False
    grace_end = 0.0
    while True:
        event = sub.recv(timeout=0.05) if sub is not None else None
        while event is not None:
            topic, body = event
            if isinstance(body, dict) and body.get("id") == task_id:
                if topic == "task.progress" and not quiet:
                    print(f"  {format_progress(body.get('data'))}", file=sys.stderr, flush=True)
                elif topic in FINAL_TOPICS:
                    final_event = True
            event = sub.recv(timeout=0)
        if outcome is None:
            try:
                outcome = c.outcome(task_id, timeout=0.05 if sub is not None else 0.25)
                grace_end = time.monotonic() + PROGRESS_GRACE
            except TimeoutError:
                pass
        if outcome is not None and (final_event or sub is None or time.monotonic() > grace_end):
            return outcome
        if outcome is None and deadline is not None and time.monotonic() > deadline:
            raise StillRunning(task_id)


@contextmanager
def watching(c: Client, events_in: str | None) -> Iterator[Subscription]:
    """A subscription to task progress and final events, live before anything is
    submitted (``events_in``: the local swarm's, for Subscription.wait_live)."""
    sub = c.subscribe("task.progress", *FINAL_TOPICS)
    try:
        if events_in is not None:
            sub.wait_live(events_in)
        yield sub
    finally:
        sub.close()


def served_kinds(status: dict) -> dict[str, list[dict]]:
    """Kind -> the agents serving it, from a STATUS reply."""
    kinds: dict[str, list[dict]] = {}
    for agent in status["agents"]:
        for kind in agent["kinds"]:
            kinds.setdefault(kind, []).append(agent)
    return kinds


def submit_command(c: Client, args: argparse.Namespace, events_in: str | None) -> int:
    payload = read_payload(args.payload)
    if not args.no_cwd:
        payload = with_caller_cwd(args.kind, payload)
    opts: dict[str, Any] = {"priority": args.priority, "timeout": args.deadline, "delay": args.delay}
    if args.retries is not None:
        opts["retry"] = {"max": args.retries} if args.backoff is None else {"max": args.retries,
                                                                            "backoff": args.backoff}
    elif args.backoff is not None:
        raise CliError("--backoff goes with --retries N")
    opts = {k: v for k, v in opts.items() if v is not None}
    if not args.wait:
        task_id = c.submit(args.kind, payload, **opts)
        c.flush()  # journaled before its id is printed
        show({"id": task_id}, args.json)
        warn_if_unserved(c, args.kind)
        return exit_codes.DONE
    task_id = None
    try:
        with watching(c, events_in) as sub:
            task_id = c.submit(args.kind, payload, **opts)
            warn_if_unserved(c, args.kind, waiting=True)
            return report_outcome(wait_for(c, task_id, sub, args.timeout, quiet=args.json), args.json)
    except StillRunning:
        show({"id": task_id, "state": "running"}, args.json)
        print(f"orchflow: task {task_id} still running after {args.timeout:g}s; "
              f"`orchflow result {task_id} --wait` waits again", file=sys.stderr)
        return exit_codes.STILL_RUNNING
    except KeyboardInterrupt:
        if task_id is None:
            raise
        if args.detach_on_interrupt:
            print(f"orchflow: interrupted; task {task_id} left running", file=sys.stderr)
        else:
            c.cancel(task_id)
            print(f"orchflow: interrupted; task {task_id} cancelled", file=sys.stderr)
        show({"id": task_id}, args.json)
        return exit_codes.INTERRUPTED


def warn_if_unserved(c: Client, kind: str, waiting: bool = False) -> None:
    if kind not in served_kinds(c.status()):
        print(f"orchflow: no agent serves kind {kind!r}" + ("; waiting (Ctrl-C cancels)" if waiting else
                                                          "; it stays queued until one does"),
              file=sys.stderr, flush=True)


def result_command(c: Client, args: argparse.Namespace) -> int:
    try:
        state = c.status([args.id])["tasks"].get(args.id)
        if state not in (None, *P.State.FINAL) and not args.wait:
            show({"id": args.id, "state": state}, args.json)
            return exit_codes.STILL_RUNNING
        outcome = c.outcome(args.id, timeout=args.timeout if args.wait else 10.0)
    except UnknownTask:
        raise CliError(f"no task {args.id!r} (unknown, or finished and compacted away)") from None
    except TimeoutError:
        show({"id": args.id, "state": "running"}, args.json)
        return exit_codes.STILL_RUNNING
    return report_outcome(outcome, args.json)


def cancel_command(c: Client, args: argparse.Namespace) -> int:
    """Cancel, then report how each id ended: a task that had finished keeps its state."""
    c.cancel(*args.ids)
    rows, code = [], exit_codes.DONE
    for task_id in args.ids:
        try:
            outcome = c.outcome(task_id, timeout=10.0)
            rows.append({"id": task_id, "state": outcome["state"]})
        except UnknownTask:
            rows.append({"id": task_id, "state": "unknown"})
            code = exit_codes.USAGE
        except TimeoutError:
            rows.append({"id": task_id, "state": "cancelling"})
    if args.json:
        show(rows, True)
    else:
        for row in rows:
            print(f"{row['id']}  {row['state']}")
    return code


def kinds_command(c: Client, args: argparse.Namespace, on_demand: list[str] = ()) -> int:
    """``on_demand``: kinds whose agents the launcher starts when the first task comes."""
    from agents.builtin import PAYLOAD_FIELDS as builtin
    from agents.memory_agent import PAYLOAD_FIELDS as memory
    from neural.kinds import PAYLOAD_FIELDS as neural
    fields = {**builtin, **memory, **neural}
    status = c.status()
    queues = status.get("queues") or {}
    kinds = served_kinds(status)
    rows = [{"kind": kind, "agents": sorted(a["name"] for a in agents),
             "capacity": sum(a["capacity"] for a in agents), "queued": queues.get(kind, 0),
             "payload": fields.get(kind, "")} for kind, agents in sorted(kinds.items())]
    rows += [{"kind": kind, "agents": [], "capacity": 0, "queued": queues.get(kind, 0), "on_demand": True,
              "payload": f"{fields.get(kind, '')} (its agent starts with the first task)".lstrip()}
             for kind in sorted(on_demand) if kind not in kinds]
    rows += [{"kind": kind, "agents": [], "capacity": 0, "queued": depth, "payload": "NOT SERVED: no agent"}
             for kind, depth in sorted(queues.items()) if kind not in kinds and kind not in on_demand and depth]
    if args.json:
        show(rows, True)
        return exit_codes.DONE
    width = max([len(r["kind"]) for r in rows] + [4])
    print(f"{'KIND':{width}}  {'AGENTS':>6}  {'CAP':>4}  {'QUEUED':>6}  PAYLOAD")
    for r in rows:
        print(f"{r['kind']:{width}}  {len(r['agents']):>6}  {r['capacity']:>4}  {r['queued']:>6}  {r['payload']}")
    return exit_codes.DONE


# ---------------------------------------------------------------------------- tasks, dead letters, schedules


def local_time(ts: float | None) -> str:
    return "-" if not ts else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def table(rows: list[list[str]], header: list[str]) -> None:
    """Aligned columns; the last one runs free."""
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header) - 1)]
    for row in [header] + rows:
        print("  ".join(f"{str(v):{w}}" for v, w in zip(row, widths)) + "  " + str(row[-1]))


def project_filter(args: argparse.Namespace) -> str | None:
    """--project narrows a listing only when it was given."""
    return args.project if getattr(args, "project_given", False) else None


def tasks_command(c: Client, args: argparse.Namespace) -> int:
    rows = c.tasks(state=args.state, kind=args.kind, project=project_filter(args), limit=args.limit)
    if args.json:
        show(rows, True)
    elif not rows:
        print("no tasks")
    else:
        table([[t["id"], t["kind"], t["project"], t["state"], t["attempts"], local_time(t["submitted"]),
                (t.get("error") or "")[:80]] for t in rows],
              ["ID", "KIND", "PROJECT", "STATE", "RUNS", "SUBMITTED", "ERROR"])
    return exit_codes.DONE


def purge_command(c: Client, args: argparse.Namespace) -> int:
    count = c.purge(args.kind, project=project_filter(args))
    show({"purged": count}, True) if args.json else print(f"cancelled {count} queued {args.kind} tasks")
    return exit_codes.DONE


def retry_command(c: Client, args: argparse.Namespace) -> int:
    reply = c.manage("requeue", ids=args.ids)
    if args.json:
        show(reply, True)
    else:
        for old, new in reply["requeued"].items():
            print(f"{old}  requeued as {new}")
        for task_id in reply["unknown"]:
            print(f"{task_id}  unknown (or compacted away)")
        for task_id in reply["refused"]:
            print(f"{task_id}  not requeued: it succeeded, or belongs to another project")
    return exit_codes.DONE if not (reply["unknown"] or reply["refused"]) else exit_codes.USAGE


def schedule_command(c: Client, args: argparse.Namespace) -> int:
    if args.op == "add":
        if len(args.args) != 3:
            raise CliError("schedule add: give NAME CRON KIND (quote the CRON: '*/5 * * * *')")
        name, cron, kind = args.args
        added = c.schedule(name, cron, kind, read_payload(args.payload),
                           retry=args.retries, project=args.project)
        show(added, True) if args.json else print(f"schedule {name}: {kind} at '{cron}', "
                                                  f"next run {local_time(added['next_at'])}")
    elif args.op == "remove":
        if len(args.args) != 1:
            raise CliError("schedule remove: give NAME")
        if not c.unschedule(args.args[0], project=args.project):
            raise CliError(f"no schedule {args.args[0]!r} in project {args.project!r}")
        print(f"removed schedule {args.args[0]}") if not args.json else show({"removed": True}, True)
    else:
        rows = c.schedules()
        if args.json:
            show(rows, True)
        elif not rows:
            print("no schedules")
        else:
            table([[s["name"], s["project"], s["cron"], s["kind"], s["fired"], local_time(s["next_at"])]
                   for s in rows], ["NAME", "PROJECT", "CRON", "KIND", "RUNS", "NEXT"])
    return exit_codes.DONE
