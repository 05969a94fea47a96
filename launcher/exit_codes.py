"""What ``orchflow`` exits with: the contract scripts and CI branch on.

A waited-for task's state decides the code, so ``orchflow submit ... --wait && deploy``
deploys only after success.  ``orchflow --help`` prints :data:`HELP`.
"""

from __future__ import annotations

DONE = 0
FAILED = 1
USAGE = 2          # bad arguments, a payload that is not JSON, a request the broker refused
CANCELLED = 3
EXPIRED = 4        # its deadline passed before it ran
STILL_RUNNING = 5  # --timeout ran out; the task goes on, and its id is printed
UNAVAILABLE = 6    # no swarm, or no broker answered
INTERNAL = 70      # a bug in orchflow itself (the message says what)
INTERRUPTED = 130  # Ctrl-C

BY_STATE = {"done": DONE, "failed": FAILED, "cancelled": CANCELLED, "expired": EXPIRED}

HELP = """\
exit codes:
  0  done                      3  cancelled
  1  failed                    4  expired (deadline passed)
  2  usage or refused request  5  --timeout ran out, task still running (id printed)
  6  no swarm / broker         130  interrupted (Ctrl-C; the task is cancelled)
"""


def for_state(state: str) -> int:
    """The exit code of a task that ended in ``state`` (a live one: STILL_RUNNING)."""
    return BY_STATE.get(state, STILL_RUNNING)
