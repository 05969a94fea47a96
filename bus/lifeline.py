"""Die with the launcher: a child of ``orchflow-launch`` must not outlive it.

A launcher killed with SIGKILL cannot stop its children, and orphans adopted by
PID 1 keep the journal, the sockets and the memory busy: a second launch then runs
a second broker on the same journal.  So each child guards itself, two ways:

- ``PR_SET_PDEATHSIG``: the kernel sends SIGTERM the moment the parent dies, so
  the broker commits and agents stop taking work at once;
- a watchdog thread that sees the parent change (``getppid``) and ends the process
  after a grace period, in case SIGTERM handling is stuck, and which also covers
  a parent that died before the ``prctl`` call (the race prctl alone leaves).

The launcher passes its pid in ``ORCHFLOW_PARENT_PID``; processes started any other
way (tests, a person running ``python -m bus``) are left alone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

PARENT_ENV = "ORCHFLOW_PARENT_PID"
PR_SET_PDEATHSIG = 1
GRACE = 5.0
_hooks: list = []


def at_parent_death(fn) -> None:
    """Run ``fn()`` just before the watchdog ends the process (e.g. to kill the
    process groups of shell tasks, which live in sessions of their own)."""
    _hooks.append(fn)


def _prctl_pdeathsig(sig: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux: the watchdog alone does the job
        return False


def die_with_parent(grace: float = GRACE, poll: float = 0.5) -> bool:
    """Arm both guards if the launcher asked for them; True when armed."""
    raw = os.environ.get(PARENT_ENV)
    if not raw or not raw.isdigit():
        return False
    parent = int(raw)
    _prctl_pdeathsig(signal.SIGTERM)
    if os.getppid() != parent:  # it died before we got here
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # the normal, clean path first
        except OSError:
            pass
        time.sleep(grace)
        for fn in _hooks:
            try:
                fn()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        os._exit(1)

    threading.Thread(target=watch, name="orchflow-lifeline", daemon=True).start()
    return True
