"""The README's examples are the contract: every command and code block in it runs here,
in order, against a real swarm, through the installed console scripts.

The run happens in a fresh ``$HOME`` (so ``~/.orchflow`` is the swarm's home, as for a
new user) and in a project directory holding the files the examples name.  Two lines
are not run as written: the first two commands' ``pip install`` steps (this test runs
on the installed package; ``orchflow-launch --demo`` itself is run), and the test
command, which is the suite this test is part of.  Where an example listens on a fixed
TCP port (5555, and 9464 for metrics), a free one is used instead, so parallel runs
cannot collide.
Commands that run until Ctrl-C (``orchflow events``) get SIGINT after a few seconds and
must end with exit 130 and no traceback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from launcher.procs import free_tcp_block
from launcher.supervisor import pid_alive

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

pytestmark = pytest.mark.timeout(300)

MAKEFILE = """\
all:
\t@echo built
test:
\t@echo tests passed
docs:
\t@echo docs made
"""
XOR = "4 2 1\n-1 -1\n-1\n-1 1\n1\n1 -1\n1\n1 1\n-1\n"
UNTIL_CTRL_C = ("orchflow events",)


def blocks(text: str) -> list[tuple[str, str]]:
    """The fenced ``sh`` and ``python`` blocks, in order."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(sh|python)\n(.*?)```", text, re.S)]


def first_commands(text: str) -> list[str]:
    """The two indented commands at the top of the README."""
    return [line.strip() for line in text.split("\n\n")[1].splitlines() if line.startswith("    ")]


class Session:
    """A new user's shell: fresh HOME, a project directory, a log of what ran."""

    def __init__(self, root: str) -> None:
        self.home = os.path.join(root, "home")
        self.cwd = os.path.join(root, "project")
        os.makedirs(self.home)
        os.makedirs(self.cwd)
        for name, content in {"Makefile": MAKEFILE, "job.json": '{"cmd": "echo job ran"}', "data.train": XOR,
                              "app.py": "x = 1\n", "util.py": "def f():\n    return 2\n"}.items():
            Path(self.cwd, name).write_text(content)
        self.env = {k: v for k, v in os.environ.items() if k != "ORCHFLOW_HOME"}
        self.env.update(HOME=self.home, PYTHONPATH=str(ROOT))
        self.background: list[subprocess.Popen] = []
        self.port = str(free_tcp_block())
        self.metrics_port = str(free_tcp_block())

    def sh(self, line: str, timeout: float = 120) -> subprocess.CompletedProcess:
        line = line.replace("5555", self.port).replace("9464", self.metrics_port)
        line = line.replace(" examples/", f" {ROOT}/examples/")  # the README is read in the checkout
        if line.startswith(UNTIL_CTRL_C):
            proc = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=self.cwd, env=self.env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(2.0)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
            return subprocess.CompletedProcess(line, proc.returncode, out, err)
        return subprocess.run(["bash", "-c", line], cwd=self.cwd, env=self.env, capture_output=True,
                              timeout=timeout)

    def python(self, code: str, background: bool = False) -> subprocess.CompletedProcess | subprocess.Popen:
        path = Path(self.cwd, f"example{len(list(Path(self.cwd).glob('example*.py')))}.py")
        path.write_text(code)
        if background:
            proc = subprocess.Popen([sys.executable, str(path)], cwd=self.cwd, env=self.env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self.background.append(proc)
            return proc
        return subprocess.run([sys.executable, str(path)], cwd=self.cwd, env=self.env, capture_output=True,
                              timeout=240)

    def close(self) -> None:
        for proc in self.background:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        subprocess.run(["orchflow-launch", "stop"], env=self.env, capture_output=True, timeout=60)
        state = Path(self.home, ".orchflow", "run", "state.json")
        if state.exists():  # nothing left behind, pass or fail
            for pid in json.loads(state.read_text()).get("pids", {}).values():
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)


