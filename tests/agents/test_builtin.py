"""The built-in ``shell`` kind: a failed command fails its task (issue #13).

On b788953 a command exiting 2 was ``done``, a timeout was ``done``, and a workflow
ran its tests after a failed build.  The handler is called directly for the payload
checks (fast, many examples) and through a real swarm for the outcome clients see.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents import TaskContext, TaskError
from agents.builtin import DEFAULT_SHELL_TIMEOUT, shell
from bus import Client, TaskFailed

pytestmark = pytest.mark.timeout(120)


def run_shell(payload):
    """The handler as the runtime calls it, with the progress it streams."""
    progress: list = []
    ctx = TaskContext("t1", "shell", payload, "default", 1, None,
                      lambda what, task_id, data: progress.append(data))
    ctx._cancelled = None
    return shell(payload, ctx), progress


def test_a_non_zero_exit_fails_and_keeps_exit_code_and_output():
    with pytest.raises(TaskError) as err:
        run_shell({"cmd": "echo out; echo 'no such target' >&2; exit 2"})
    assert str(err.value) == "exit code 2: no such target"
    assert err.value.result["exit_code"] == 2
    assert err.value.result["stdout"] == "out" and err.value.result["stderr"] == "no such target"


def test_check_false_opts_out():
    result, _ = run_shell({"cmd": "exit 3", "check": False})
    assert result["exit_code"] == 3


def test_a_timeout_fails_even_with_check_false():
    with pytest.raises(TaskError) as err:
        run_shell({"cmd": "echo started; sleep 30", "timeout": 0.3, "check": False})
    assert str(err.value) == "timed out after 0.3s"
    assert err.value.result["exit_code"] == -9 and err.value.result["stdout"] == "started"
    assert err.value.result["seconds"] < 5


def test_the_last_line_without_a_newline_is_streamed_too():
    result, progress = run_shell({"cmd": "echo line1; printf last"})
    assert [p["line"] for p in progress] == ["line1", "last"]
    assert result["stdout"] == "line1\nlast"


def test_cwd_and_default_timeout(tmp_path):
    result, _ = run_shell({"cmd": "pwd", "cwd": str(tmp_path)})
    assert result["stdout"] == str(tmp_path)
    with pytest.raises(TaskError, match="is not a directory"):
        run_shell({"cmd": "pwd", "cwd": str(tmp_path / "missing")})
    with pytest.raises(TaskError, match="could not start 'no-such-program-xyz'"):
        run_shell({"cmd": ["no-such-program-xyz"]})
    assert DEFAULT_SHELL_TIMEOUT == 3600


hostile = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=5), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                                             st.integers(), max_size=2))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(["cmd", "cwd", "env", "timeout", "check"]), value=hostile)
def test_hostile_payload_fields_fail_with_a_message_naming_the_field(field, value):
    """Only ``true`` or a hostile value for one field ever runs: nothing random is executed."""
    payload = {"cmd": "true", field: value}
    if field == "cmd" and isinstance(value, str) and value:
        payload["cmd"] = ["true", value]  # a list runs no shell: the text is an argument
    try:
        result, _ = run_shell(payload)
    except TaskError as exc:
        message = str(exc)
        assert f"'{field}'" in message or (field == "timeout" and message.startswith("timed out after")) \
            or (field == "cmd" and "could not start" in message), (payload, exc)
    else:
        assert result["exit_code"] == 0


def test_clients_see_the_failure_with_its_data_and_a_workflow_stops(swarm):
    swarm.agent("a", capacity=2, kinds="shell")
    swarm.wait_agents(1)
    with Client(swarm.endpoints.frontend) as c:
        with pytest.raises(TaskFailed) as err:
            c.call("shell", {"cmd": "echo compiling; exit 2"}, timeout=20)
        assert err.value.state == "failed" and err.value.error == "exit code 2"
        assert err.value.result["exit_code"] == 2 and err.value.result["stdout"] == "compiling"
        wf = c.submit_workflow([
            {"name": "build", "kind": "shell", "payload": {"cmd": "exit 1"}},
            {"name": "test", "kind": "shell", "payload": {"cmd": f"touch {os.getcwd()}/ran-tests"},
             "deps": ["build"]},
        ])
        outcome = c.outcome(wf, timeout=30)
        assert outcome["state"] == "failed" and "build" in outcome["error"]
        steps = c.status([wf])["workflows"][wf]["steps"]
        assert steps == {"build": "failed", "test": "failed"}, steps
        assert not os.path.exists(f"{os.getcwd()}/ran-tests")
