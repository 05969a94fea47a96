"""The broker's durability seam.

The broker calls a :class:`Journal` for every accepted task and every final state,
then :meth:`Journal.commit` once per loop iteration *before* it acknowledges or
reports anything: that is group commit, one transaction per batch of messages.
``store.journal.TaskJournal`` is the LMDB implementation; :class:`MemoryJournal`
keeps the same contract in memory for tests and for a broker started without a store.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, Iterable

from .protocol import State
from .task import Task


class Journal(ABC):
    @abstractmethod
    def write(self, task: Task) -> None:
        """Stage the task's current state (a snapshot: later changes need another write)."""

    @abstractmethod
    def commit(self) -> None:
        """Make every staged record durable; called before acks are sent."""

    @abstractmethod
    def replay(self) -> Iterable[dict[str, Any]]:
        """Every record, for rebuilding broker state after a restart."""

    @abstractmethod
    def lookup(self, task_id: str) -> dict[str, Any] | None:
        """The latest committed record of a task, or ``None``."""

    def lookup_many(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The latest committed records of those of ``ids`` the journal holds (one read
        for a whole SUBMIT, where a store can do that)."""
        found = {}
        for task_id in ids:
            rec = self.lookup(task_id)
            if rec is not None:
                found[task_id] = rec
        return found

    @abstractmethod
    def compact(self, finished_before: float) -> int:
        """Drop final records finished before the cutoff; returns how many."""

    @abstractmethod
    def write_meta(self, key: str, value: Any) -> None:
        """Stage a small broker record beside the tasks (a schedule); ``None`` deletes it.
        It commits in the same transaction as the tasks staged with it: a schedule's
        tick and the task it made become durable together, or not at all."""

    @abstractmethod
    def read_meta(self, prefix: str) -> dict[str, Any]:
        """Every committed meta record whose key starts with ``prefix``."""

    def staged(self) -> int:
        """Records staged for the next commit (the commit's batch size, for metrics)."""
        return 0

    def quarantine(self, task_id: str, reason: str) -> None:
        """Set a record replay could not restore aside, with why, out of later replays."""

    def quarantined(self) -> dict[str, str]:
        """Quarantined task ids and the reason each was set aside."""
        return {}

    def close(self) -> None:
        pass


class MemoryJournal(Journal):
    """Same contract, no durability: what a broker uses when no store is configured."""

    def __init__(self) -> None:
        self._records: dict[str, dict[str, Any]] = {}
        self._staged: list[dict[str, Any]] = []
        self._quarantine: dict[str, str] = {}
        self._meta: dict[str, Any] = {}
        self._staged_meta: dict[str, Any] = {}

    def write(self, task: Task) -> None:
        self._staged.append(task.to_record())

    def commit(self) -> None:
        for rec in self._staged:
            self._records[rec["id"]] = rec
        self._staged.clear()
        for key, value in self._staged_meta.items():
            if value is None:
                self._meta.pop(key, None)
            else:
                self._meta[key] = value
        self._staged_meta.clear()

    def write_meta(self, key: str, value: Any) -> None:
        self._staged_meta[key] = value

    def staged(self) -> int:
        return len(self._staged) + len(self._staged_meta)

    def read_meta(self, prefix: str) -> dict[str, Any]:
        return {k: v for k, v in self._meta.items() if k.startswith(prefix)}

    def replay(self) -> Iterable[dict[str, Any]]:
        return list(self._records.values())

    def lookup(self, task_id: str) -> dict[str, Any] | None:
        return self._records.get(task_id)

    def quarantine(self, task_id: str, reason: str) -> None:
        if self._records.pop(task_id, None) is not None or task_id not in self._quarantine:
            self._quarantine[task_id] = reason

    def quarantined(self) -> dict[str, str]:
        return dict(self._quarantine)

    def compact(self, finished_before: float) -> int:
        old = [k for k, r in self._records.items()
               if r.get("state") in State.FINAL and (r.get("finished") or time.time()) < finished_before]
        for k in old:
            del self._records[k]
        return len(old)
