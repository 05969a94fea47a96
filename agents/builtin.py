"""Built-in task kinds: system diagnostics and the shell runner.

``sys.*`` kinds exist for health checks and benchmarks of the bus itself; ``shell``
is what the IDE uses to fan commands out across agents.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections import deque
from typing import Any

from bus.lifeline import at_parent_death

from .runtime import Agent, TaskContext

TAIL_LINES = 50


def noop(payload: Any) -> None:
    return None


def echo(payload: Any) -> Any:
    return payload


def sleep(payload: Any, ctx: TaskContext) -> float:
    """Sleep ``payload`` seconds (or ``payload['seconds']``), waking early on cancel."""
    seconds = float(payload["seconds"] if isinstance(payload, dict) else payload)
    ctx.cancelled.wait(seconds)
    ctx.check_cancelled()
    return seconds


def spin(payload: Any) -> int:
    """Burn CPU for ``payload`` iterations: a CPU-bound reference task."""
    n = int(payload)
    acc = 0
    for i in range(n):
        acc = (acc * 31 + i) & 0xFFFFFFFF
    return acc


def fail(payload: Any) -> None:
    raise RuntimeError(str(payload or "failing on purpose"))


#: Process groups of running shell tasks: they live in sessions of their own, so an
#: agent that must die with its launcher kills them on the way out.
_running_groups: set[int] = set()


def _kill_running_groups() -> None:
    for pgid in list(_running_groups):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


at_parent_death(_kill_running_groups)


def shell(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    """Run a command; stream its lines as progress; cancel kills its process group.

    payload: ``{"cmd": str | [str], "cwd": str?, "env": {str: str}?, "timeout": float?}``.
    A string runs through ``/bin/sh -c``; a list runs directly.
    """
    if isinstance(payload, str):
        payload = {"cmd": payload}
    if not isinstance(payload, dict) or not isinstance(payload.get("cmd"), (str, list)):
        raise ValueError("shell payload needs 'cmd' (string or list of strings)")
    cmd = payload["cmd"]
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in (payload.get("env") or {}).items()})
    timeout = payload.get("timeout")
    proc = subprocess.Popen(cmd, shell=isinstance(cmd, str), cwd=payload.get("cwd"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    _running_groups.add(proc.pid)
    tails = {"stdout": deque(maxlen=TAIL_LINES), "stderr": deque(maxlen=TAIL_LINES)}
    partial = {"stdout": b"", "stderr": b""}
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    started = time.monotonic()
    reason = None
    try:
        while sel.get_map():
            if ctx.cancelled.is_set():
                reason = "cancelled"
                break
            if timeout is not None and time.monotonic() - started > float(timeout):
                reason = f"timed out after {timeout}s"
                break
            for key, _ in sel.select(0.1):
                chunk = os.read(key.fileobj.fileno(), 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                lines = (partial[key.data] + chunk).split(b"\n")
                partial[key.data] = lines.pop()
                for raw in lines:
                    line = raw.decode(errors="replace")
                    tails[key.data].append(line)
                    ctx.progress({"stream": key.data, "line": line})
    finally:
        sel.close()
        if reason is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        code = proc.wait()
        _running_groups.discard(proc.pid)
        proc.stdout.close()
        proc.stderr.close()
    for stream, rest in partial.items():
        if rest:
            tails[stream].append(rest.decode(errors="replace"))
    if reason == "cancelled":
        ctx.check_cancelled()
    result = {"exit_code": code, "stdout": "\n".join(tails["stdout"]), "stderr": "\n".join(tails["stderr"]),
              "seconds": round(time.monotonic() - started, 3)}
    if reason is not None:
        result["error"] = reason
    return result


BUILTINS: dict[str, tuple[Any, bool]] = {
    "sys.noop": (noop, True),
    "sys.echo": (echo, True),
    "sys.sleep": (sleep, False),
    "sys.spin": (spin, False),
    "sys.fail": (fail, True),
    "shell": (shell, False),
}


def add_builtins(agent: Agent, kinds: list[str]) -> None:
    for kind in kinds:
        fn, inline = BUILTINS[kind]
        agent.add_handler(kind, fn, inline=inline)
