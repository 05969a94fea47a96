"""The LMDB environment policy under processes that open and grow the same store, and
what the store does with damage: checksums, verify, salvage."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import time

import msgpack
import pytest

from store import CorruptStore, CorruptValue, InvalidArgument, JournalLocked, Memory, TaskJournal
from store import env as E
from store import verify as V

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT)

WRITER = """
import sys
from store import Memory
m = Memory(sys.argv[1], map_size=1 << 20)
for i in range(int(sys.argv[2])):
    m.put("ns", "k%05d" % i, "%d:" % i + "x" * 4000)
    if i % 100 == 0:
        print(i, flush=True)
print("done", flush=True)
"""

OPENER = "import sys\nfrom store import Memory\nm = Memory(sys.argv[1], map_size=1 << 20)\nm.get('ns', 'k00001')\n"


def mdb_stat(path: str) -> None:
    """Debian's lmdb-utils checks the file independently of py-lmdb, when installed."""
    tool = shutil.which("mdb_stat")
    if tool is None:
        print("mdb_stat not installed (apt-get install lmdb-utils): independent check not run", file=sys.stderr)
        return
    out = subprocess.run([tool, "-a", path], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Status of mem" in out.stdout


def test_processes_opening_a_growing_store_never_shrink_its_file(run_dir):
    """b788953: an opener with a map smaller than the file truncated it; the writer died of SIGBUS."""
    path = os.path.join(run_dir, "mem")
    Memory(path, map_size=1 << 20)
    E.close_env(path)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, path, "6000"], env=ENV, stdout=subprocess.PIPE)
    sizes, opened = [], 0
    try:
        while writer.poll() is None and opened < 200:
            subprocess.run([sys.executable, "-c", OPENER, path], env=ENV, check=True, timeout=60)
            opened += 1
            sizes.append(os.stat(os.path.join(path, "data.mdb")).st_size)
        out = writer.communicate(timeout=120)[0].decode()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(10)
    assert writer.returncode == 0, f"writer died with {writer.returncode}"
    assert out.rstrip().endswith("done")
    assert opened >= 3, "the openers never overlapped the writer"
    assert sizes == sorted(sizes), f"data.mdb shrank: {sizes}"
    assert sizes[-1] >= 16 << 20  # grown past four doublings of the 1 MiB map
    m = Memory(path, map_size=1 << 20)
    values = dict(m.items("ns"))
    assert len(values) == 6000
    assert all(v == f"{int(k[1:])}:" + "x" * 4000 for k, v in values.items())
    mdb_stat(path)


def test_threads_keep_reading_while_another_thread_grows_the_map(run_dir):
    path = os.path.join(run_dir, "mem")
    m = Memory(path, map_size=1 << 20)
    m.put("ns", "fixed", {"v": 1})
    stop, errors, reads = threading.Event(), [], [0]

    def reader() -> None:
        try:
            while not stop.is_set():
                assert m.get("ns", "fixed") == {"v": 1}
                list(m.items("ns", prefix="fix"))
                reads[0] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(3000):
            m.put("ns", f"big{i}", "y" * 5000)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert reads[0] > 0
    assert m.stats()["map_size"] >= 16 << 20
    E.close_env(path)


def _flip_value_bytes(path: str, marker: bytes, count: int, seed: int) -> int:
    """Flip one byte inside each of ``count`` stored values (found by their unique marker)."""
    data_path = os.path.join(path, "data.mdb")
    blob = bytearray(open(data_path, "rb").read())
    rng = random.Random(seed)
    positions = []
    start = 0
    while (at := blob.find(marker, start)) != -1:
        positions.append(at)
        start = at + 1
    chosen = rng.sample(positions, count)
    for at in chosen:
        blob[at + len(marker) + 2] ^= 0x5A
    open(data_path, "wb").write(bytes(blob))
    return len(chosen)


READ_ALL = """
import sys, json
from store import Memory, CorruptValue
m = Memory(sys.argv[1])
ok = wrong = corrupt = 0
for i in range(2000):
    try:
        v = m.get("ns", "k%04d" % i)
    except CorruptValue as exc:
        corrupt += 1
        assert ("ns/k%04d" % i) in str(exc)
        continue
    if v == {"n": i, "pad": "VAL%04d" % i + "z" * 40}:
        ok += 1
    else:
        wrong += 1
print(json.dumps({"ok": ok, "wrong": wrong, "corrupt": corrupt}))
"""


