"""Shared fixtures: real broker and agent processes on ipc endpoints in a temp dir.

ipc paths are limited to ~107 bytes, so the run directory is a short mkdtemp
under /tmp rather than pytest's deep tmp_path.  Every process is killed by PID at
teardown, pass or fail.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from launcher.procs import ProcessGroup  # noqa: E402


@pytest.fixture
def run_dir():
    path = tempfile.mkdtemp(prefix="of-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def procs(run_dir):
    group = ProcessGroup(os.path.join(run_dir, "run"))
    try:
        yield group
    finally:
        group.close()


@pytest.fixture
def swarm(procs):
    """A broker (in-memory journal) with no agents yet; tests add what they need."""
    procs.broker()
    return procs
