"""Swarm memory on LMDB: API, TTL, cross-process CAS, map growth, crash safety, bad input."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import lmdb
import pytest

from store import (SHARED, CorruptStore, CorruptValue, InvalidKey, Memory, NotSerializable, StoreError,
                   ValueTooLarge)
from store import env as E


@pytest.fixture
def mem(run_dir):
    m = Memory(os.path.join(run_dir, "memory"))
    yield m
    E.close_env(m.path)


def test_put_get_delete_items_search_namespaces(mem):
    mem.put("project:a", "build/cmd", "make -j8")
    mem.put("project:a", "build/dir", {"path": "/src", "n": [1, 2]})
    mem.put("project:a", "test/cmd", "pytest")
    mem.put("project:b", "build/cmd", "cargo build")
    mem.put(SHARED, "style", "PEP 8")
    assert mem.get("project:a", "build/dir") == {"path": "/src", "n": [1, 2]}
    assert mem.get("project:a", "missing", default=42) == 42
    assert list(mem.items("project:a", prefix="build/")) == [("build/cmd", "make -j8"),
                                                           ("build/dir", {"path": "/src", "n": [1, 2]})]
    assert mem.search("project:a", "PYTEST") == [("test/cmd", "pytest")]
    assert mem.search("project:a", "build") == [("build/cmd", "make -j8"), ("build/dir", {"path": "/src", "n": [1, 2]})]
    assert mem.namespaces() == ["project:a", "project:b", "shared"]
    assert mem.delete("project:a", "build/cmd") is True
    assert mem.delete("project:a", "build/cmd") is False
    assert mem.get("project:a", "build/cmd") is None
    feed = mem.changes()
    assert [(c["ns"], c["key"], c["op"]) for c in feed][-1] == ("project:a", "build/cmd", "delete")
    assert [c["seq"] for c in feed] == sorted({c["seq"] for c in feed})  # strictly increasing
    assert mem.changes(since=feed[-2]["seq"]) == feed[-1:]
    assert mem.last_change() == feed[-1]["seq"]


def test_ttl_expires_lazily_and_by_sweep(mem):
    mem.put("ns", "short", "v", ttl=0.2)
    mem.put("ns", "long", "v", ttl=60)
    mem.put("ns", "forever", "v")
    assert mem.get("ns", "short") == "v"
    time.sleep(0.3)
    assert mem.get("ns", "short") is None                       # lazy: hidden on read
    assert [k for k, _ in mem.items("ns")] == ["forever", "long"]
    assert mem.stats()["entries"] == 3                         # still stored until swept
    assert mem.sweep() == 1
    assert mem.stats()["entries"] == 2
    assert mem.changes()[-1]["op"] == "expire"
    mem.put("ns", "long", "v2")                                 # ttl dropped on overwrite
    assert mem.sweep(now=time.time() + 120) == 0
    assert mem.get("ns", "long") == "v2"


def _increment(path: str, times: int) -> None:
    m = Memory(path)
    for _ in range(times):
        while True:
            current = m.get("shared", "counter", 0)
            if m.cas("shared", "counter", current if current else None, current + 1):
                break


def test_cas_under_eight_writer_processes(mem):
    ctx = mp.get_context("fork")  # the parent's Environment must be reopened in each child
    workers = [ctx.Process(target=_increment, args=(mem.path, 1000)) for _ in range(8)]
    for w in workers:
        w.start()
    try:
        for w in workers:
            w.join(120)
            assert w.exitcode == 0
    finally:
        for w in workers:
            if w.is_alive():
                os.kill(w.pid, signal.SIGKILL)
    assert mem.get("shared", "counter") == 8000
    assert mem.cas("shared", "counter", 7999, 0) is False
    assert mem.incr("shared", "counter", 5) == 8005


def test_map_grows_past_its_initial_size(run_dir):
    m = Memory(os.path.join(run_dir, "small"), map_size=1 << 20)
    blob = "x" * 10_000
    for i in range(500):  # ~5 MB into a 1 MiB map
        m.put("ns", f"k{i:04d}", blob)
    assert m.env.info()["map_size"] > 4 << 20
    assert len(list(m.items("ns"))) == 500
    assert m.get("ns", "k0499") == blob
    E.close_env(m.path)


WRITER = """
import sys
from store import Memory
m = Memory(sys.argv[1])
i = 0
while True:
    m.put("ns", "k%08d" % i, {"i": i, "pad": "p" * 200})
    sys.stdout.write("%d\\n" % i); sys.stdout.flush()
    i += 1