def test_flipped_bytes_in_values_are_reported_never_returned(run_dir):
    """b788953: 300 bit flips returned 72 of 2,000 values silently wrong."""
    import json
    path = os.path.join(run_dir, "mem")
    m = Memory(path)
    m.put_many("ns", [(f"k{i:04d}", {"n": i, "pad": f"VAL{i:04d}" + "z" * 40}) for i in range(2000)])
    E.close_env(path)
    _flip_value_bytes(path, b"VAL", 300, seed=7)  # a few may land in stale copy-on-write pages
    out = subprocess.run([sys.executable, "-c", READ_ALL, path], env=ENV, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    counts = json.loads(out.stdout)
    assert counts["wrong"] == 0
    flipped = counts["corrupt"]
    assert flipped >= 250 and counts["ok"] == 2000 - flipped
    report = V.verify(path)
    assert not report.ok and len(report.damaged_keys) == flipped
    assert "orchflow memory salvage" in report.text()
    result = V.salvage(path, os.path.join(run_dir, "saved"))
    assert result["copied"] == 2000 - flipped and result["damaged"] == flipped
    saved = Memory(os.path.join(run_dir, "saved"))
    assert len(list(saved.items("ns"))) == 2000 - flipped
    assert V.verify(os.path.join(run_dir, "saved")).ok


def test_a_zeroed_page_is_found_by_verify_without_killing_the_caller(run_dir):
    """b788953: a zeroed leaf page aborted the reading process (an LMDB assertion)."""
    path = os.path.join(run_dir, "mem")
    m = Memory(path)
    m.put_many("ns", [(f"k{i:05d}", {"i": i, "pad": "p" * 100}) for i in range(5000)])
    E.close_env(path)
    assert V.verify(path).ok
    data_path = os.path.join(path, "data.mdb")
    blob = bytearray(open(data_path, "rb").read())
    page = 4096
    used = [n for n in range(4, len(blob) // page) if any(blob[n * page:(n + 1) * page])]
    victim = used[len(used) // 2]
    blob[victim * page:(victim + 1) * page] = bytes(page)
    open(data_path, "wb").write(bytes(blob))
    report = V.verify(path)  # the walk runs in a child: an abort there is a finding here
    assert not report.ok
    assert report.problems
    result = V.salvage(path, os.path.join(run_dir, "saved"))
    assert result["copied"] >= 4000  # entries on both sides of the damaged page


def test_bad_ttls_and_deltas_are_refused_and_change_nothing(run_dir):
    """b788953: cas(ttl=-5) returned True with the value already gone; put(ttl=inf),
    cas(ttl='abc') and incr(delta='1') raised raw OverflowError/TypeError."""
    m = Memory(os.path.join(run_dir, "mem"))
    m.put("ns", "k", 1)
    before = m.changes()
    for ttl in (-5, 0, float("inf"), float("nan"), "abc", True, 10 ** 30):
        with pytest.raises(InvalidArgument):
            m.cas("ns", "k", 1, 2, ttl=ttl)
        with pytest.raises(InvalidArgument):
            m.put("ns", "k", 3, ttl=ttl)
    for delta in ("1", None, float("inf"), True, [1]):
        with pytest.raises(InvalidArgument):
            m.incr("ns", "k", delta)
    m.put("ns", "big", 1.7e308)
    with pytest.raises(InvalidArgument):
        m.incr("ns", "big", 1.7e308)
    assert m.get("ns", "k") == 1 and m.changes() == before[:] + m.changes()[len(before):]
    assert [c["key"] for c in m.changes()[len(before):]] == ["big"]


def test_a_store_of_the_format_before_checksums_is_upgraded_in_place(run_dir):
    import lmdb
    path = os.path.join(run_dir, "old")
    env = lmdb.open(path, max_dbs=16)
    mem = env.open_db(b"mem")
    with env.begin(write=True) as txn:
        txn.put(b"ns\x00plain", msgpack.packb({"a": 1}), db=mem)
        expiry = int((time.time() + 60) * 1000)
        txn.put(b"ns\x00ttl", b"\xc1" + expiry.to_bytes(8, "big") + msgpack.packb("soon"), db=mem)
    env.close()
    m = Memory(path)
    assert m.get("ns", "plain") == {"a": 1}
    assert m.get("ns", "ttl") == "soon"
    assert V.verify(path).ok


def test_one_broker_per_journal(run_dir):
    path = os.path.join(run_dir, "journal")
    held = subprocess.Popen([sys.executable, "-c",
                             "import sys, time\nfrom store import TaskJournal\nj = TaskJournal(sys.argv[1])\n"
                             "print('held', flush=True)\ntime.sleep(60)\n", path], env=ENV, stdout=subprocess.PIPE)
    try:
        assert held.stdout.readline().strip() == b"held"
        with pytest.raises(JournalLocked) as err:
            TaskJournal(path)
        assert str(held.pid) in str(err.value)
    finally:
        held.kill()
        held.wait(10)
    j = TaskJournal(path)  # the lock dies with its holder, even a SIGKILLed one
    j.close()


def test_a_garbage_data_file_is_corrupt_store(run_dir):
    path = os.path.join(run_dir, "garbage")
    os.makedirs(path)
    with open(os.path.join(path, "data.mdb"), "wb") as f:
        f.write(os.urandom(64 * 1024))
    with pytest.raises(CorruptStore):
        Memory(path)
    assert not V.verify(path).ok
