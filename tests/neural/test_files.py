"""Network and training-data files: bad input is rejected with an error naming the key."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from neural import FannFormatError, Network, NeuralError, TrainingData

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "golden", "run.json")) as f:
    GOOD = json.load(f)[0]["net"]


def mutate(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize("bad, key", [
    ("", "version"),
    ("FANN_FLO_9.9\n", "version"),
    ("\n".join(GOOD.splitlines()[:10]), "quickprop_decay"),                          # truncated header
    (mutate(GOOD, "learning_rate=", "learning_rat="), "learning_rate"),               # misspelt key
    (mutate(GOOD, "num_layers=4", "num_layers=four"), "num_layers"),
    (mutate(GOOD, "layer_sizes=4 6 5 3 ", "layer_sizes=4 6 5 "), "layer_sizes"),        # count mismatch
    (mutate(GOOD, "layer_sizes=4 6 5 3 ", "layer_sizes=4 60000000 5 3 "), "layer_sizes"),
    (mutate(GOOD, "network_type=0", "network_type=7"), "network_type"),
    (mutate(GOOD, "connections (connected_to_neuron, weight)=(0,", "connections (connected_to_neuron, weight)=(999,"),
     "connections"),
    (GOOD.rsplit("(", 1)[0] + "\n", "connections"),                                     # truncated connections
    (mutate(GOOD, "(4, 0, 6.99", "(4, 99, 6.99"), "neurons"),                            # activation out of range
], ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "file")
def test_bad_network_files_name_the_key(bad, key):
    with pytest.raises(FannFormatError) as err:
        Network.loads(bad)
    assert err.value.key == key


def test_reordered_keys_are_rejected():
    lines = GOOD.splitlines()
    lines[2], lines[3] = lines[3], lines[2]
    with pytest.raises(FannFormatError) as err:
        Network.loads("\n".join(lines))
    assert err.value.key == "learning_rate"


def test_locale_independent_output(monkeypatch):
    import locale
    try:
        locale.setlocale(locale.LC_NUMERIC, "de_DE.UTF-8")
    except locale.Error:
        pass  # the check below holds either way: formatting never consults the locale
    try:
        text = Network.loads(GOOD).dumps()
    finally:
        locale.setlocale(locale.LC_NUMERIC, "C")
    assert "learning_rate=0.700000" in text and "," not in text.split("layer_sizes")[0].split("\n", 1)[1]


def test_training_data_round_trip_and_ops(tmp_path):
    data = TrainingData.load(os.path.join(HERE, "data", "xor.data"))
    assert (data.num_data, data.num_input, data.num_output) == (4, 2, 1)
    data.save(tmp_path / "x.data")
    again = TrainingData.load(tmp_path / "x.data")
    np.testing.assert_array_equal(again.inputs, data.inputs)
    both = data.merge(again)
    assert len(both) == 8 and len(both.subset(2, 3)) == 3
    with pytest.raises(NeuralError):
        both.subset(6, 5)
    both.shuffle(seed=1)
    assert sorted(map(tuple, both.inputs)) == sorted(map(tuple, np.vstack([data.inputs, data.inputs])))


@pytest.mark.parametrize("bad", ["", "2 2", "x 2 1\n", "2 2 1\n1 1\n0\n", "1 2 1\n1 zwei\n0\n", "-1 2 1\n",
                                 "999999999 999 999\n"])
def test_bad_training_data_is_rejected(bad):
    with pytest.raises(FannFormatError):
        TrainingData.loads(bad)


def test_wrong_shapes_are_clear_errors():
    net = Network.create_standard(2, 3, 1, seed=0)
    with pytest.raises(NeuralError):
        net.run([1.0, 2.0, 3.0])
    with pytest.raises(NeuralError):
        net.train_epoch(TrainingData(np.zeros((4, 3)), np.zeros((4, 1))))
    with pytest.raises(NeuralError):
        Network.create_standard(2, 0, 1)
    with pytest.raises(NeuralError):
        net.set(no_such_parameter=1)


def test_training_reduces_error_on_xor():
    data = TrainingData.load(os.path.join(HERE, "data", "xor.data"))
    net = Network.create_standard(2, 3, 1, seed=4)
    net.set_activation(5)  # sigmoid symmetric, as FANN's xor example
    first = net.test(data)
    final = net.train(data, max_epochs=500, desired_error=0.001)
    assert final < 0.001 < first
    assert np.all(np.sign(net.run(data.inputs)) == np.sign(data.outputs))


def test_fixed_point_files_written_by_libfann_load():
    fixed = Network.load(os.path.join(HERE, "data", "fixed.net"))
    source = Network.load(os.path.join(HERE, "data", "fixed_source.net"))  # the float net it was saved from
    np.testing.assert_allclose(fixed.weights, np.round(source.weights * 2**14) / 2**14, atol=0)
    assert fixed.header["bit_fail_limit"] == pytest.approx(0.35, abs=1e-4)
    assert fixed.layers[0].steep[0] == 0.5
    x = np.array([0.2, -0.7])
    np.testing.assert_allclose(fixed.run(x), source.run(x), atol=2e-3)
    # and it is written back in the float format libfann reads
    assert Network.loads(fixed.dumps()).dumps() == fixed.dumps()


def test_scaling_matches_libfann():
    # data/scaled.net: libfann's fann_set_scaling_params(xor, -0.5, 0.8, 0.1, 0.9), then fann_save;
    # it printed scale_input([1, -1]) = [0.79999995231628418, -0.5], descale_output([0.25]) = -0.6249999813735474
    data = TrainingData.load(os.path.join(HERE, "data", "xor.data"))
    net = Network.create_standard(2, 3, 1, seed=0)
    net.set_scaling_params(data, -0.5, 0.8, 0.1, 0.9)
    expected = Network.load(os.path.join(HERE, "data", "scaled.net"))
    # the file holds %f text, so values read back are within 1e-6 of libfann's in-memory floats,
    # which the exact results below check
    assert net.scale.keys() == expected.scale.keys()
    for key in net.scale:
        np.testing.assert_allclose(net.scale[key], expected.scale[key], atol=1e-6)
    np.testing.assert_array_equal(net.scale_input([1.0, -1.0]), [0.79999995231628418, -0.5])
    np.testing.assert_array_equal(net.descale_output([0.25]), [-0.6249999813735474])
    np.testing.assert_allclose(net.descale_input(net.scale_input([0.3, 0.7])), [0.3, 0.7], atol=1e-7)
    scale_lines = [l for l in net.dumps().splitlines() if l.startswith("scale")]
    assert scale_lines == [l for l in expected.dumps().splitlines() if l.startswith("scale")]
    assert Network.loads(expected.dumps()).dumps() == open(os.path.join(HERE, "data", "scaled.net")).read()


def test_scaling_needs_parameters():
    with pytest.raises(NeuralError):
        Network.create_standard(2, 2, 1).scale_input([1, 2])


def test_public_api_setters_sparse_and_scaling_round_trip():
    sparse = Network.create_sparse(0.5, 4, 6, 2, seed=3)
    full = Network.create_standard(4, 6, 2, seed=3)
    assert len(sparse.weights) < len(full.weights)                 # half the connections (bias kept)
    assert Network.loads(sparse.dumps()).dumps() == sparse.dumps()  # sparse layout round-trips
    x = np.array([0.1, -0.4, 0.7, 0.2])
    before = sparse.run(x)
    sparse.set_steepness(1.5, layer=2, neuron=1)                    # one output neuron only
    after = sparse.run(x)
    assert after[0] == before[0] and after[1] != before[1]
    assert "1.50000000000000000000e+00" in sparse.dumps()
    data = TrainingData(np.random.default_rng(0).uniform(5, 9, (20, 4)), np.random.default_rng(1).uniform(0, 1, (20, 2)))
    net = Network.create_standard(4, 3, 2, seed=0)
    net.set_scaling_params(data, -1, 1, -0.8, 0.8)
    scaled = net.scale_train(data)
    assert scaled.inputs.min() >= -3 and scaled.inputs.max() <= 3   # roughly standardized
    back = net.descale_train(scaled)
    np.testing.assert_allclose(back.inputs, data.inputs, rtol=1e-6)
    np.testing.assert_allclose(back.outputs, data.outputs, rtol=1e-6)
    net.clear_scaling_params()
    assert "scale_mean_in" not in net.dumps()
    with pytest.raises(NeuralError):
        net.scale_input([1, 2, 3, 4])