def check(done: subprocess.CompletedProcess, what: str, code: int = 0) -> None:
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    assert "Traceback" not in err, f"{what}\n{err}"
    assert done.returncode == code, f"{what}: exit {done.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"


@pytest.fixture
def session():
    root = tempfile.mkdtemp(prefix="of-readme-")
    s = Session(root)
    try:
        yield s
    finally:
        s.close()
        shutil.rmtree(root, ignore_errors=True)


def test_every_readme_example_runs(session):
    text = README.read_text()
    install, tests = first_commands(text)
    assert install == "pip install . && orchflow-launch --demo" and tests.startswith("pip install '.[test]'")
    check(session.sh("orchflow-launch --demo", timeout=240), "orchflow-launch --demo")

    found = blocks(text)
    assert [lang for lang, _ in found].count("sh") >= 3 and [lang for lang, _ in found].count("python") >= 3
    agent = None
    ran = []
    for lang, code in found:
        if lang == "python" and "agent.run()" in code:
            agent = session.python(code, background=True)
            deadline = time.monotonic() + 20
            while b"greeter" not in session.sh("orchflow agents").stdout:
                assert agent.poll() is None, agent.communicate()[1].decode()
                assert time.monotonic() < deadline, "the README's agent never registered"
                time.sleep(0.2)
            continue
        if lang == "python":
            done = session.python(code)
            check(done, code)
            ran.append((code, done))
            continue
        for line in code.strip().splitlines():
            done = session.sh(line)
            check(done, line, 130 if line.startswith(UNTIL_CTRL_C) else 0)
            ran.append((line, done))

    outputs = {what: done.stdout.decode() + done.stderr.decode() for what, done in ran}
    make_test = next(v for k, v in outputs.items() if "make test" in k and k.startswith("orchflow submit"))
    assert "tests passed" in make_test and "passed" in make_test.splitlines()[-1]
    assert "npm run build" in next(v for k, v in outputs.items() if "memory get build-cmd" in k)
    greet = next(v for k, v in outputs.items() if "submit greet" in k)
    assert "thinking" in greet and "hello ide" in greet
    trained = next(v for k, v in outputs.items() if "neural train mymodel" in k)
    assert "epoch" in trained and '"epochs"' in trained
    client = next(v for k, v in outputs.items() if "submit_workflow" in k)
    assert "tests passed" in client and "docs made" in client and "done" in client
    assert Path(session.cwd, "xor.net").exists() and Path(session.cwd, "rescued", "data.mdb").exists()
    configs = [json.loads(m) for m in re.findall(r"```json\n(.*?)```", text, re.S)]  # the MCP client configs
    servers = [c.get("servers", c.get("mcpServers"))["orchflow"] for c in configs]
    assert len(servers) == 2 and all((s["command"], s["args"]) == ("orchflow", ["mcp"]) for s in servers)
    assert shutil.which("orchflow")  # what they start; tests/bridge/test_ws_mcp.py drives `orchflow mcp` itself
    rpc = [json.loads(ln) for ln in next(v for k, v in outputs.items() if "serve --stdio" in k).splitlines()
           if ln.startswith("{")]
    assert rpc[0]["method"] == "swarm.state" and rpc[-1].get("result", {}).get("result") == "hi", rpc
    scraped = next(v for k, v in outputs.items() if k.startswith("curl") and "/metrics" in k)
    assert 'orchflow_tasks_finished_total{kind="sys.echo",project="default",state="done"} 1.0' in scraped
    assert "broker serving clients at" in next(v for k, v in outputs.items() if k.startswith("orchflow logs broker"))

    kit = next(v for k, v in outputs.items() if "bus.conformance" in k)
    assert "10 passed, 0 failed, 0 warnings" in kit, kit

    os.kill(agent.pid, signal.SIGTERM)  # the agent drains and exits cleanly
    assert agent.wait(20) == 0