"""


def test_writer_killed_mid_stream_leaves_committed_items_intact(run_dir):
    path = os.path.join(run_dir, "crash")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, path], stdout=subprocess.PIPE, env=env)
    try:
        last = -1
        while last < 2000:
            line = proc.stdout.readline()
            assert line, "writer died on its own"
            last = int(line)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        for line in proc.stdout.read().split():  # anything it reported before dying was committed
            last = int(line)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    m = Memory(path)  # reader_check() clears the dead writer's slot on open
    items = dict(m.items("ns"))
    assert all(f"k{i:08d}" in items for i in range(last + 1))
    assert items[f"k{last:08d}"]["i"] == last
    m.put("ns", "after", "crash")  # and it is writable again
    assert m.get("ns", "after") == "crash"
    E.close_env(path)


def test_bad_input_is_rejected_and_changes_nothing(mem):
    mem.put("ns", "keep", "original")
    before = mem.changes()
    with pytest.raises(NotSerializable):
        mem.put("ns", "keep", {1, 2, 3})
    with pytest.raises(NotSerializable):
        mem.put("ns", "keep", object())
    small = Memory(mem.path, max_value=1000)
    with pytest.raises(ValueTooLarge) as err:
        small.put("ns", "keep", "y" * 5000)
    assert err.value.limit == 1000
    for ns, key in [("", "k"), ("ns", ""), ("n\x00s", "k"), ("ns", "k" * 600), (5, "k"), ("ns", None)]:
        with pytest.raises(InvalidKey):
            mem.put(ns, key, "v")
    with pytest.raises(StoreError):
        mem.put("ns", "keep", "v", ttl=-1)
    with pytest.raises(NotSerializable):
        mem.cas("ns", "keep", "original", {1})
    assert mem.get("ns", "keep") == "original"
    assert mem.changes() == before


def test_corrupt_value_is_reported_not_crashed_on(mem):
    mem.put("ns", "good", 1)
    with mem.env.begin(write=True) as txn:  # simulate a foreign writer / bit rot
        txn.put(b"ns\x00bad", b"\xc1\xc1", db=mem._mem)
        txn.put(b"ns\x00empty", b"", db=mem._mem)
        txn.put(b"ns\x00trunc", b"\x93\x01", db=mem._mem)
    for key in ("bad", "empty", "trunc"):
        with pytest.raises(CorruptValue) as err:
            mem.get("ns", key)
        assert f"ns/{key}" in str(err.value)
    mem.put("ns", "bad", "overwritten")  # a corrupt entry can be replaced
    assert mem.get("ns", "bad") == "overwritten"
    assert mem.get("ns", "good") == 1


def test_corrupt_environment_file_is_a_clear_error(run_dir):
    path = os.path.join(run_dir, "garbage")
    os.makedirs(path)
    with open(os.path.join(path, "data.mdb"), "wb") as f:
        f.write(os.urandom(64 * 1024))
    with pytest.raises(CorruptStore) as err:
        Memory(path)
    assert path in str(err.value)


def test_environment_is_reopened_after_fork(mem):
    mem.put("ns", "parent", 1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not reuse the parent's handle
        try:
            mem.put("ns", "child", os.getpid())
            os.write(w, b"ok" if mem.get("ns", "parent") == 1 else b"no")
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 2) == b"ok"
    finally:
        os.waitpid(pid, 0)
        os.close(r)
    assert mem.get("ns", "child") == pid
    assert isinstance(mem.env, lmdb.Environment)


def test_put_many_is_one_batch_with_optional_ttl(mem):
    mem.put_many("ns", [("a", 1), ("b", {"x": 2})])
    mem.put_many("ns", [("short1", 1), ("short2", 2)], ttl=0.2)
    assert dict(mem.items("ns")) == {"a": 1, "b": {"x": 2}, "short1": 1, "short2": 2}
    time.sleep(0.3)
    assert mem.sweep() == 2
    assert dict(mem.items("ns")) == {"a": 1, "b": {"x": 2}}
    with pytest.raises(NotSerializable):
        mem.put_many("ns", [("c", 3), ("d", {1, 2})])   # validated before the transaction
    assert mem.get("ns", "c") is None


def test_key_cache_never_lets_a_bad_key_through(mem, monkeypatch):
    from store import memory as M
    monkeypatch.setattr(M, "FULL_KEY_CACHE", 5)  # forget often: cached and uncached paths both run
    for i in range(20):
        mem.put("project:a", f"k{i}", i)
    assert [mem.get("project:a", f"k{i}") for i in range(20)] == list(range(20))
    for bad_ns, bad_key in [("project:a", "a\x00b"), ("project:a", ""), ("project:a", ["list"]),
                            ("project:a", 7), (["ns"], "k"), ("", "k"), ("project:a", "x" * 600)]:
        with pytest.raises(InvalidKey):
            mem.get(bad_ns, bad_key)
        with pytest.raises(InvalidKey):
            mem.put(bad_ns, bad_key, 1)
    assert all(len(keys) <= 5 for keys in mem._full_keys.values())


def test_unserializable_value_leaves_the_encoder_usable(mem):
    with pytest.raises(NotSerializable):
        mem.put("project:a", "k", {"half": [1, 2], "bad": object()})
    mem.put("project:a", "k", {"fine": True})  # the per-thread Packer reset its buffer
    assert mem.get("project:a", "k") == {"fine": True}


def test_change_feed_reads_entries_of_the_older_msgpack_format(mem):
    import msgpack
    mem.put("project:a", "new", 1)
    legacy_seq = mem.changes()[-1]["seq"] + 1
    with mem.env.begin(write=True) as txn:  # what orchflow wrote before the packed format
        txn.put(legacy_seq.to_bytes(8, "big"), msgpack.packb(("project:a", "old", "delete", 12.5)), db=mem._feed)
    feed = mem.changes()
    assert [(c["ns"], c["key"], c["op"]) for c in feed] == [("project:a", "new", "put"), ("project:a", "old", "delete")]
    assert feed[-1]["ts"] == 12.5


def test_routing_namespaces_stay_out_of_the_change_feed(mem):
    """The broker's outcome records (one per finished task) must not flood memory.changed."""
    mem.put("project:a", "before", 1)
    before = mem.changes()
    mem.put("routing:outcomes", "t1", {"ok": True})
    mem.put_many("routing:outcomes", [(f"t{i}", i) for i in range(2, 50)], ttl=0.05)
    assert mem.delete("routing:outcomes", "t1") is True
    time.sleep(0.1)
    assert mem.sweep() == 48                     # expired outcomes go, unannounced
    assert mem.changes() == before
    mem.put("project:a", "after", 2)
    assert [c["key"] for c in mem.changes(since=before[-1]["seq"])] == ["after"]


def test_values_with_non_string_map_keys_round_trip(mem):
    mem.put("project:a", "ints", {1: "one", 2: [3, {4: 5}]})
    mem.put("project:a", "ints-ttl", {1: "one"}, ttl=60)
    assert mem.get("project:a", "ints") == {1: "one", 2: [3, {4: 5}]}
    assert mem.get("project:a", "ints-ttl") == {1: "one"}
    assert dict(mem.items("project:a")) == {"ints": {1: "one", 2: [3, {4: 5}]}, "ints-ttl": {1: "one"}}
