"""Broker features that plug into the task lifecycle (bus/lifecycle.py), one per file:

- ``events.py``: task.* events on the event bus;
- ``retries.py``: the retry policy and its backoff (bus/retry.py holds the policy's fields);
- ``latency.py``: recent round-trip latency in STATUS;
- ``outcomes.py``: outcome records and periodic retraining for learned routing;
- ``prometheus.py``: Prometheus metrics (``orchflow-launch --metrics``).
"""

from __future__ import annotations

from ..lifecycle import Middleware
from .events import TaskEvents
from .latency import RecentLatency
from .retries import Retries


def standard() -> list[Middleware]:
    """What every broker runs: events, the retry policy, recent latency for STATUS."""
    return [TaskEvents(), Retries(), RecentLatency()]
