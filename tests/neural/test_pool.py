"""The neural worker pool over the bus: registry, micro-batched runs, training with progress."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from bus import Client, TaskFailed
from neural import Network, TrainingData

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def pool(swarm, run_dir):
    swarm.agent("neural0", capacity=256, module="neural.pool", extra=["--memory", os.path.join(run_dir, "memory")])
    swarm.wait_agents(1)
    return swarm


def xor_net() -> Network:
    net = Network.create_standard(2, 3, 1, seed=4)
    net.set_activation(5)
    return net


def test_load_run_and_microbatching(pool):
    net = xor_net()
    with Client(pool.endpoints.frontend, ack_timeout=5) as c:
        loaded = c.call("neural.load", {"name": "xor", "fann": net.dumps()}, timeout=10)
        assert loaded == {"name": "xor", "version": 1, "inputs": 2, "outputs": 1}
        x = [0.5, -0.25]
        assert c.call("neural.run", {"name": "xor", "input": x}, timeout=10) == pytest.approx(net.run(x).tolist(), abs=1e-12)
        batch = np.random.default_rng(0).uniform(-1, 1, (50, 2))
        out = c.call("neural.run", {"name": "xor", "version": 1, "input": batch.tolist()}, timeout=10)
        np.testing.assert_allclose(out, net.run(batch), atol=1e-12)
        # 200 concurrent single-sample requests: one SUBMIT, evaluated in few batches
        inputs = np.random.default_rng(1).uniform(-1, 1, (200, 2))
        ids = c.submit_many("neural.run", [{"name": "xor", "input": row.tolist()} for row in inputs])
        results = [o["result"] for o in c.results(ids, timeout=20)]
        np.testing.assert_allclose(results, net.run(inputs), atol=1e-12)
        stats = c.call("neural.stats", {}, timeout=10)
        assert stats["requests"] == 202 and stats["max_batch"] > 10


def test_training_through_the_pool_makes_a_new_version(pool):
    data = TrainingData.load(os.path.join(HERE, "data", "xor.data"))
    with Client(pool.endpoints.frontend, ack_timeout=5) as c:
        c.call("neural.load", {"name": "xor", "fann": xor_net().dumps()}, timeout=10)
        sub = c.subscribe("task.progress")
        import time
        time.sleep(0.3)
        task = c.submit("neural.train", {"name": "xor", "algorithm": "rprop", "max_epochs": 500,
                                         "desired_error": 0.001, "report_every": 5,
                                         "data": {"inputs": data.inputs.tolist(), "outputs": data.outputs.tolist()}})
        result = c.result(task, timeout=60)
        assert result["version"] == 2 and result["mse"] < 0.001
        progress = []
        while True:
            event = sub.recv(timeout=1)
            if event is None:
                break
            if event[1]["id"] == task:
                progress.append(event[1]["data"])
        assert progress and progress[0]["epoch"] == 5 and all("mse" in p for p in progress)
        out = c.call("neural.run", {"name": "xor", "input": data.inputs.tolist()}, timeout=10)
        assert np.array_equal(np.sign(out), np.sign(data.outputs))
        old = c.call("neural.run", {"name": "xor", "version": 1, "input": data.inputs.tolist()}, timeout=10)
        assert not np.allclose(old, out)  # version 1 is kept as it was
        models = c.call("neural.list", {}, timeout=10)
        assert [(m["name"], m["latest"]) for m in models] == [("xor", 2)]
        assert models[0]["meta"]["trained_from"] == 1


def test_bad_requests_fail_alone(pool):
    with Client(pool.endpoints.frontend, ack_timeout=5) as c:
        c.call("neural.load", {"name": "xor", "fann": xor_net().dumps()}, timeout=10)
        for payload, fragment in [({"name": "nope", "input": [1, 2]}, "no model named"),
                                  ({"name": "xor", "input": [1, 2, 3]}, "takes 2 inputs"),
                                  ({"name": "xor"}, "needs")]:
            with pytest.raises(TaskFailed) as err:
                c.call("neural.run", payload, timeout=10)
            assert fragment in err.value.error
        with pytest.raises(TaskFailed) as err:
            c.call("neural.load", {"name": "broken", "fann": "FANN_FLO_2.1\nnum_layers=x\n"}, timeout=10)
        assert "num_layers" in err.value.error
        assert [m["name"] for m in c.call("neural.list", {}, timeout=10)] == ["xor"]
        assert c.call("neural.run", {"name": "xor", "input": [0, 0]}, timeout=10)  # worker still serving


def _save_versions(memory_path: str, count: int, out) -> None:  # noqa: ANN001
    from neural.pool import ModelRegistry
    from store import Memory
    registry = ModelRegistry(Memory(memory_path))
    out.put([registry.save("shared-model", xor_net(), {"writer": os.getpid()}) for _ in range(count)])


def test_registry_saves_race_safely_with_readers(run_dir):
    """Two processes save the same model while this one lists and loads it: readers
    never see `latest` name a missing version, versions are unique, latest ends at the max."""
    import multiprocessing as mp

    from neural.pool import ModelRegistry
    from store import Memory
    path = os.path.join(run_dir, "memory")
    registry = ModelRegistry(Memory(path))
    for version in (1, 2, 3):  # a registry written before the version counter existed
        registry.memory.put("neural", f"shared-model@{version}", {"fann": xor_net().dumps(), "meta": {"writer": 1}})
    registry.memory.put("neural", "shared-model/latest", 3)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    writers = [ctx.Process(target=_save_versions, args=(path, 15, out)) for _ in range(2)]
    for w in writers:
        w.start()
    try:
        seen = []
        while any(w.is_alive() for w in writers) or not seen:
            for entry in registry.list():  # raised "has no version" before the fix
                seen.append(entry["latest"])
            if registry.memory.get("neural", "shared-model/latest") > 3:
                version, _, meta = registry.load("shared-model")
                assert meta["writer"] > 0 and version >= 4
        versions = out.get(timeout=60) + out.get(timeout=60)
    finally:
        for w in writers:
            w.join(timeout=30)
            if w.is_alive():
                w.kill()
    assert sorted(versions) == list(range(4, 34))             # unique, after the old ones
    assert seen == sorted(seen)                                # latest only moves forward
    assert registry.latest("shared-model") == 33


XOR = {"inputs": [[-1, -1], [-1, 1], [1, -1], [1, 1]], "outputs": [[-1], [1], [1], [-1]]}


def test_create_train_reports_epochs_run_last_epoch_and_warns(pool):
    """b788953: no way to create a network, 'epochs' reported the maximum, progress
    stopped short of the last epoch, and a net that could not learn xor said nothing."""
    with Client(pool.endpoints.frontend, ack_timeout=5) as c, c.subscribe("task.progress") as sub:
        assert sub.wait_live(pool.endpoints.events_in)
        created = c.call("neural.create", {"name": "x", "layers": [2, 4, 1], "seed": 3}, timeout=10)
        assert created["version"] == 1 and created["layers"] == [2, 4, 1]
        task = c.submit("neural.train", {"name": "x", "data": XOR, "max_epochs": 500, "desired_error": 0.001,
                                         "report_every": 7})
        trained = c.result(task, timeout=60)
        assert trained["mse"] <= 0.001 and 0 < trained["epochs"] < 500 and "warning" not in trained
        epochs, deadline = [], time.monotonic() + 5
        while time.monotonic() < deadline and trained["epochs"] not in epochs:
            event = sub.recv(timeout=0.2)
            if event and event[1]["id"] == task:
                epochs.append(event[1]["data"]["epoch"])
        assert epochs[-1] == trained["epochs"]  # the last epoch is reported, whatever report_every says
        c.call("neural.create", {"name": "flat", "layers": [2, 1]}, timeout=10)
        flat = c.call("neural.train", {"name": "flat", "data": XOR, "max_epochs": 100}, timeout=60)
        assert "hardly moved" in flat["warning"]
        with pytest.raises(TaskFailed, match="layers"):
            c.call("neural.create", {"name": "bad", "layers": [2]}, timeout=10)
        with pytest.raises(TaskFailed, match="activation"):
            c.call("neural.create", {"name": "bad", "layers": [2, 1], "activation": "nope"}, timeout=10)


def test_async_client_is_exported_from_bus():
    import bus
    from bus.aclient import AsyncClient
    assert bus.AsyncClient is AsyncClient and "AsyncClient" in bus.__all__
