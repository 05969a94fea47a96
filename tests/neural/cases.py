"""Conformance cases produced by the reference libfann.

Each case is a plain dict: the network file libfann wrote, inputs, and what libfann
computed (outputs, or MSE per epoch and the weights after training).  The same
functions feed the live comparison and ``golden/*.json``, committed so the tests
also run where libfann is not installed.  Regenerate with:

    python tests/neural/cases.py
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, HERE)

import fannlib  # noqa: E402

from neural import fannfile  # noqa: E402

GOLDEN = os.path.join(HERE, "golden")
XOR = os.path.join(HERE, "data", "xor.data")
ACTIVATIONS = list(range(18))
TRAINABLE = [0, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17]
ALGORITHMS = {"incremental": 0, "batch": 1, "rprop": 2, "quickprop": 3, "sarprop": 4}
LAYOUTS = {"standard": [3, 5, 4, 2], "shortcut": [3, 4, 3, 2], "sparse": [4, 6, 5, 2]}


def _saved(lib: ctypes.CDLL, ann: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "net.net")
        lib.fann_save(ann, path.encode())
        with open(path) as f:
            return f.read()


def run_case(lib: ctypes.CDLL, kind: str, hidden_act: int, output_act: int, seed: int) -> dict:
    libc = ctypes.CDLL("libc.so.6")
    libc.srand(seed)
    layers = LAYOUTS[kind]
    ann = fannlib.create(lib, kind, layers)
    lib.fann_set_activation_function_hidden(ann, hidden_act)
    lib.fann_set_activation_function_output(ann, output_act)
    lib.fann_set_activation_steepness_hidden(ann, 0.7)
    lib.fann_set_activation_steepness_output(ann, 1.3)
    lib.fann_randomize_weights(ann, -1.5, 1.5)
    rng = np.random.default_rng(seed)
    inputs = rng.uniform(-2, 2, (16, layers[0]))
    outputs = [fannlib.run(lib, ann, x, layers[-1]).tolist() for x in inputs]
    case = {"kind": kind, "hidden": hidden_act, "output": output_act, "net": _saved(lib, ann),
            "inputs": inputs.tolist(), "outputs": outputs}
    lib.fann_destroy(ann)
    return case


def train_data_text(seed: int, n: int = 24, n_in: int = 3, n_out: int = 2) -> str:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, n_in))
    y = np.tanh(np.stack([x[:, 0] * x[:, 1] + 0.3 * x[:, 2], x[:, 1] - x[:, 2] ** 2], axis=1)[:, :n_out])
    lines = [f"{n} {n_in} {n_out}"]
    for a, b in zip(x, y):
        lines.append(" ".join(f"{v:.17g}" for v in a))
        lines.append(" ".join(f"{v:.17g}" for v in b))
    return "\n".join(lines) + "\n"


def train_case(lib: ctypes.CDLL, kind: str, algorithm: str, seed: int, epochs: int = 25,
               hidden_act: int = 5, output_act: int = 5) -> dict:
    libc = ctypes.CDLL("libc.so.6")
    libc.srand(seed)
    layers = LAYOUTS[kind][:1] + LAYOUTS[kind][1:]
    ann = fannlib.create(lib, kind, layers)
    lib.fann_set_activation_function_hidden(ann, hidden_act)
    lib.fann_set_activation_function_output(ann, output_act)
    lib.fann_randomize_weights(ann, -0.8, 0.8)
    lib.fann_set_training_algorithm(ann, ALGORITHMS[algorithm])
    if algorithm == "incremental":
        # 0.2, not the default 0.7: libfann's sparse incremental update reads the wrong
        # neurons (a quirk we reproduce), and at 0.7 that makes training unstable enough
        # to amplify last-bit summation-order differences after ~10 epochs.
        lib.fann_set_learning_rate(ann, 0.2)
        lib.fann_set_learning_momentum(ann, 0.3)
    initial = _saved(lib, ann)
    data_text = train_data_text(seed, n_in=layers[0], n_out=layers[-1])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "train.data")
        with open(path, "w") as f:
            f.write(data_text)
        data = lib.fann_read_train_from_file(path.encode())
    libc.srand(seed + 1)  # SARPROP draws from rand() during training
    mse = [float(lib.fann_train_epoch(ann, data)) for _ in range(epochs)]
    final = fannfile.parse(_saved(lib, ann))
    lib.fann_destroy_train(data)
    lib.fann_destroy(ann)
    return {"kind": kind, "algorithm": algorithm, "seed": seed, "net": initial, "data": data_text, "mse": mse,
            "weights": [w for _, w in final.connections]}


INIT_DATA = "4 3 2\n0 1 2\n1 0\n-1 0.5 3\n0 1\n2 2 2\n1 1\n-0.5 0 1\n0 0\n"


def init_case(lib: ctypes.CDLL, kind: str, seed: int) -> dict:
    """Weights after srand(seed); fann_randomize_weights, and after srand(seed+1); fann_init_weights."""
    libc = ctypes.CDLL("libc.so.6")
    lib.fann_init_weights.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    ann = fannlib.create(lib, kind, [3, 5, 2])
    net = _saved(lib, ann)
    libc.srand(seed)
    lib.fann_randomize_weights(ann, -0.6, 0.9)
    randomized = [w for _, w in fannfile.parse(_saved(lib, ann)).connections]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "init.data")
        with open(path, "w") as f:
            f.write(INIT_DATA)
        data = lib.fann_read_train_from_file(path.encode())
    libc.srand(seed + 1)
    lib.fann_init_weights(ann, data)
    initialized = [w for _, w in fannfile.parse(_saved(lib, ann)).connections]
    lib.fann_destroy_train(data)
    lib.fann_destroy(ann)
    return {"kind": kind, "seed": seed, "net": net, "randomized": randomized, "initialized": initialized}


def cascade_case(lib: ctypes.CDLL, seed: int, max_neurons: int = 3, algorithm: str = "rprop") -> dict:
    """fann_cascadetrain_on_data on a small problem, with shortened epoch limits so it runs fast."""
    libc = ctypes.CDLL("libc.so.6")
    data_text = train_data_text(seed, n=40, n_in=3, n_out=2)
    ann = fannlib.create(lib, "shortcut", [3, 2])
    lib.fann_set_training_algorithm(ann, ALGORITHMS[algorithm])
    for setter, value in (("fann_set_cascade_max_out_epochs", 40), ("fann_set_cascade_min_out_epochs", 10),
                          ("fann_set_cascade_max_cand_epochs", 40), ("fann_set_cascade_min_cand_epochs", 10)):
        getattr(lib, setter).argtypes = [ctypes.c_void_p, ctypes.c_uint]
        getattr(lib, setter)(ann, value)
    initial = _saved(lib, ann)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "c.data")
        with open(path, "w") as f:
            f.write(data_text)
        data = lib.fann_read_train_from_file(path.encode())
    lib.fann_cascadetrain_on_data.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint,
                                              ctypes.c_float]
    libc.srand(seed)
    lib.fann_cascadetrain_on_data(ann, data, max_neurons, 0, 0.0)
    final = _saved(lib, ann)
    lib.fann_destroy_train(data)
    lib.fann_destroy(ann)
    return {"seed": seed, "max_neurons": max_neurons, "algorithm": algorithm, "net": initial, "data": data_text,
            "final": final}


def all_cases(lib: ctypes.CDLL) -> tuple[list[dict], list[dict]]:
    runs = []
    for kind in LAYOUTS:
        for i, act in enumerate(ACTIVATIONS):
            runs.append(run_case(lib, kind, act, ACTIVATIONS[(i + 5) % len(ACTIVATIONS)], seed=100 + i))
    trains = []
    for kind in LAYOUTS:
        for algorithm in ALGORITHMS:
            trains.append(train_case(lib, kind, algorithm, seed=7))
    for act in TRAINABLE:  # every trainable activation through RPROP's derivatives
        trains.append(train_case(lib, "standard", "rprop", seed=11, hidden_act=act, output_act=act))
    return runs, trains


if __name__ == "__main__":
    library = fannlib.load()
    if library is None:
        sys.exit("libdoublefann.so.2 not found: apt-get install libfann-dev")
    os.makedirs(GOLDEN, exist_ok=True)
    run_cases, train_cases = all_cases(library)
    with open(os.path.join(GOLDEN, "run.json"), "w") as f:
        json.dump(run_cases, f)
    with open(os.path.join(GOLDEN, "train.json"), "w") as f:
        json.dump(train_cases, f)
    with open(os.path.join(GOLDEN, "cascade.json"), "w") as f:
        json.dump([cascade_case(library, seed) for seed in (13, 14)]
                  + [cascade_case(library, seed, algorithm="sarprop") for seed in (15, 16)], f)
    with open(os.path.join(GOLDEN, "init.json"), "w") as f:
        json.dump([init_case(library, kind, 40 + i) for i, kind in enumerate(LAYOUTS)], f)
    print(f"wrote {len(run_cases)} run cases and {len(train_cases)} training cases to {GOLDEN}")
