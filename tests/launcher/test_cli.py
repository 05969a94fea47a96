"""``orchflow`` as scripts and people use it, through the installed console script.

Issue #13, each failing on b788953: failures exited 0, an unknown kind hung for ever,
``--timeout`` printed a traceback with the wrong figure, bad input printed
tracebacks, Ctrl-C left the task running without saying its id, shell tasks ran in
the launcher's directory, and the last progress lines were dropped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time

import pytest

from launcher import exit_codes
from tests.conftest import launched_swarm

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def env():
    with launched_swarm("--agents", "2") as (environ, _home, _state):
        yield environ


def orchflow(env, *args, stdin: bytes | None = None, cwd: str | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["orchflow", *args], env=env, input=stdin, capture_output=True, timeout=timeout,
                          cwd=cwd)


def one_line_error(done: subprocess.CompletedProcess) -> str:
    err = done.stderr.decode()
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("orchflow:")]
    assert lines, err
    return lines[-1]


def submit_id(env, *args) -> str:
    done = orchflow(env, "--json", "submit", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["id"]


def test_exit_codes_follow_the_task_state(env):
    table = [
        (["submit", "sys.echo", "--payload", '"hi"', "--wait"], exit_codes.DONE),
        (["submit", "sys.fail", "--payload", '"kaput"', "--wait"], exit_codes.FAILED),
        (["submit", "shell", "--payload", '{"cmd": "exit 2"}', "--wait"], exit_codes.FAILED),
        (["submit", "shell", "--payload", '{"cmd": "sleep 5", "timeout": 0.2}', "--wait"], exit_codes.FAILED),
        (["submit", "shell", "--payload", '{"cmd": "exit 2", "check": false}', "--wait"], exit_codes.DONE),
        (["submit", "sys.echo", "--payload", "{bad json"], exit_codes.USAGE),
        (["submit"], exit_codes.USAGE),
    ]
    for args, code in table:
        done = orchflow(env, *args)
        assert done.returncode == code, (args, done.returncode, done.stderr)
    assert exit_codes.HELP in orchflow(env, "--help").stdout.decode()

    cancelled = submit_id(env, "sys.sleep", "--payload", "30")
    assert orchflow(env, "cancel", cancelled).returncode == 0
    assert orchflow(env, "result", cancelled).returncode == exit_codes.CANCELLED

    expired = submit_id(env, "nobody.serves", "--deadline", "0.1")
    done = orchflow(env, "--json", "result", expired, "--wait", "--timeout", "10")
    assert done.returncode == exit_codes.EXPIRED and json.loads(done.stdout)["state"] == "expired"

    nowhere = dict(env, ORCHFLOW_HOME=tempfile.mkdtemp(prefix="of-none-"))
    done = orchflow(nowhere, "status")
    assert done.returncode == exit_codes.UNAVAILABLE and "no swarm found" in one_line_error(done)


def test_wait_timeout_names_the_real_figure_and_the_id(env):
    done = orchflow(env, "submit", "sys.sleep", "--payload", "30", "--wait", "--timeout", "1.5")
    assert done.returncode == exit_codes.STILL_RUNNING
    task_id = json.loads(done.stdout)["id"]
    assert f"task {task_id} still running after 1.5s" in one_line_error(done)
    assert orchflow(env, "result", task_id).returncode == exit_codes.STILL_RUNNING
    orchflow(env, "cancel", task_id)


def test_an_unserved_kind_is_reported_at_once_and_honours_timeout(env):
    start = time.monotonic()
    done = orchflow(env, "submit", "nosuch.kind", "--wait", "--timeout", "1")
    assert done.returncode == exit_codes.STILL_RUNNING and time.monotonic() - start < 15
    assert "no agent serves kind 'nosuch.kind'; waiting" in done.stderr.decode()
    status = orchflow(env, "status").stdout.decode()
    assert "health: check" in status and "no agent serves: nosuch.kind" in status
    assert orchflow(env, "cancel", json.loads(done.stdout)["id"]).returncode == 0


def test_bad_input_is_one_line_never_a_traceback(env, tmp_path):
    cases = [
        (["submit", "sys.echo", "--payload", "[1,"], "not valid JSON"),
        (["memory", "put", "k", "npm run build"], "--text"),
        (["neural", "run", "m", "--input", "[1,"], "--input is not valid JSON"),
        (["submit", "sys.echo", "--payload", f"@{tmp_path}/missing.json"], "cannot read --payload"),
        (["result", "no-such-task"], "no task 'no-such-task'"),
    ]
    for args, message in cases:
        done = orchflow(env, *args)
        assert done.returncode == exit_codes.USAGE, (args, done.stderr)
        assert message in one_line_error(done), (args, done.stderr)
    done = subprocess.run([b"orchflow", b"submit", b"sys.echo", b"--payload", b'"\xff\xfe"'], env=env,
                          capture_output=True, timeout=30)
    assert done.returncode == exit_codes.USAGE and "not valid UTF-8" in one_line_error(done)
    assert orchflow(env, "memory", "put", "build-cmd", "npm run build", "--text").returncode == 0
    assert json.loads(orchflow(env, "memory", "get", "build-cmd").stdout) == "npm run build"


def test_payload_from_a_file_and_from_stdin_past_the_argv_limit(env, tmp_path):
    big = {"cmd": "true", "blob": "x" * 200_000}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(big))
    for args, stdin in ((["--payload", f"@{path}"], None), (["--payload", "-"], json.dumps(big).encode())):
        done = orchflow(env, "--json", "submit", "shell", *args, "--wait", stdin=stdin)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["result"]["exit_code"] == 0


def test_shell_runs_where_the_caller_is_and_progress_keeps_the_last_line(env, tmp_path):
    for _ in range(3):
        done = orchflow(env, "submit", "shell", "--payload",
                        '{"cmd": "echo line1; echo line2; echo line3; echo last; pwd"}', "--wait", cwd=str(tmp_path))
        assert done.returncode == 0, done.stderr
        err = done.stderr.decode()
        assert [line.strip() for line in err.splitlines() if line.strip().startswith("[stdout]")] == \
            ["[stdout] line1", "[stdout] line2", "[stdout] line3", "[stdout] last", f"[stdout] {tmp_path}"]
    done = orchflow(env, "--json", "submit", "shell", "--payload", '{"cmd": "pwd"}', "--wait", "--no-cwd",
                    cwd=str(tmp_path))
    assert json.loads(done.stdout)["result"]["stdout"] != str(tmp_path)


def test_ctrl_c_on_wait_cancels_the_task_and_prints_its_id(env):
    for flag, state in (([], "cancelled"), (["--detach-on-interrupt"], "running")):
        proc = subprocess.Popen(["orchflow", "--json", "submit", "sys.sleep", "--payload", "30", "--wait", *flag],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            time.sleep(2.0)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == exit_codes.INTERRUPTED, err
        task_id = json.loads(out)["id"]
        assert task_id in err.decode()
        status = json.loads(orchflow(env, "--json", "result", task_id).stdout)
        assert status["state"] == state, status
        if state == "running":
            orchflow(env, "cancel", task_id)


def test_kinds_lists_every_served_kind_with_its_payload_fields(env):
    done = orchflow(env, "--json", "kinds")
    rows = {r["kind"]: r for r in json.loads(done.stdout)}
    assert {"shell", "sys.echo", "memory.put", "neural.train"} <= set(rows)
    # the neural workers start with the first neural task (#14): listed, and said so
    assert rows["neural.train"]["on_demand"] and "starts with the first task" in rows["neural.train"]["payload"]
    assert "check?: bool" in rows["shell"]["payload"] and rows["shell"]["agents"]
    table = orchflow(env, "kinds").stdout.decode().splitlines()
    assert table[0].split() == ["KIND", "AGENTS", "CAP", "QUEUED", "PAYLOAD"]


def test_tasks_purge_retry_and_schedules_from_the_cli(env):
    failed = submit_id(env, "sys.fail", "--payload", '"disk full"')
    stuck = submit_id(env, "cli.nobody")
    time.sleep(0.5)
    listing = json.loads(orchflow(env, "--json", "tasks", "--state", "failed").stdout)
    assert failed in [t["id"] for t in listing]
    table = orchflow(env, "tasks", "--kind", "cli.nobody").stdout.decode().splitlines()
    assert table[0].split()[:4] == ["ID", "KIND", "PROJECT", "STATE"] and stuck in table[1]
    assert "cancelled 1 queued cli.nobody tasks" in orchflow(env, "purge", "cli.nobody").stdout.decode()
    assert orchflow(env, "result", stuck).returncode == exit_codes.CANCELLED
    done = orchflow(env, "--json", "retry", failed)
    assert done.returncode == 0 and failed in json.loads(done.stdout)["requeued"]
    assert orchflow(env, "retry", "no-such-id").returncode == exit_codes.USAGE

    added = orchflow(env, "schedule", "add", "cli-beat", "* * * * * *", "sys.echo", "--payload", '"beat"')
    assert added.returncode == 0 and "next run" in added.stdout.decode()
    time.sleep(2.5)
    [row] = [s for s in json.loads(orchflow(env, "--json", "schedule", "list").stdout) if s["name"] == "cli-beat"]
    assert row["fired"] >= 1
    assert orchflow(env, "schedule", "remove", "cli-beat").returncode == 0
    assert orchflow(env, "schedule", "remove", "cli-beat").returncode == exit_codes.USAGE
    bad = orchflow(env, "schedule", "add", "x", "not a cron", "sys.echo")
    assert bad.returncode == exit_codes.USAGE and "cron expression" in one_line_error(bad)


def test_bash_completion_knows_commands_options_and_choices(env):
    script = orchflow(env, "completion", "bash").stdout.decode()

    def complete(*words: str) -> set[str]:
        line = " ".join(repr(w) for w in words)
        done = subprocess.run(["bash", "-c", script + f"\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
                               "_orchflow; echo \"${COMPREPLY[@]}\""], capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, done.stderr
        return set(done.stdout.split())

    assert {"submit", "tasks", "schedule"} <= complete("orchflow", "")
    assert complete("orchflow", "submit", "shell", "--w") == {"--wait"}
    assert {"add", "list", "remove"} <= complete("orchflow", "schedule", "")


def test_events_read_as_lines_with_local_times(env):
    tail = subprocess.Popen(["orchflow", "events", "task."], env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        time.sleep(1.0)  # the tail's subscription reaches the proxy
        task = submit_id(env, "sys.echo", "--payload", '"watched"')
        deadline = time.monotonic() + 10
        line = ""
        while time.monotonic() < deadline and not ("task.done" in line and task in line):
            line = tail.stdout.readline()
        hhmmss, topic, *fields = line.split()
        assert time.strptime(hhmmss, "%H:%M:%S") and topic == "task.done"
        assert f"id={task}" in fields and "state=done" in fields and not any(f.startswith("ts=") for f in fields)
    finally:
        os.killpg(tail.pid, signal.SIGKILL)
        tail.wait(10)
