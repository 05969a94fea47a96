"""Large batches take the fused-kernel path (neural/kernels.py), split over the cores
(neural/rowsplit.py).  It must give what the one-row path gives, which the golden
tests tie to libfann, and where libfann is installed, what fann_run gives."""

from __future__ import annotations

import os
import pickle
import sys
import threading

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cases  # noqa: E402
import fannlib  # noqa: E402

from neural import Network, kernels, rowsplit  # noqa: E402
from neural import network as network_module  # noqa: E402
from neural.activation import Activation, _stepwise_scalar  # noqa: E402

LIB = fannlib.load()
ROWS = 300  # 300 x 160 outputs: over KERNEL_MIN_ELEMENTS, and split into parts
CODES = [a for a in Activation]


def make(kind: str = "standard", hidden: int = Activation.SIGMOID_STEPWISE,
         output: int = Activation.SIGMOID_STEPWISE, seed: int = 1) -> Network:
    layers = (24, 160, 96, 8)
    if kind == "shortcut":
        net = Network.create_shortcut(*layers, seed=seed)
    elif kind == "sparse":
        net = Network.create_sparse(0.5, *layers, seed=seed)
    else:
        net = Network.create_standard(*layers, seed=seed)
    net.set_activation(hidden, steepness=0.7)
    net.set_activation(output, layer=len(layers) - 1, steepness=1.3)
    net.randomize_weights(-0.3, 0.3)
    return net


def inputs(seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2, 2, (ROWS, 24))


def row_by_row(net: Network, X: np.ndarray) -> np.ndarray:
    """One row at a time is under KERNEL_MIN_ELEMENTS: the plain numpy path."""
    return np.array([net.run(x) for x in X])


def test_numba_kernels_are_available():
    assert kernels.load() is not None, "numba is a dependency: without it batched run loses its speed"


@pytest.mark.parametrize("hidden", CODES, ids=[a.name for a in CODES])
def test_large_batch_equals_row_by_row_for_every_activation(hidden):
    output = CODES[(CODES.index(hidden) + 5) % len(CODES)]
    net = make(hidden=hidden, output=output)
    X = inputs()
    np.testing.assert_allclose(net.run(X), row_by_row(net, X), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["shortcut", "sparse"])
def test_large_batch_equals_row_by_row_for_other_layouts(kind):
    net = make(kind, Activation.SIGMOID_SYMMETRIC, Activation.LINEAR)
    X = inputs(3)
    np.testing.assert_allclose(net.run(X), row_by_row(net, X), rtol=0, atol=1e-12)


def test_per_neuron_activations_in_a_large_batch():
    net = make(hidden=Activation.SIGMOID_STEPWISE)
    net.set_activation(Activation.GAUSSIAN, layer=1, neuron=3)
    net.set_activation(Activation.ELLIOT_SYMMETRIC, layer=2, neuron=0, steepness=0.2)
    X = inputs(4)
    np.testing.assert_allclose(net.run(X), row_by_row(net, X), rtol=0, atol=1e-12)


def test_stepwise_kernel_is_bit_identical_to_the_c_macro():
    kern = kernels.load()
    for code, (V, R, lo, hi) in kernels.STEPWISE_TABLES.items():
        edges = np.concatenate([V, np.nextafter(V, np.inf), np.nextafter(V, -np.inf)])
        xs = np.concatenate([np.random.default_rng(code).uniform(-4, 4, 4000), edges,
                             [0.0, -0.0, np.inf, -np.inf, np.nan, 1e300, -1e300, 149.9, 151.0]])
        S = xs.reshape(1, -1)
        b, k, lim = np.zeros(len(xs)), np.ones(len(xs)), np.full(len(xs), 150.0)
        out = np.empty_like(S)
        kern.stepwise(S, b, k, lim, V, R, lo, hi, out)
        table = kernels._SIG_STEP if code == Activation.SIGMOID_STEPWISE else kernels._SYM_STEP
        expected = []
        for x in xs:  # fann_run's clip, then the macro
            x = 150.0 if x > 150.0 else (-150.0 if x < -150.0 else x)
            expected.append(_stepwise_scalar(float(x), table))
        assert np.array_equal(out[0], np.array(expected)), Activation(code).name


