"""$ORCHFLOW_HOME/config.toml and --log-level (issue #13): settings a person keeps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from launcher import config
from launcher.errors import CliError
from launcher.supervisor import pid_alive

pytestmark = pytest.mark.timeout(120)


def test_precedence_flag_then_file_then_default(tmp_path):
    (tmp_path / "config.toml").write_text('agents = 3\nlog_level = "debug"\nresult_ttl = 60\n')
    merged = config.settings(tmp_path, {"agents": 1, "capacity": None})
    assert merged["agents"] == 1 and merged["log_level"] == "debug" and merged["result_ttl"] == 60
    assert merged["capacity"] == config.DEFAULTS["capacity"]


@pytest.mark.parametrize("text, message", [
    ("agents = \"two\"", "agents must be int"),
    ("agnets = 2", "unknown setting 'agnets'"),
    ("log_level = \"LOUD\"", "log_level must be one of"),
    ("result_ttl = -1", "result_ttl must be positive"),
    ("agents = [", "not valid TOML"),
    ("capacity = true", "capacity must be int"),
])
def test_a_bad_file_is_an_error_naming_the_setting(tmp_path, text, message):
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(CliError, match=message.replace("[", r"\[")):
        config.load(tmp_path)


def test_the_launcher_applies_the_file_and_refuses_a_bad_one(run_dir):
    home = Path(run_dir, "home")
    home.mkdir()
    env = dict(os.environ, ORCHFLOW_HOME=str(home))
    (home / "config.toml").write_text("agents = 1\nresult_ttl = 120\nneural_start = \"eager\"\n"
                                      "learned_routing = true\n")
    done = subprocess.run(["orchflow-launch", "--detach", "--log-level", "debug"], env=env, capture_output=True,
                          text=True, timeout=60)
    state_file = home / "run" / "state.json"
    try:
        assert done.returncode == 0, done.stderr
        pids = json.loads(state_file.read_text())["pids"]
        assert sorted(pids) == ["agent0", "broker", "neural0"]
        broker = pids["broker"]
        cmdline = Path(f"/proc/{broker}/cmdline").read_bytes().split(b"\0")
        assert float(cmdline[cmdline.index(b"--result-ttl") + 1]) == 120
        assert b"--learned-routing" in cmdline
        environ = Path(f"/proc/{broker}/environ").read_bytes().split(b"\0")
        assert b"ORCHFLOW_LOG_LEVEL=DEBUG" in environ
    finally:
        subprocess.run(["orchflow-launch", "stop"], env=env, capture_output=True, timeout=60)
        for pid in (json.loads(state_file.read_text())["pids"].values() if state_file.exists() else []):
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    agent_log = (home / "logs" / "agent0.log").read_text()  # agents say what they do (issue #13)
    assert "agent0: serving" in agent_log and "capacity 8" in agent_log and "agent0: stopped after" in agent_log
    time.sleep(0.2)
    (home / "config.toml").write_text("agnets = 1\n")
    done = subprocess.run(["orchflow-launch", "--detach"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown setting 'agnets'" in done.stderr and "Traceback" not in done.stderr
