"""Swarm memory over the bus, served by the memory agent process."""

from __future__ import annotations

import os

import pytest

from bus import Client, TaskFailed


@pytest.fixture
def memory_swarm(swarm, run_dir):
    swarm.agent("memory", capacity=4, module="agents.memory_agent",
                extra=["--memory", os.path.join(run_dir, "memory"), "--events-in", swarm.endpoints.events_in])
    swarm.wait_agents(1)
    return swarm


def test_memory_across_projects_with_namespace_rules(memory_swarm):
    ep = memory_swarm.endpoints.frontend
    with Client(ep, project="alpha") as alpha, Client(ep, project="beta") as beta:
        sub = alpha.subscribe("memory.changed")
        assert alpha.call("memory.put", {"key": "build", "value": "make"}, timeout=5) is True
        assert alpha.call("memory.put", {"ns": "shared", "key": "style", "value": "pep8"}, timeout=5) is True
        # beta reads the shared namespace, but neither reads nor writes alpha's
        assert beta.call("memory.get", {"ns": "shared", "key": "style"}, timeout=5) == "pep8"
        for kind, extra in (("memory.get", {}), ("memory.put", {"value": "rm -rf"})):
            with pytest.raises(TaskFailed) as err:
                beta.call(kind, {"ns": "project:alpha", "key": "build", **extra}, timeout=5)
            assert "Forbidden" in err.value.error
        assert alpha.call("memory.get", {"key": "build"}, timeout=5) == "make"
        assert beta.call("memory.cas", {"key": "n", "expected": None, "value": 1}, timeout=5) is True
        assert beta.call("memory.incr", {"key": "n", "delta": 2}, timeout=5) == 3
        assert alpha.call("memory.search", {"ns": "shared", "text": "PEP"}, timeout=5) == [["style", "pep8"]]
        assert alpha.call("memory.namespaces", {}, timeout=5) == ["project:alpha", "shared"]  # not beta's
        with pytest.raises(TaskFailed) as err:
            alpha.call("memory.put", {"key": "bad", "value": None, "ttl": "soon"}, timeout=5)
        assert "ttl" in err.value.error
        changed = []
        while len(changed) < 2:
            event = sub.recv(timeout=5)
            assert event is not None, "memory.changed events did not arrive"
            changed.append((event[1]["ns"], event[1]["key"]))
        assert changed == [("project:alpha", "build"), ("shared", "style")]


class _Collect:
    """Stands in for the PUB socket: what publish_pending sends, in order."""

    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, frames: list[bytes]) -> None:
        self.sent.append(frames)


def test_feed_publisher_drains_more_than_one_batch_per_tick(run_dir):
    from bus import protocol as P
    from store import Memory
    from store import env as E
    from agents.memory_agent import FEED_BATCH, publish_pending

    memory = Memory(os.path.join(run_dir, "feed-memory"))
    try:
        since = memory.last_change()
        memory.put_many("project:a", [(f"k{i}", i) for i in range(FEED_BATCH * 2 + 500)])
        pub = _Collect()
        last = publish_pending(memory, pub, since)
        keys = [P.unpack(frames[1])["key"] for frames in pub.sent]
        assert keys == [f"k{i}" for i in range(FEED_BATCH * 2 + 500)]
        assert last == memory.last_change()
        assert publish_pending(memory, pub, last) == last and len(pub.sent) == FEED_BATCH * 2 + 500
    finally:
        E.close_env(memory.path)