def test_split_and_unsplit_agree(monkeypatch):
    net = make(hidden=Activation.SIGMOID)
    X = inputs(5)
    split = net.run(X)
    monkeypatch.setattr(rowsplit, "splitter", lambda: None)
    np.testing.assert_allclose(split, net.run(X), rtol=0, atol=1e-13)


def test_numpy_fallback_when_numba_is_missing(monkeypatch):
    net = make(hidden=Activation.SIGMOID_SYMMETRIC_STEPWISE, output=Activation.COS)
    X = inputs(6)
    fast = net.run(X)
    monkeypatch.setattr(kernels, "load", lambda: None)
    np.testing.assert_allclose(net.run(X), fast, rtol=0, atol=1e-12)


def test_splitter_on_a_multicore_machine_with_openblas():
    if rowsplit.cores() > 1:
        assert rowsplit.splitter() is not None, "numpy's OpenBLAS lacks openblas_set_num_threads_local"
    else:
        assert rowsplit.splitter() is None


def test_row_splitter_runs_every_part_and_passes_errors_on():
    calls: list[int] = []
    splitter = rowsplit.RowSplitter(3, lambda n: 1)
    assert splitter.run(calls.append)
    assert sorted(calls) == [0, 1, 2]

    def fail(part: int) -> None:
        if part == 2:
            raise ValueError("part 2 failed")

    with pytest.raises(ValueError, match="part 2"):
        splitter.run(fail)
    calls.clear()
    assert splitter.run(calls.append)  # still usable afterwards
    assert sorted(calls) == [0, 1, 2]


def test_concurrent_callers_all_get_their_own_results():
    nets = [make(hidden=Activation.SIGMOID_STEPWISE, seed=s) for s in range(4)]
    X = inputs(8)
    expected = [net.run(X) for net in nets]
    failures: list[str] = []

    def worker(i: int) -> None:
        for _ in range(15):
            if not np.array_equal(nets[i].run(X), expected[i]):
                failures.append(f"thread {i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert failures == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_runs_large_batches():
    net = make()
    X = inputs(9)
    expected = net.run(X)  # the parent has started its helper threads
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: its helper threads did not survive the fork
        try:
            os.close(r)
            with os.fdopen(w, "wb") as f:
                pickle.dump(net.run(X), f)
        finally:
            os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            got = pickle.load(f)
    finally:
        os.waitpid(pid, 0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13)


def test_threshold_keeps_small_batches_off_the_kernels(monkeypatch):
    used: list[int] = []
    original = network_module.Network._run_kernels

    def spy(self, kern, plan, X):  # noqa: ANN001
        used.append(X.shape[0])
        return original(self, kern, plan, X)

    monkeypatch.setattr(network_module.Network, "_run_kernels", spy)
    net = make()
    net.run(inputs()[:10])
    assert used == []
    net.run(inputs())
    assert used == [ROWS]


@pytest.mark.skipif(LIB is None, reason="libdoublefann.so.2 not installed (apt-get install libfann-dev); "
                                         "the tests above tie this path to the golden-tested one")
@pytest.mark.parametrize("hidden", CODES, ids=[a.name for a in CODES])
def test_live_large_batch_equals_fann_run(hidden):
    output = CODES[(CODES.index(hidden) + 3) % len(CODES)]
    layers = [24, 160, 96, 8]
    ann = fannlib.create(LIB, "standard", layers)
    try:
        LIB.fann_set_activation_function_hidden(ann, int(hidden))
        LIB.fann_set_activation_function_output(ann, int(output))
        LIB.fann_set_activation_steepness_hidden(ann, 0.7)
        LIB.fann_set_activation_steepness_output(ann, 1.3)
        LIB.fann_randomize_weights(ann, -0.3, 0.3)
        net = Network.loads(cases._saved(LIB, ann))
        X = inputs(10)
        theirs = np.array([fannlib.run(LIB, ann, x, layers[-1]) for x in X])
    finally:
        LIB.fann_destroy(ann)
    np.testing.assert_allclose(net.run(X), theirs, rtol=0, atol=1e-9)


def test_network_still_copies_and_pickles_after_large_batches():
    import copy
    net = make()
    X = inputs(11)
    expected = net.run(X)  # leaves per-thread buffers behind
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        np.testing.assert_array_equal(clone.run(X), expected)
