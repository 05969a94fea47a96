"""One default-like swarm per test module of the bridge: the servers under test attach to it."""

from __future__ import annotations

import pytest

from tests.conftest import launched_swarm


@pytest.fixture(scope="module")
def swarm():
    with launched_swarm("--agents", "2", "--neural-start", "eager") as launched:
        yield launched
