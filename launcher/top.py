"""``orchflow top``: a live view of the swarm in the terminal, on Textual.

What it reads, and how often, is chosen so the broker barely notices it: one STATUS
per refresh (agents, queues with their oldest task's age, workflows, counters, recent
latency), the live-task list (MANAGE tasks, newest 30) every other refresh, and the
task.failed / task.progress events from the event bus, which cost the broker nothing
it would not spend anyway.  ``bench/swarm.py`` measures the broker's CPU with and
without it.

Keys: ``f`` filter by kind or project (Enter applies, Esc clears), arrows choose a
live task, Enter shows its outcome and progress tail, ``c`` cancels it, ``q`` quits.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import deque
from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Input, Sparkline, Static

from bus.client import Client, Subscription
from bus.errors import BusError

from . import exit_codes

HISTORY = 120  # samples kept for the sparklines


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def matches(text: str, *fields: Any) -> bool:
    return not text or any(text in str(f) for f in fields)


class EventFeed:
    """Failures and progress lines from the event bus, read in a thread of its own
    (its own SUB socket: ZeroMQ sockets stay in the thread that made them)."""

    def __init__(self, client: Client) -> None:
        self.failures: deque[dict[str, Any]] = deque(maxlen=50)
        self.progress: dict[str, deque[str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._client = client
        self._thread = threading.Thread(target=self._run, name="top-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            sub: Subscription = self._client.subscribe("task.failed", "task.progress", "task.expired")
        except BusError:
            return
        with sub:
            while not self._stop.is_set():
                event = sub.recv(timeout=0.2)
                if event is None or not isinstance(event[1], dict):
                    continue
                topic, body = event
                with self._lock:
                    if topic == "task.progress":
                        lines = self.progress.setdefault(str(body.get("id")), deque(maxlen=20))
                        lines.append(str(body.get("data"))[:200])
                        if len(self.progress) > 1000:
                            self.progress.pop(next(iter(self.progress)))
                    else:
                        self.failures.appendleft(body)

    def snapshot(self) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
        with self._lock:
            return list(self.failures), {k: list(v) for k, v in self.progress.items()}

    def stop(self) -> None:
        self._stop.set()


class SwarmTop(App):
    CSS = """
    #summary { height: 2; padding: 0 1; }
    .row { height: 1fr; }
    .pane { border: round $primary-darken-2; }
    .row DataTable { height: 1fr; }
    #agents { width: 3fr; } #queues { width: 2fr; }
    #tasks { width: 3fr; } #failures { width: 2fr; }
    #sparks { height: 4; }
    #sparks Vertical { border: round $primary-darken-2; }
    #bottom { height: 10; }
    #workflows, #detail { width: 1fr; border: round $primary-darken-2; padding: 0 1; }
    #filter { dock: bottom; height: 1; border: none; padding: 0 1; }
    """
    BINDINGS = [("q", "quit", "quit"), ("f", "filter", "filter"), ("escape", "clear_filter", "clear filter"),
                ("c", "cancel_task", "cancel task"), ("enter", "show_task", "show task")]

    def __init__(self, client: Client, interval: float, where: str) -> None:
        super().__init__()
        self.client = client
        self.interval = max(0.1, interval)  # at most 10 redraws a second
        self.where = where
        self.filter = ""
        self.feed = EventFeed(client)
        self.throughput: deque[float] = deque([0.0] * HISTORY, maxlen=HISTORY)
        self.latency: deque[float] = deque([0.0] * HISTORY, maxlen=HISTORY)
        self._last: tuple[float, int, dict[str, tuple[int, int]]] | None = None
        self._rates: dict[str, tuple[float, float]] = {}
        self._tasks: list[dict[str, Any]] = []
        self._turn = 0
        self.selected: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("connecting ...", id="summary")
        with Horizontal(classes="row"):
            yield DataTable(id="agents", classes="pane", cursor_type="none")
            yield DataTable(id="queues", classes="pane", cursor_type="none")
        with Horizontal(id="sparks"):
            with Vertical():
                yield Static("throughput (tasks/s)", id="tput-label")
                yield Sparkline([], id="tput")
            with Vertical():
                yield Static("latency p50 (ms)", id="lat-label")
                yield Sparkline([], id="lat")
        with Horizontal(classes="row"):
            yield DataTable(id="tasks", classes="pane", cursor_type="row")
            yield DataTable(id="failures", classes="pane", cursor_type="none")
        with Horizontal(id="bottom"):
            yield Static("no workflows running", id="workflows")
            yield Static("select a live task and press Enter", id="detail")
        # Always shown (a hidden one cannot take focus at once, and keys typed right after
        # `f` would go elsewhere): `f` focuses it.
        yield Input(placeholder="f: filter by kind or project (Enter applies, Esc clears)", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "orchflow top"
        self.query_one("#agents", DataTable).add_columns("AGENT", "KINDS", "CAP", "INFLIGHT", "DONE/s",
                                                         "FAILED/s", "SEEN")
        self.query_one("#queues", DataTable).add_columns("QUEUE", "DEPTH", "OLDEST", "")
        self.query_one("#tasks", DataTable).add_columns("LIVE TASK", "KIND", "PROJECT", "STATE", "RUNS")
        self.query_one("#failures", DataTable).add_columns("FAILED", "KIND", "ERROR")
        for table in self.query(DataTable):
            table.border_title = {"agents": "agents", "queues": "queues", "tasks": "live tasks",
                                  "failures": "recent failures"}[table.id]
        self.query_one("#tasks", DataTable).focus()
        self.refresh_view()
        self.set_interval(self.interval, self.refresh_view)

    # ------------------------------------------------------------------ data

    def refresh_view(self) -> None:
        self._turn += 1
        try:
            status = self.client.status(timeout=1.0)
            if self._turn % 2 == 1:
                self._tasks = self.client.tasks(state="live", limit=30)
        except BusError as exc:
            self.query_one("#summary", Static).update(Text(f"orchflow top - {self.where}: {exc}", style="bold red"))
            return
        now = time.monotonic()
        c = status["counters"]
        finished = c["done"] + c["failed"]
        per_agent = {a["name"]: (a["completed"] - a.get("failed", 0), a.get("failed", 0)) for a in status["agents"]}
        if self._last is not None:
            dt = max(now - self._last[0], 1e-3)
            self.throughput.append((finished - self._last[1]) / dt)
            for name, (done, failed) in per_agent.items():
                before = self._last[2].get(name, (done, failed))
                self._rates[name] = ((done - before[0]) / dt, (failed - before[1]) / dt)
        self._last = (now, finished, per_agent)
        latency = status.get("latency") or {}
        self.latency.append(latency.get("p50", 0.0) * 1000)
        self._draw(status, latency)

    def _draw(self, status: dict[str, Any], latency: dict[str, Any]) -> None:
        c, f = status["counters"], self.filter
        summary = (f"orchflow top - {self.where}  up {ago(status['uptime'])}  live {status['live']}  "
                   f"delayed {status.get('delayed', 0)}  submitted {c['submitted']}  done {c['done']}  "
                   f"failed {c['failed']}  cancelled {c['cancelled']}\n"
                   f"now {self.throughput[-1]:.0f} tasks/s  p50 {latency.get('p50', 0) * 1000:.1f} ms  "
                   f"p99 {latency.get('p99', 0) * 1000:.1f} ms" + (f"   filter: {f!r}" if f else ""))
        self.query_one("#summary", Static).update(summary)
        agents = self.query_one("#agents", DataTable)
        agents.clear()
        for a in sorted(status["agents"], key=lambda a: a["name"]):
            if not matches(f, *a["kinds"], a["name"]):
                continue
            done_rate, failed_rate = self._rates.get(a["name"], (0.0, 0.0))
            kinds = ", ".join(a["kinds"])
            agents.add_row(a["name"], kinds[:40] + ("..." if len(kinds) > 40 else ""), a["capacity"],
                           a["inflight"], f"{done_rate:.0f}", f"{failed_rate:.0f}", ago(a.get("last_seen")))
        queues = self.query_one("#queues", DataTable)
        queues.clear()
        ages, unserved = status.get("ages") or {}, status.get("unserved") or {}
        for kind, depth in sorted(status["queues"].items()):
            if matches(f, kind):
                queues.add_row(kind, depth, ago(ages.get(kind)),
                               Text("unserved", style="bold red") if kind in unserved else "")
        self.query_one("#tput", Sparkline).data = list(self.throughput)
        self.query_one("#lat", Sparkline).data = list(self.latency)
        self._draw_tasks()
        failures, _ = self.feed.snapshot()
        table = self.query_one("#failures", DataTable)
        table.clear()
        for body in failures[:30]:
            if matches(f, body.get("kind"), body.get("project")):
                table.add_row(str(body.get("id")), str(body.get("kind")), str(body.get("error") or "")[:60])
        lines = []
        for wid, wf in (status.get("workflows") or {}).items():
            if matches(f, wid):
                steps = ", ".join(f"{name}:{state}" for name, state in (wf.get("steps") or {}).items())
                lines.append(f"{wid} [{wf.get('strategy')}] {wf.get('state', '')} {steps}"[:200])
        self.query_one("#workflows", Static).update("\n".join(lines) or "no workflows running")

    def _draw_tasks(self) -> None:
        table = self.query_one("#tasks", DataTable)
        keep = self.selected
        table.clear()
        rows = [t for t in self._tasks if matches(self.filter, t["kind"], t["project"])]
        for t in rows:
            table.add_row(t["id"], t["kind"], t["project"], t["state"], t["attempts"], key=t["id"])
        ids = [t["id"] for t in rows]
        if keep in ids:
            table.move_cursor(row=ids.index(keep))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "tasks" and event.row_key is not None:
            self.selected = event.row_key.value

    # ------------------------------------------------------------------ keys

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.filter = event.value.strip()
        self.query_one("#tasks", DataTable).focus()
        self.refresh_view()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value, self.filter = "", ""
        self.query_one("#tasks", DataTable).focus()
        self.refresh_view()

    def action_show_task(self) -> None:
        if self.selected:
            self.show_task(self.selected)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "tasks" and event.row_key is not None:
            self.show_task(event.row_key.value)

    def show_task(self, task_id: str) -> None:
        try:
            state = self.client.status([task_id], timeout=1.0).get("tasks", {}).get(task_id)
            outcome = self.client.outcome(task_id, timeout=0.3) if state in ("done", "failed", "cancelled",
                                                                              "expired") else None
        except (BusError, TimeoutError) as exc:
            state, outcome = f"unknown ({exc})", None
        _, progress = self.feed.snapshot()
        text = [f"{task_id}: {state}"]
        if outcome is not None:
            text.append(f"result: {str(outcome.get('result'))[:300]}")
            if outcome.get("error"):
                text.append(f"error: {outcome['error'][:300]}")
        text += progress.get(task_id, [])[-6:]
        self.query_one("#detail", Static).update("\n".join(text))

    def action_cancel_task(self) -> None:
        if not self.selected:
            self.notify("no task selected")
            return
        try:
            self.client.cancel(self.selected)
            self.notify(f"cancel sent for {self.selected}")
            self.show_task(self.selected)  # the broker handles our CANCEL before this STATUS
        except BusError as exc:
            self.notify(f"cancel failed: {exc}", severity="error")

    def on_unmount(self) -> None:
        self.feed.stop()


def run_top(client: Client, args: argparse.Namespace, where: str) -> int:
    SwarmTop(client, args.interval, where).run()
    return exit_codes.DONE
