"""The durable task journal, alone and behind a broker that gets SIGKILLed."""

from __future__ import annotations

import os
import struct
import time

import msgpack

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bus import Client
from bus.protocol import State
from bus.task import Task
from store import TaskJournal
from store import env as E


@pytest.fixture
def journal(run_dir):
    j = TaskJournal(os.path.join(run_dir, "journal"))
    yield j
    E.close_env(j.path)


def rec(task_id: str, state: str = State.QUEUED, finished: float | None = None) -> Task:
    task = Task(task_id, "k", [1, "x"], "p", 5, None, 3, time.time())
    task.state, task.finished = state, finished
    return task


def test_group_commit_replay_lookup(journal):
    for i in range(100):
        journal.write(rec(f"t{i}"))
    journal.write(rec("t5", State.DONE, finished=time.time()))  # same batch: last write wins
    assert journal.lookup("t1") is None                          # nothing visible before commit
    journal.commit()
    records = {r["id"]: r for r in journal.replay()}
    assert len(records) == 100 and records["t5"]["state"] == State.DONE
    assert journal.lookup("t1")["payload"] == [1, "x"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.text(max_size=3), st.text(alphabet="\U0001f600", min_size=127, max_size=129),
                          st.sampled_from(["t1", "t7", "gone", ""]), st.integers(), st.none(), st.binary(max_size=4)),
                max_size=20))
def test_lookup_many_answers_as_lookup_does_for_any_ids(journal, ids):
    """127 four-byte characters are 508 bytes, 128 are 512: one past LMDB's key limit."""
    if journal.lookup("t1") is None:
        for i in range(10):
            journal.write(rec(f"t{i}"))
        journal.write(rec("\U0001f600" * 127))
        journal.commit()
    expected = {i: journal.lookup(i) for i in ids if isinstance(i, str) and journal.lookup(i) is not None}
    assert journal.lookup_many(ids) == expected


def test_compaction_drops_only_old_finished_records(journal):
    now = time.time()
    journal.write(rec("old", State.DONE, finished=now - 7200))
    journal.write(rec("recent", State.FAILED, finished=now - 10))
    journal.write(rec("queued"))
    journal.commit()
    assert journal.compact(now - 3600) == 1
    assert journal.lookup("old") is None
    assert journal.lookup("recent") is not None and journal.lookup("queued") is not None


def test_corrupt_record_is_skipped_and_counted(journal):
    journal.write(rec("good"))
    journal.commit()
    with journal.env.begin(write=True) as txn:
        txn.put(b"bad", b"\xc1garbage", db=journal._tasks)
    assert [r["id"] for r in journal.replay()] == ["good"]
    assert journal.corrupt == 1


def test_records_and_index_entries_of_the_older_format_are_still_read(journal):
    """What orchflow wrote before rows: dict records, and one index entry per task."""
    now = time.time()
    old = rec("legacy", State.DONE, finished=now - 7200).to_record()
    with journal.env.begin(write=True) as txn:
        txn.put(b"legacy", msgpack.packb(old), db=journal._tasks)
        txn.put(struct.pack(">Q", int(old["finished"] * 1000)) + b"legacy", b"", db=journal._finished)
    assert journal.lookup("legacy") == old
    assert [r["id"] for r in journal.replay()] == ["legacy"]
    journal.write(rec("new", State.DONE, finished=now - 7000))
    journal.commit()
    assert journal.compact(now - 3600) == 2
    assert len(journal) == 0 and journal.corrupt == 0


def test_rows_of_an_unknown_format_are_corrupt_not_misread(journal):
    journal.write(rec("good"))
    journal.commit()
    with journal.env.begin(write=True) as txn:
        txn.put(b"future", msgpack.packb([99, "future", "k"]), db=journal._tasks)
    assert [r["id"] for r in journal.replay()] == ["good"]
    assert journal.corrupt == 1 and journal.lookup("future") is None


def test_records_survive_reopen(run_dir):
    path = os.path.join(run_dir, "j2")
    j = TaskJournal(path)
    j.write(rec("persisted"))
    j.close()  # releases the journal's one-broker lock
    E.close_env(path)
    j = TaskJournal(path)
    assert [r["id"] for r in j.replay()] == ["persisted"]
    j.close()
    E.close_env(path)


def test_broker_sigkill_loses_no_acknowledged_task(procs, run_dir):
    journal = os.path.join(run_dir, "journal")
    procs.broker(journal=journal)
    for i in range(2):
        procs.agent(f"a{i}", capacity=8, kinds="sys.sleep")
    procs.wait_agents(2)
    with Client(procs.endpoints.frontend, ack_timeout=10) as c:
        ids = []
        for _ in range(10):
            ids += c.submit_many("sys.sleep", [0.005] * 1000)  # returned = acknowledged = journaled
        time.sleep(0.5)
        done_before = c.status()["counters"]["done"]
        procs.kill("broker")
        assert done_before < 9000, "the kill must land while most tasks are queued or running"
        procs.broker(journal=journal)
        outcomes = c.results(ids, timeout=240)
    assert len(outcomes) == 10_000
    assert {o["state"] for o in outcomes} == {State.DONE}
    assert sorted(o["id"] for o in outcomes) == sorted(ids)
