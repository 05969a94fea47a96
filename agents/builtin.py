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

from .errors import TaskError
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


#: A shell task with no ``timeout`` gets this one: a hung command must not hold an
#: agent's credit for ever.  ``"timeout": null`` asks for no limit.
DEFAULT_SHELL_TIMEOUT = 3600.0


def _shell_options(payload: Any) -> tuple[str | list[str], str | None, dict[str, str], float | None, bool]:
    """The payload's fields, checked before anything runs: a wrong type is a clear
    error naming the field, not a traceback from subprocess."""
    if isinstance(payload, str):
        payload = {"cmd": payload}
    if not isinstance(payload, dict):
        raise TaskError("shell payload must be a map with 'cmd' (or the command as a string)")
    cmd = payload.get("cmd")
    if not (isinstance(cmd, str) and cmd) and not (isinstance(cmd, list) and cmd
                                                    and all(isinstance(a, str) for a in cmd)):
        raise TaskError("shell payload needs 'cmd': a non-empty string, or a list of strings")
    cwd = payload.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise TaskError("shell 'cwd' must be a string")
    env = payload.get("env") or {}
    if not isinstance(env, dict) or not all(
            isinstance(k, str) and k and "=" not in k and "\0" not in k and "\0" not in str(v) for k, v in env.items()):
        raise TaskError("shell 'env' must be a map of names (no '=' or NUL) to strings")
    timeout = payload.get("timeout", DEFAULT_SHELL_TIMEOUT)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not 0 < timeout < float("inf")):
        raise TaskError("shell 'timeout' must be a positive number of seconds, or null for none")
    check = payload.get("check", True)
    if not isinstance(check, bool):
        raise TaskError("shell 'check' must be true or false")
    return cmd, cwd, {str(k): str(v) for k, v in env.items()}, timeout, check


def shell(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    """Run a command; stream its lines as progress; cancel kills its process group.

    payload: ``{"cmd": str | [str], "cwd"?: str, "env"?: {str: str}, "timeout"?: float | null,
    "check"?: bool}``.  A string runs through ``/bin/sh -c``; a list runs directly.
    The result is ``{exit_code, stdout, stderr, seconds}`` (stdout/stderr: the last
    50 lines).  A non-zero exit fails the task (unless ``check`` is false), and so does
    the timeout (default :data:`DEFAULT_SHELL_TIMEOUT`): as in CI, a failed command must
    not let what depends on it run.  The failed outcome keeps the same result map.
    """
    cmd, cwd, extra_env, timeout, check = _shell_options(payload)
    env = dict(os.environ)
    env.update(extra_env)
    if cwd is not None and not os.path.isdir(cwd):
        raise TaskError(f"shell 'cwd' {cwd!r} is not a directory on this agent's host")
    try:
        proc = subprocess.Popen(cmd, shell=isinstance(cmd, str), cwd=cwd, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    except (OSError, ValueError) as exc:  # no such program, no permission, a NUL in the command
        raise TaskError(f"shell could not start {cmd if isinstance(cmd, str) else cmd[0]!r}: "
                        f"{getattr(exc, 'strerror', None) or exc}") from None
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
            if timeout is not None and time.monotonic() - started > timeout:
                reason = f"timed out after {timeout:g}s"
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
            line = rest.decode(errors="replace")
            tails[stream].append(line)
            ctx.progress({"stream": stream, "line": line})  # the last line, even without a newline
    if reason == "cancelled":
        ctx.check_cancelled()
    result = {"exit_code": code, "stdout": "\n".join(tails["stdout"]), "stderr": "\n".join(tails["stderr"]),
              "seconds": round(time.monotonic() - started, 3)}
    if reason is not None:
        raise TaskError(reason, result)
    if code != 0 and check:
        last = next((line for line in reversed(tails["stderr"]) if line.strip()), "")
        raise TaskError(f"exit code {code}" + (f": {last[:200]}" if last else ""), result)
    return result


#: The payload fields of each built-in kind, as ``orchflow kinds`` shows them.
PAYLOAD_FIELDS: dict[str, str] = {
    "shell": "cmd: str | [str]; cwd?: str (the CLI sends its own); env?: {str: str}; "
             f"timeout?: seconds (default {DEFAULT_SHELL_TIMEOUT:g}, null: none); check?: bool (default true: "
             "a non-zero exit fails the task)",
    "sys.noop": "anything; returns null",
    "sys.echo": "anything; returns it",
    "sys.sleep": "seconds, or {seconds}; wakes early on cancel",
    "sys.spin": "iterations (int); burns CPU",
    "sys.fail": "a message; always fails with it",
}


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
