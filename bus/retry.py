"""Retry policy: whether a failed or lost task runs again, and after how long.

One policy per task, under one name in SUBMIT entries and workflow steps alike::

    "retry": {"max": 3, "on": "lost" | "error" | "both", "backoff": 1.0, "backoff_max": 300.0}

or just ``"retry": 3`` (the other fields at their defaults).  ``max`` counts runs after
the first.  ``on`` says which failures are retried: ``lost`` (the agent vanished or
dropped the task), ``error`` (the handler failed), or ``both`` (the default once a
task asks for ``retry``).  A task that asks for nothing gets ``{"max": 3, "on": "lost"}``:
a failed command is not run again unless its submitter says it may be.  A handler that
raises ``agents.Retry`` asks for a retry whatever ``on`` says, within ``max``.

A retry after an error waits: attempt ``n`` failed -> wait a time drawn uniformly from
``[d/2, d]`` with ``d = min(backoff_max, backoff * 2**(n-1))`` ("equal jitter"), so the
retries of many tasks failed by one cause spread out instead of stampeding the cause
again.  A task lost with its agent runs again at once: the agent failed, not the task.

The legacy field ``max_retries`` (an int) is the same as ``{"max": N, "on": "lost"}``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from .errors import ProtocolError

DEFAULT_MAX = 3
ON = ("lost", "error", "both")
MAX_RETRIES = 100
MAX_BACKOFF = 86_400.0
#: How many retries a task's outcome lists (the latest ones).
HISTORY = 20


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max: int = DEFAULT_MAX
    on: str = "lost"
    backoff: float = 1.0
    backoff_max: float = 300.0

    def retries(self, cause: str) -> bool:
        """Whether a failure of ``cause`` (``lost`` or ``error``) is retried at all."""
        return self.on == "both" or self.on == cause

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the run after failed ``attempt`` (1-based)."""
        ceiling = min(self.backoff_max, self.backoff * 2.0 ** min(attempt - 1, 60))
        return ceiling / 2 + (rng or random).random() * ceiling / 2

    def to_field(self) -> dict[str, Any] | None:
        """The journaled form; None for the default, which keeps rows small."""
        if self == DEFAULT:
            return None
        return {"max": self.max, "on": self.on, "backoff": self.backoff, "backoff_max": self.backoff_max}


DEFAULT = RetryPolicy()


def _number(value: Any, field: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise ProtocolError("bad-field", f"field 'retry.{field}' must be a number in {low:g}..{high:g}")
    return float(value)


def parse(value: Any, legacy_max: Any = None) -> RetryPolicy:
    """The policy of a SUBMIT entry or workflow step (``retry``, or legacy ``max_retries``)."""
    if value is not None and legacy_max is not None:
        raise ProtocolError("bad-field", "give 'retry' or 'max_retries', not both")
    if value is None:
        if legacy_max is None:
            return DEFAULT
        value = legacy_max
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RETRIES:
            raise ProtocolError("bad-field", f"field 'max_retries' must be in 0..{MAX_RETRIES}")
        return RetryPolicy(max=value)
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"max": value}
    if not isinstance(value, dict):
        raise ProtocolError("bad-field", "field 'retry' must be an int (max retries) or a map")
    unknown = set(value) - {"max", "on", "backoff", "backoff_max"}
    if unknown:
        raise ProtocolError("bad-field", f"field 'retry' has unknown keys {sorted(map(str, unknown))[:5]}")
    max_ = value.get("max", DEFAULT_MAX)
    if isinstance(max_, bool) or not isinstance(max_, int) or not 0 <= max_ <= MAX_RETRIES:
        raise ProtocolError("bad-field", f"field 'retry.max' must be an int in 0..{MAX_RETRIES}")
    on = value.get("on", "both")
    if on not in ON:
        raise ProtocolError("bad-field", f"field 'retry.on' must be one of {list(ON)}")
    backoff = _number(value.get("backoff", DEFAULT.backoff), "backoff", 0.0, MAX_BACKOFF)
    backoff_max = _number(value.get("backoff_max", max(DEFAULT.backoff_max, backoff)), "backoff_max", 0.0,
                          MAX_BACKOFF)
    return RetryPolicy(max_, on, backoff, backoff_max)


def from_field(value: Any, max_retries: int) -> RetryPolicy:
    """The policy of a journaled task: its ``retry`` field, or the legacy max alone."""
    if isinstance(value, dict):
        try:
            return parse(value)
        except ProtocolError:
            pass
    return RetryPolicy(max=max_retries) if max_retries != DEFAULT_MAX else DEFAULT
