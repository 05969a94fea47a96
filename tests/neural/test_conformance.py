"""Conformance with libfann 2.2: outputs, training epoch by epoch, and files.

``golden/*.json`` holds what libfann computed (see cases.py), so these tests run
everywhere; where libfann is installed (CI installs libfann-dev) the live tests
also recompute cases on the spot and check that files cross over both ways.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cases  # noqa: E402
import fannlib  # noqa: E402

from neural import Network, TrainingData  # noqa: E402
from neural.activation import Activation  # noqa: E402

with open(os.path.join(HERE, "golden", "run.json")) as f:
    RUN_CASES = json.load(f)
with open(os.path.join(HERE, "golden", "train.json")) as f:
    TRAIN_CASES = json.load(f)

with open(os.path.join(HERE, "golden", "init.json")) as f:
    INIT_CASES = json.load(f)

with open(os.path.join(HERE, "golden", "cascade.json")) as f:
    CASCADE_CASES = json.load(f)

LIB = fannlib.load()
live = pytest.mark.skipif(LIB is None, reason="libdoublefann.so.2 not installed (apt-get install libfann-dev); "
                                                "the golden tests above still compare against its recorded output")


def check_run(case: dict) -> None:
    net = Network.loads(case["net"])
    out = net.run(np.array(case["inputs"]))
    np.testing.assert_allclose(out, np.array(case["outputs"]), rtol=0, atol=1e-9)
    for x, y in zip(case["inputs"][:3], case["outputs"][:3]):  # the single-vector path too
        np.testing.assert_allclose(net.run(x), y, rtol=0, atol=1e-9)


def check_train(case: dict) -> None:
    net = Network.loads(case["net"])
    net.seed_rand(case["seed"] + 1)
    data = TrainingData.loads(case["data"])
    mse = np.array([net.train_epoch(data) for _ in case["mse"]])
    np.testing.assert_allclose(mse, case["mse"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(net.weights, case["weights"], rtol=1e-6, atol=1e-12)


def test_golden_cases_cover_the_issue():
    assert {c["hidden"] for c in RUN_CASES} == set(range(18))
    assert {c["kind"] for c in RUN_CASES} == {"standard", "shortcut", "sparse"}
    assert {c["algorithm"] for c in TRAIN_CASES} == {"incremental", "batch", "rprop", "quickprop", "sarprop"}
    assert all(len(c["mse"]) >= 20 for c in TRAIN_CASES)
    assert {c.get("algorithm", "rprop") for c in CASCADE_CASES} == {"rprop", "sarprop"}


@pytest.mark.parametrize("case", RUN_CASES, ids=lambda c: f"{c['kind']}-{Activation(c['hidden']).name}")
def test_outputs_match_libfann(case):
    check_run(case)


@pytest.mark.parametrize("case", TRAIN_CASES, ids=lambda c: f"{c['kind']}-{c['algorithm']}-{c['seed']}-"
                                                            f"{Network.loads(c['net']).layers[0].act[0]}")
def test_training_matches_libfann_epoch_by_epoch(case):
    check_train(case)


@pytest.mark.parametrize("case", RUN_CASES[::6], ids=lambda c: c["kind"])
def test_files_round_trip_unchanged(case):
    assert Network.loads(case["net"]).dumps() == case["net"]


def check_init(case: dict) -> None:
    net = Network.loads(case["net"])
    net.randomize_weights(-0.6, 0.9, seed=case["seed"])
    assert net.weights.tolist() == case["randomized"]
    net.init_weights(TrainingData.loads(cases.INIT_DATA), seed=case["seed"] + 1)
    assert net.weights.tolist() == case["initialized"]


@pytest.mark.parametrize("case", INIT_CASES, ids=lambda c: c["kind"])
def test_weight_initialization_equals_libfann_bit_for_bit(case):
    check_init(case)


def check_cascade(case: dict) -> None:
    net = Network.loads(case["net"])
    net.seed_rand(case["seed"])
    net.cascade_train(TrainingData.loads(case["data"]), case["max_neurons"], 0.0)
    expected = Network.loads(case["final"])
    assert len(net.layers) == len(expected.layers) == case["max_neurons"] + 1  # one layer per installed neuron
    assert net.header["layer_sizes"] == expected.header["layer_sizes"]
    assert [l.act.tolist() for l in net.layers] == [l.act.tolist() for l in expected.layers]
    assert [l.steep.tolist() for l in net.layers] == [l.steep.tolist() for l in expected.layers]
    np.testing.assert_allclose(net.weights, expected.weights, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("case", CASCADE_CASES, ids=lambda c: f"{c.get('algorithm', 'rprop')}-seed{c['seed']}")
def test_cascade2_equals_libfann(case):
    check_cascade(case)


@live
@pytest.mark.parametrize("algorithm", ["rprop", "sarprop"])  # Quickprop: see cascade.py's docstring
def test_live_cascade2(algorithm):
    check_cascade(cases.cascade_case(LIB, seed=21, algorithm=algorithm))


@live
@pytest.mark.parametrize("kind", list(cases.LAYOUTS))
def test_live_outputs_and_training(kind):
    check_init(cases.init_case(LIB, kind, seed=91))
    check_run(cases.run_case(LIB, kind, Activation.SIGMOID_SYMMETRIC, Activation.ELLIOT, seed=5))
    for algorithm in cases.ALGORITHMS:
        # libfann seeds its own rand() from /dev/urandom when it creates a net, so each run
        # trains a new random sparse net.  libfann's sparse incremental update reads the
        # wrong neurons (a quirk we reproduce, see cases.train_case), which makes training
        # chaotic: over 25 epochs about 1 random net in 150 amplifies last-bit summation-order
        # differences past rtol 1e-6 (measured on this code and on cc571e3 alike: 3/150
        # each; 2/300).  Over 12 epochs: 0/300.  The recorded golden cases keep 25.
        epochs = 12 if (kind, algorithm) == ("sparse", "incremental") else 25
        check_train(cases.train_case(LIB, kind, algorithm, seed=23, epochs=epochs))


@live
def test_files_cross_over_both_ways(tmp_path):
    ours = Network.create_shortcut(4, 3, 2, 2, seed=3)
    ours.set_activation(Activation.GAUSSIAN, layer=2, steepness=0.8)
    path = tmp_path / "ours.net"
    ours.save(path)
    ann = LIB.fann_create_from_file(str(path).encode())
    assert ann, "libfann refused our file"
    back = tmp_path / "back.net"
    LIB.fann_save(ann, str(back).encode())
    x = np.array([0.3, -0.2, 0.9, 0.1])
    np.testing.assert_allclose(fannlib.run(LIB, ann, x, 2), ours.run(x), atol=1e-9)
    LIB.fann_destroy(ann)
    assert back.read_text() == path.read_text()
    assert Network.load(back).dumps() == path.read_text()
