"""Cascade2's compiled candidate epoch (neural/_jit.py) against the numpy version it
replaced, for every activation function; the golden cascade tests in
test_conformance.py tie both to libfann."""

from __future__ import annotations

import numpy as np
import pytest

from neural import Network, TrainingData, kernels
from neural import cascade as C
from neural.activation import Activation


def setup(functions: list[int], seed: int = 3) -> tuple[Network, C.Candidates, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (120, 4))
    Y = np.tanh(np.stack([X[:, 0] * X[:, 1], X[:, 2] - X[:, 3] ** 2, X[:, 1]], axis=1))
    data = TrainingData(X, Y)
    net = Network.create_shortcut(4, 3, seed=seed)
    net.header["cascade_activation_functions"] = list(functions)
    net.header["cascade_activation_functions_count"] = len(functions)
    net.seed_rand(seed)
    C.train_outputs(net, data, 0.0)
    cand = C.Candidates(net)
    V = net.nonoutput_values(data.inputs)
    E = data.outputs - net.run(data.inputs)
    return net, cand, V, E


@pytest.mark.parametrize("code", list(Activation), ids=[a.name for a in Activation])
def test_candidate_kernel_equals_the_numpy_epoch(code):
    net, cand, V, E = setup([int(code), int(Activation.SIGMOID_SYMMETRIC)])
    kern = kernels.load()
    assert kern is not None
    ST = cand.w_in @ V.T
    errorT, out_slopes, scores = np.empty_like(ST), np.empty_like(cand.w_out), np.empty(len(cand.act))
    kern.candidate_epoch(ST, cand.steep, cand.act, cand.w_out, E, float(net.mse_value), *kernels.TABLE_ARGS,
                         errorT, out_slopes, scores)
    ref_in, ref_out = cand._slopes_numpy(net, V, E)
    np.testing.assert_allclose(-(errorT @ V), ref_in, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out_slopes, ref_out, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(scores, cand.scores, rtol=1e-9, atol=1e-12)


def test_cascade_with_and_without_the_kernel_agree(monkeypatch):
    rng = np.random.default_rng(8)
    X = rng.uniform(-1, 1, (80, 3))
    data = TrainingData(X, np.tanh(X[:, :2] * X[:, 1:]))

    def train() -> Network:
        net = Network.create_shortcut(3, 2, seed=5)
        net.seed_rand(11)
        net.cascade_train(data, 2, 0.0)
        return net

    fast = train()
    monkeypatch.setattr(kernels, "load", lambda: None)
    slow = train()
    assert [l.act.tolist() for l in fast.layers] == [l.act.tolist() for l in slow.layers]
    np.testing.assert_allclose(fast.weights, slow.weights, rtol=1e-6, atol=1e-10)
