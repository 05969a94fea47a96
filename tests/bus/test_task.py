"""The journal record of a task: every field, and a lossless round trip."""

from __future__ import annotations

import pytest

from bus.task import _FIELDS, Task, record_from_row


def test_record_has_every_field_and_round_trips():
    task = Task("c-1", "build", {"target": "all"}, "proj", 2, 123.5, 4, 100.0)
    task.attempts, task.state, task.result, task.error = 2, "done", [1, 2], None
    task.finished, task.parents = 101.0, {"a": 1}
    rec = task.to_record()
    assert tuple(rec) == _FIELDS  # spelled out in to_record: must not drift from _FIELDS
    assert rec == {f: getattr(task, f) for f in _FIELDS}
    assert Task.from_record(rec).to_record() == rec
    assert record_from_row(task.to_row()) == rec  # the journal's row: same fields, same order
    assert record_from_row(list(task.to_row())) == rec  # as msgpack gives it back


@pytest.mark.parametrize("row", [None, {"id": "x"}, [], [99] + [None] * len(_FIELDS), [1, "too", "short"]])
def test_anything_but_a_known_row_is_refused(row):
    with pytest.raises(ValueError):
        record_from_row(row)
