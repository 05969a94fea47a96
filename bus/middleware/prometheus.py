"""Prometheus metrics of the swarm, served by the broker (``orchflow-launch --metrics``).

Counters and histograms are updated from the lifecycle hooks, in the broker's thread
(prometheus_client's metrics are thread-safe).  Everything that is a *state* (queue
depths and ages, agents, live tasks, memory map, process RSS) is snapshotted once a
second by the loop and read by the scrape, so a scrape never walks the broker's
dictionaries while the loop changes them and costs the loop nothing.

Task kind and project are label values that clients choose: at most
``MAX_LABEL_SETS`` distinct pairs get series of their own, later ones count under
``kind="other"`` (a flood of made-up kinds must not grow the broker without bound).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector

from ..agent_record import AgentRecord
from ..lifecycle import LifecycleHost, Middleware
from ..task import Task

MAX_LABEL_SETS = 500
SNAPSHOT_INTERVAL = 1.0
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                   60.0, 300.0, 1800.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
#: Broker counters exported as they are (STATUS ``counters``), as orchflow_broker_<name>_total.
BROKER_COUNTERS = ("malformed_frontend", "malformed_backend", "late_results", "quarantined", "router_errors",
                   "oversize", "lease_expired", "forbidden", "unassigned_results", "internal_errors", "duplicates",
                   "agents_joined", "agents_lost", "agents_drained", "workflows", "retried")


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class Metrics(Middleware):
    """``run_dir``: where the launcher's state.json names the swarm's processes (their
    RSS is exported); ``memory_stats``: the swarm memory's ``stats()``."""

    def __init__(self, registry: CollectorRegistry | None = None, run_dir: str | None = None,
                 memory_stats: Callable[[], dict[str, Any]] | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.run_dir = run_dir
        self.memory_stats = memory_stats
        r = self.registry
        self.tasks_submitted = Counter("orchflow_tasks_submitted", "Tasks accepted (submissions, workflow steps, "
                                 "scheduled ticks).", ["kind", "project"], registry=r)
        self.tasks_finished = Counter("orchflow_tasks_finished", "Tasks that reached a final state.",
                                ["kind", "project", "state"], registry=r)
        self.task_retries = Counter("orchflow_task_retries", "Tasks queued again after a failure or a lost agent.",
                               ["kind", "project"], registry=r)
        self.round_trip = Histogram("orchflow_task_round_trip_seconds", "From acceptance to final state.",
                                    ["kind"], buckets=LATENCY_BUCKETS, registry=r)
        self.run_time = Histogram("orchflow_task_run_seconds", "From dispatch to the agent's answer.",
                                  ["kind"], buckets=LATENCY_BUCKETS, registry=r)
        self.commit_seconds = Histogram("orchflow_journal_commit_seconds", "One group commit of the task journal.",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.commit_records = Histogram("orchflow_journal_commit_records", "Records in one group commit.",
                                        buckets=BATCH_BUCKETS, registry=r)
        ProcessCollector(namespace="orchflow_broker", registry=r)
        r.register(self)  # the snapshot gauges: collect() below
        self._labels: set[tuple[str, str]] = set()
        self._running: dict[str, float] = {}
        self._snapshot: list[Any] = []
        self._next_snapshot = 0.0
        self.host: LifecycleHost | None = None

    # ------------------------------------------------------------------ hooks (broker thread)

    def attach(self, host: LifecycleHost) -> None:
        self.host = host

    def _kp(self, task: Task) -> tuple[str, str]:
        pair = (task.kind, task.project)
        if pair in self._labels:
            return pair
        if len(self._labels) < MAX_LABEL_SETS:
            self._labels.add(pair)
            return pair
        return ("other", "other")

    def submitted(self, task: Task) -> None:
        self.tasks_submitted.labels(*self._kp(task)).inc()

    def dispatched(self, task: Task, agent: AgentRecord) -> None:
        self._running[task.id] = time.monotonic()

    def answered(self, task: Task, agent: AgentRecord, ok: bool) -> None:
        started = self._running.pop(task.id, None)
        if started is not None:
            self.run_time.labels(self._kp(task)[0]).observe(time.monotonic() - started)

    def retried(self, task: Task, reason: str, delay: float) -> None:
        self.task_retries.labels(*self._kp(task)).inc()

    def finished(self, task: Task) -> None:
        self._running.pop(task.id, None)
        kind, project = self._kp(task)
        self.tasks_finished.labels(kind, project, task.state).inc()
        if task.finished and task.submitted:
            self.round_trip.labels(kind).observe(max(0.0, task.finished - task.submitted))

    def agent_gone(self, agent: AgentRecord, reason: str, clean: bool) -> None:
        for task_id in agent.inflight:
            self._running.pop(task_id, None)

    def committed(self, seconds: float, records: int) -> None:
        if records:
            self.commit_seconds.observe(seconds)
            self.commit_records.observe(records)

    def tick(self, now_m: float) -> None:
        if now_m >= self._next_snapshot and self.host is not None:
            self._next_snapshot = now_m + SNAPSHOT_INTERVAL
            self._snapshot = list(self._families(self.host))

    # ------------------------------------------------------------------ the snapshot (broker thread)

    def _families(self, host: LifecycleHost) -> Iterator[Any]:
        status = host.status()
        depth = GaugeMetricFamily("orchflow_queue_depth", "Tasks queued per kind.", labels=["kind"])
        unserved = GaugeMetricFamily("orchflow_queue_unserved", "Queued tasks of kinds no agent serves.",
                                     labels=["kind"])
        for kind, n in status["queues"].items():
            depth.add_metric([kind], n)
        for kind, n in status["unserved"].items():
            unserved.add_metric([kind], n)
        age = GaugeMetricFamily("orchflow_queue_oldest_age_seconds", "How long the oldest queued task of a kind "
                                "has waited.", labels=["kind"])
        for kind, seconds in status["ages"].items():
            age.add_metric([kind], seconds)
        agents = GaugeMetricFamily("orchflow_agents", "Registered agents by state (busy: no credit left; "
                                   "draining: capacity 0).", labels=["state"])
        states = {"idle": 0, "working": 0, "busy": 0, "draining": 0}
        inflight = GaugeMetricFamily("orchflow_agent_inflight", "Tasks an agent holds.", labels=["agent"])
        for a in status["agents"]:
            state = ("draining" if a["capacity"] == 0 else "idle" if a["inflight"] == 0
                     else "busy" if a["inflight"] >= a["capacity"] + a.get("prefetch", 0) else "working")
            states[state] += 1
            inflight.add_metric([a["name"]], a["inflight"])
        for state, n in states.items():
            agents.add_metric([state], n)
        live = GaugeMetricFamily("orchflow_tasks_live", "Tasks not yet final (queued, delayed, running).")
        live.add_metric([], status["live"])
        delayed = GaugeMetricFamily("orchflow_tasks_delayed", "Tasks waiting for a delay, eta or retry backoff.")
        delayed.add_metric([], status["delayed"])
        dropped = CounterMetricFamily("orchflow_events_dropped", "Events dropped for slow subscribers.")
        dropped.add_metric([], status["events_dropped"])
        yield from (depth, unserved, age, agents, inflight, live, delayed, dropped)
        for name in BROKER_COUNTERS:
            family = CounterMetricFamily(f"orchflow_broker_{name}", f"Broker counter {name} (see STATUS).")
            family.add_metric([], status["counters"].get(name, 0))
            yield family
        if self.memory_stats is not None:
            try:
                mem = self.memory_stats()
            except Exception:  # noqa: BLE001 - a metric must never take the loop down
                mem = None
            if mem:
                for key, help_ in (("file_size", "Size of the swarm memory's data.mdb."),
                                   ("map_size", "The swarm memory's current LMDB map size.")):
                    family = GaugeMetricFamily(f"orchflow_memory_{key}_bytes", help_)
                    family.add_metric([], mem[key])
                    yield family
                entries = GaugeMetricFamily("orchflow_memory_entries", "Entries in the swarm memory.")
                entries.add_metric([], mem["entries"])
                yield entries
        rss = GaugeMetricFamily("orchflow_process_resident_memory_bytes", "RSS of each swarm process.",
                                labels=["process"])
        for name, pid in self._pids().items():
            value = rss_bytes(pid)
            if value is not None:
                rss.add_metric([name], value)
        yield rss

    def _pids(self) -> dict[str, int]:
        pids = {"broker": os.getpid()}
        if self.run_dir:
            try:
                with open(os.path.join(self.run_dir, "state.json")) as f:
                    state = json.load(f)
                pids.update({k: v for k, v in (state.get("pids") or {}).items() if isinstance(v, int)})
                if isinstance(state.get("launcher_pid"), int):
                    pids["launcher"] = state["launcher_pid"]
            except (OSError, ValueError, AttributeError):
                pass
        return pids

    # ------------------------------------------------------------------ the scrape (HTTP thread)

    def collect(self) -> Iterator[Any]:
        return iter(self._snapshot)

    def describe(self) -> list[Any]:
        return []  # dynamic: the registry must not collect() at registration


def serve_metrics(metrics: Metrics, address: str) -> Any:
    """Serve ``metrics`` over HTTP at HOST:PORT (loopback unless told otherwise); the
    server runs in a daemon thread of the broker's process."""
    from prometheus_client import start_http_server
    host, _, port = address.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=metrics.registry)
    return server
