"""Builds the example agents once per session: `npm ci` for the Node ones, `make` for C.

The toolchains are a CI dependency (.ci/run installs nodejs, npm, libzmq3-dev and
libmsgpack-dev); on a machine without them these tests fail and say what to install,
they do not skip."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
NODE_AGENT = EXAMPLES / "agents" / "node"
NODE_CLIENT = EXAMPLES / "clients" / "node"
C_AGENT = EXAMPLES / "agents" / "c"
PY_AGENT = EXAMPLES / "agents" / "python" / "agent.py"


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is missing: apt-get install {package} (.ci/run does)"
    return path


def _npm_install(directory: Path) -> None:
    if (directory / "node_modules" / "zeromq").is_dir() and (directory / "node_modules" / "@msgpack").is_dir():
        return
    npm = _need("npm", "npm")
    command = [npm, "ci" if (directory / "package-lock.json").exists() else "install", "--no-audit", "--no-fund"]
    done = subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(command)} in {directory} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="session")
def node_examples() -> str:
    node = _need("node", "nodejs")
    for directory in (NODE_AGENT, NODE_CLIENT):
        _npm_install(directory)
    return node


@pytest.fixture(scope="session")
def c_agent() -> str:
    _need("make", "make")
    _need("cc", "gcc")
    done = subprocess.run(["make", "-s", "-B", "agent"], cwd=C_AGENT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ))
    assert done.returncode == 0, f"make failed (apt-get install libzmq3-dev libmsgpack-dev pkg-config):\n{done.stderr}"
    return str(C_AGENT / "agent")
