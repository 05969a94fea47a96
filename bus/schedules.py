"""Durable periodic schedules: a cron expression that submits a task at each tick.

A schedule lives in the journal's meta records (``schedule\\0<project>\\0<name>``),
with the time of its next tick.  Firing a tick stages the task it makes *and* the
schedule's next tick in the same journal transaction, and the task's id is the
schedule's name and the tick's time (``<name>@<unix seconds>``): after a kill -9 at
any moment, a restarted broker finds either both or neither, so no tick is lost or
run twice.  Ticks missed while the broker was down are fired on restart, at most
:data:`MAX_CATCH_UP` of them (the latest ones), each under its own id.

Cron expressions are parsed by croniter (the parser RQ-scheduler and many others
use); they are evaluated in the broker's local time zone, as cron does.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable, Protocol

from .errors import ProtocolError
from .protocol import MAX_KIND_BYTES, TaskSpec, checked_text
from . import retry as retry_policy

META_PREFIX = "schedule\0"
MAX_NAME_BYTES = 128
MAX_CATCH_UP = 100
MAX_SCHEDULES = 10_000


@dataclass
class Schedule:
    name: str
    project: str
    cron: str
    kind: str
    payload: Any = None
    priority: int = 5
    retry: dict[str, Any] | None = None
    owner: str | None = None
    next_at: float = 0.0          # unix time of the next tick
    created: float = field(default_factory=time.time)
    fired: int = 0                # ticks fired so far
    last_task: str | None = None

    @property
    def key(self) -> str:
        return f"{META_PREFIX}{self.project}\0{self.name}"

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("owner")
        return out


def next_tick(cron: str, after: float) -> float:
    """The first tick of ``cron`` strictly after ``after`` (unix seconds, local time)."""
    from croniter import croniter  # imported when schedules are used, not by every broker
    return float(croniter(cron, datetime.fromtimestamp(after).astimezone()).get_next(float))


def due_ticks(cron: str, first: float, now: float) -> list[float]:
    """The ticks from ``first`` to ``now``, oldest first: the latest MAX_CATCH_UP of them
    when the broker was down longer than that (older ones are skipped, not queued up)."""
    from croniter import croniter
    it = croniter(cron, datetime.fromtimestamp(now).astimezone())
    if croniter.match(cron, datetime.fromtimestamp(now).astimezone()) and now.is_integer():
        back = [now]  # a tick exactly now (get_prev would skip it)
    else:
        back = []
    while len(back) < MAX_CATCH_UP:
        tick = float(it.get_prev(float))
        if tick < first - 1e-6:
            break
        back.append(tick)
    return sorted(t for t in back if t >= first - 1e-6)


def check_cron(cron: Any) -> str:
    from croniter import croniter
    if not isinstance(cron, str) or len(cron) > 200 or not croniter.is_valid(cron):
        raise ProtocolError("bad-field", "field 'cron' must be a cron expression, e.g. '*/5 * * * *' "
                                         "(minute hour day month weekday; an optional sixth field is seconds)")
    return cron


class ScheduleHost(Protocol):
    """What the scheduler needs of the broker, and nothing more."""

    def submit_scheduled(self, spec: TaskSpec, task_id: str, owner: str | None) -> bool:
        """Accept the task of a tick (False if that id is already known)."""

    def publish_event(self, topic: str, body: dict[str, Any]) -> None: ...


class Scheduler:
    def __init__(self, journal: Any, host: ScheduleHost, clock: Callable[[], float] = time.time) -> None:
        self.journal = journal
        self.host = host
        self.clock = clock
        self.schedules: dict[str, Schedule] = {}
        self._next_due: float | None = None  # next_due()'s cache; None: compute again
        for key, value in journal.read_meta(META_PREFIX).items():
            try:
                sched = Schedule(**value)
            except TypeError:
                continue  # a record this version cannot read stays in the journal, untouched
            self.schedules[key] = sched

    # ------------------------------------------------------------------ management

    def add(self, body: dict[str, Any], project: str, owner: str | None) -> Schedule:
        name = checked_text(body.get("name"), "name", MAX_NAME_BYTES)
        if "\0" in name or "@" in name or "/" in name:
            raise ProtocolError("bad-field", "field 'name' may not hold NUL, '@' or '/'")
        cron = check_cron(body.get("cron"))
        kind = checked_text(body.get("kind"), "kind", MAX_KIND_BYTES)
        priority = body.get("priority", 5)
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
            raise ProtocolError("bad-field", "field 'priority' must be in 0..9")
        policy = retry_policy.parse(body.get("retry"))
        key = f"{META_PREFIX}{project}\0{name}"
        if key not in self.schedules and len(self.schedules) >= MAX_SCHEDULES:
            raise ProtocolError("bad-field", f"at most {MAX_SCHEDULES} schedules")
        sched = Schedule(name, project, cron, kind, body.get("payload"), priority, policy.to_field(), owner,
                         next_at=next_tick(cron, self.clock()))
        self.schedules[key] = sched
        self._next_due = None
        self.journal.write_meta(key, asdict(sched))
        self.host.publish_event("schedule.added", {"name": name, "project": project, "cron": cron,
                                                   "next_at": sched.next_at})
        return sched

    def remove(self, name: str, project: str) -> bool:
        sched = self.schedules.pop(f"{META_PREFIX}{project}\0{name}", None)
        if sched is None:
            return False
        self._next_due = None
        self.journal.write_meta(sched.key, None)
        self.host.publish_event("schedule.removed", {"name": name, "project": project})
        return True

    def visible(self, may_see: Callable[[str], bool]) -> Iterable[Schedule]:
        return (s for s in self.schedules.values() if may_see(s.project))

    # ------------------------------------------------------------------ ticking

    def next_due(self) -> float:
        """The earliest tick of any schedule (inf without schedules).  Cached: the broker
        asks on every loop turn, and it changes only when schedules are added, removed
        or fired."""
        if self._next_due is None:
            self._next_due = min((s.next_at for s in self.schedules.values()), default=math.inf)
        return self._next_due

    def fire_due(self) -> int:
        """Submit the task of every tick that has come; returns how many fired."""
        now = self.clock()
        fired = 0
        for sched in list(self.schedules.values()):
            if sched.next_at > now:
                continue
            policy = retry_policy.from_field(sched.retry, retry_policy.DEFAULT_MAX)
            for tick in due_ticks(sched.cron, sched.next_at, now):
                task_id = f"{sched.name}@{tick:.0f}"
                spec = TaskSpec(task_id, sched.kind, sched.payload, sched.project, sched.priority, None,
                                policy.max, True, policy)
                if self.host.submit_scheduled(spec, task_id, sched.owner):
                    sched.fired += 1
                    sched.last_task = task_id
                    fired += 1
                    self.host.publish_event("schedule.fired", {"name": sched.name, "project": sched.project,
                                                               "task": task_id, "tick": tick})
            sched.next_at = next_tick(sched.cron, now)
            self._next_due = None
            self.journal.write_meta(sched.key, asdict(sched))  # same commit as the tasks above
        return fired
