"""A FANN 2.2 network in numpy: same file format, same outputs, same training steps.

Internally each non-input layer is a dense weight matrix over the contiguous range
of neurons it may read from (the previous layer for standard and sparse nets, all
earlier neurons for shortcut nets), with a mask for connections a sparse net lacks.
One matrix product per layer then serves a single input or a batch of thousands.
FANN's flat (neuron, connection) lists are kept only as the mapping used to read
and write files, so a file round-trips unchanged.

Where libfann computes with C ``float`` (its training parameters, the MSE
accumulator, batch epsilon) this code rounds to float32 at the same points: that is
what makes epoch-by-epoch MSE and weights match libfann's.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from operator import mul
from typing import Any

import numexpr as ne
import numpy as np

from . import fannfile, kernels, rowsplit
from .activation import SCALAR, SYMMETRIC, Activation, activate, derivative
from .data import TrainingData
from .errors import NeuralError
from .glibc_rand import GlibcRandom

LAYER, SHORTCUT = 0, 1
INCREMENTAL, BATCH, RPROP, QUICKPROP, SARPROP = range(5)
ERROR_LINEAR, ERROR_TANH = 0, 1
STOP_MSE, STOP_BIT = 0, 1

_f32 = np.float32


def f32(x: float) -> float:
    """A C ``float`` parameter as libdoublefann sees it: rounded to float32, used as double."""
    return float(_f32(x))


DEFAULT_HEADER: dict[str, Any] = {
    "learning_rate": 0.7, "connection_rate": 1.0, "network_type": 0, "learning_momentum": 0.0,
    "training_algorithm": RPROP, "train_error_function": ERROR_TANH, "train_stop_function": STOP_MSE,
    "cascade_output_change_fraction": 0.01, "quickprop_decay": -0.0001, "quickprop_mu": 1.75,
    "rprop_increase_factor": 1.2, "rprop_decrease_factor": 0.5, "rprop_delta_min": 0.0, "rprop_delta_max": 50.0,
    "rprop_delta_zero": 0.1, "cascade_output_stagnation_epochs": 12, "cascade_candidate_change_fraction": 0.01,
    "cascade_candidate_stagnation_epochs": 12, "cascade_max_out_epochs": 150, "cascade_min_out_epochs": 50,
    "cascade_max_cand_epochs": 150, "cascade_min_cand_epochs": 50, "cascade_num_candidate_groups": 2,
    "bit_fail_limit": 0.35, "cascade_candidate_limit": 1000.0, "cascade_weight_multiplier": 0.4,
    "cascade_activation_functions_count": 10, "cascade_activation_functions": [3, 5, 7, 8, 10, 11, 14, 15, 16, 17],
    "cascade_activation_steepnesses_count": 4, "cascade_activation_steepnesses": [0.25, 0.5, 0.75, 1.0],
    "scale_included": 0,
}
#: Networks with at most this many connections run single vectors in plain Python
#: floats: for a 2-3-3-1 net that is ~10x faster than numpy's per-call overhead.
SMALL_NET_CONNECTIONS = 400

#: Batches of at least this many layer outputs use the compiled kernels (the row
#: split's hand-off and the workspace pay off from here on).
KERNEL_MIN_ELEMENTS = 16384
#: Rows per part, at least, when a batch is split over the cores.
SPLIT_MIN_ROWS = 64

_CLIP = "where((s + b) * k > lim, lim, where((s + b) * k < -lim, -lim, (s + b) * k))"

#: Not stored in FANN files but part of a network's training state.
SARPROP_DEFAULTS = {"sarprop_weight_decay_shift": -6.644, "sarprop_step_error_threshold_factor": 0.1,
                    "sarprop_step_error_shift": 1.385, "sarprop_temperature": 0.015}


@dataclass
class Layer:
    n0: int                    # first computed neuron (global index)
    n1: int                    # one past the last computed neuron
    s0: int                    # first source neuron
    s1: int                    # one past the last source neuron
    W: np.ndarray              # (n1-n0, s1-s0) weights, zero where no connection
    mask: np.ndarray | None    # same shape, bool; None when fully connected
    act: np.ndarray            # (n,) activation codes
    steep: np.ndarray          # (n,) steepness
    _groups: list[tuple[int, np.ndarray]] | None = field(default=None, repr=False)

    def groups(self) -> list[tuple[int, np.ndarray]]:
        """Columns per activation function; cached, reset by :meth:`Network._changed`."""
        if self._groups is None:
            codes = np.unique(self.act)
            if len(codes) == 1:  # the common case: a slice, not fancy indexing
                self._groups = [(int(codes[0]), slice(0, len(self.act)))]
            else:
                self._groups = [(int(code), np.flatnonzero(self.act == code)) for code in codes]
        return self._groups


def sarprop_cells(cells: Any, constants: tuple[float, ...], rand: GlibcRandom) -> None:
    """The loop of fann_update_weights_sarprop over ``(W, slopes, steps, prev_slopes,
    index)`` cells in FANN's weight order, updating them in place.

    Kept from libfann: steps start at 0 (not delta_zero); ``next_step`` is declared
    once outside the loop, so a weight whose slope product is 0 stores the step of
    the weight before it; rand() is drawn only on the shrink branch.
    """
    inc, dec, dmin, dmax, decay_factor, noise_factor, limit, rmse = constants
    next_step = 0.0
    for W, g, steps, prev_slopes, idx in cells:
        prev_step = max(float(steps[idx]), 0.000001)
        slope = -float(g[idx]) - float(W[idx]) * decay_factor
        same = float(prev_slopes[idx]) * slope
        if same > 0.0:
            next_step = min(prev_step * inc, dmax)
            W[idx] += next_step if slope < 0.0 else -next_step
        elif same < 0.0:
            if prev_step < limit:
                noise = _f32(_f32(_f32(rand.rand()) / _f32(2147483647)) * _f32(rmse))
                next_step = prev_step * dec + float(noise) * noise_factor
            else:
                next_step = max(prev_step * dec, dmin)
            slope = 0.0
        else:
            W[idx] += prev_step if slope < 0.0 else -prev_step
        steps[idx] = next_step
        prev_slopes[idx] = slope


class Network:
    """See the module docstring; construct with :meth:`create_standard`, :meth:`load`, ..."""

    def __init__(self, ff: fannfile.FannFile) -> None:
        self.header = dict(ff.header)
        # libfann keeps scaling parameters in C float arrays
        self.scale = {k: [f32(v) for v in vals] for k, vals in ff.scale.items()}
        self.params = dict(SARPROP_DEFAULTS)
        self.sizes: list[int] = list(self.header["layer_sizes"])
        self.network_type = int(self.header["network_type"])
        self.connection_rate = float(self.header["connection_rate"])
        self.total = sum(self.sizes)
        firsts = np.cumsum([0] + self.sizes[:-1])
        self.first = [int(f) for f in firsts]
        self.num_input = self.sizes[0] - 1
        has_bias = [True] + [self.network_type == LAYER] * (len(self.sizes) - 1)
        self.bias_cols = [self.first[i] + self.sizes[i] - 1 for i in range(len(self.sizes)) if has_bias[i]]
        self.num_output = self.sizes[-1] - (1 if has_bias[-1] else 0)
        neurons = ff.neurons
        offsets = np.cumsum([0] + [n for n, _, _ in neurons])
        self._conn_src = np.array([c for c, _ in ff.connections], dtype=np.int64)
        weights = np.array([w for _, w in ff.connections], dtype=np.float64)
        self._conn_layer = np.empty(len(weights), dtype=np.int64)
        self._conn_row = np.empty(len(weights), dtype=np.int64)
        self._conn_col = np.empty(len(weights), dtype=np.int64)
        self._neuron_meta = [(a, s) for _, a, s in neurons]
        self.layers: list[Layer] = []
        for li in range(1, len(self.sizes)):
            n0 = self.first[li]
            n1 = n0 + self.sizes[li] - (1 if has_bias[li] else 0)
            if any(neurons[n][0] == 0 for n in range(n0, n1)):
                raise NeuralError(f"layer {li} has a neuron without inputs where one is computed")
            c0, c1 = int(offsets[n0]), int(offsets[n1])
            srcs = self._conn_src[c0:c1]
            if len(srcs) == 0 or srcs.max() >= n0:
                raise NeuralError(f"layer {li}: a connection reads a neuron that is not before it")
            s0 = self.first[li - 1] if self.network_type == LAYER else 0
            s0 = min(s0, int(srcs.min()))
            s1 = n0
            W = np.zeros((n1 - n0, s1 - s0))
            mask = np.zeros(W.shape, dtype=bool)
            for n in range(n0, n1):
                for c in range(int(offsets[n]), int(offsets[n + 1])):
                    row, col = n - n0, int(self._conn_src[c]) - s0
                    if mask[row, col]:
                        raise NeuralError(f"neuron {n} is connected to neuron {col + s0} twice")
                    W[row, col] = weights[c]
                    mask[row, col] = True
                    self._conn_layer[c], self._conn_row[c], self._conn_col[c] = li - 1, row, col
            act = np.array([neurons[n][1] for n in range(n0, n1)], dtype=np.int64)
            steep = np.array([neurons[n][2] for n in range(n0, n1)], dtype=np.float64)
            self.layers.append(Layer(n0, n1, s0, s1, W, None if mask.all() else mask, act, steep))
        self._offsets = offsets
        self._plan = None
        self._infer = None
        self.reset_training()

    # ------------------------------------------------------------------ construction

    @classmethod
    def _build(cls, sizes: list[int], network_type: int, connection_rate: float, rng: np.random.Generator,
               **header: Any) -> "Network":
        if len(sizes) < 2 or any(int(s) <= 0 for s in sizes):
            raise NeuralError(f"layer sizes must be >= 2 positive integers, got {sizes}")
        h = dict(DEFAULT_HEADER, **header)
        bias = network_type == LAYER
        layer_sizes = [sizes[0] + 1] + [s + (1 if bias else 0) for s in sizes[1:]]
        h.update(num_layers=len(sizes), layer_sizes=layer_sizes, network_type=network_type,
                 connection_rate=connection_rate)
        neurons, connections = [], []
        first = np.cumsum([0] + layer_sizes[:-1])
        for li, size in enumerate(layer_sizes):
            computed = size - (1 if (li == 0 or bias) else 0)
            for k in range(size):
                if li == 0 or k >= computed:
                    neurons.append((0, 0, 0.0))
                    continue
                if network_type == SHORTCUT:
                    srcs = list(range(int(first[li])))
                else:
                    prev = list(range(int(first[li - 1]), int(first[li - 1] + layer_sizes[li - 1])))
                    srcs = prev
                    if connection_rate < 1:
                        keep = max(1, int(round(connection_rate * len(prev))))
                        srcs = sorted(rng.choice(prev[:-1], size=min(keep, len(prev) - 1), replace=False).tolist())
                        srcs.append(prev[-1])  # always keep the bias
                neurons.append((len(srcs), int(Activation.SIGMOID_STEPWISE), 0.5))
                connections.extend((s, float(rng.uniform(-0.1, 0.1))) for s in srcs)
        return cls(fannfile.FannFile(h, neurons, connections))

    @classmethod
    def create_standard(cls, *layers: int, seed: int | None = None) -> "Network":
        return cls._build(list(layers), LAYER, 1.0, np.random.default_rng(seed))

    @classmethod
    def create_sparse(cls, connection_rate: float, *layers: int, seed: int | None = None) -> "Network":
        if not 0 < connection_rate <= 1:
            raise NeuralError("connection_rate must be in (0, 1]")
        return cls._build(list(layers), LAYER, float(connection_rate), np.random.default_rng(seed))

    @classmethod
    def create_shortcut(cls, *layers: int, seed: int | None = None) -> "Network":
        return cls._build(list(layers), SHORTCUT, 1.0, np.random.default_rng(seed))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Network":
        with open(path, encoding="ascii", errors="strict") as f:
            return cls(fannfile.parse(f.read()))

    @classmethod
    def loads(cls, text: str) -> "Network":
        return cls(fannfile.parse(text))

    def to_fann(self) -> fannfile.FannFile:
        neurons = []
        for n in range(self.total):
            count = int(self._offsets[n + 1] - self._offsets[n])
            act, steep = self._neuron_meta[n]
            neurons.append((count, int(act), float(steep)))
        for layer in self.layers:  # activation/steepness may have been changed by setters
            for k, n in enumerate(range(layer.n0, layer.n1)):
                neurons[n] = (neurons[n][0], int(layer.act[k]), float(layer.steep[k]))
        weights = [float(self.layers[li].W[r, c]) for li, r, c in zip(self._conn_layer, self._conn_row, self._conn_col)]
        return fannfile.FannFile(self.header, neurons, list(zip(self._conn_src.tolist(), weights)), self.scale)

    def save(self, path: str | os.PathLike) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(fannfile.render(self.to_fann()))
        os.replace(tmp, path)

    def dumps(self) -> str:
        return fannfile.render(self.to_fann())

    # ------------------------------------------------------------------ parameters

    @property
    def training_algorithm(self) -> int:
        return int(self.header["training_algorithm"])

    @training_algorithm.setter
    def training_algorithm(self, value: int) -> None:
        self.header["training_algorithm"] = int(value)
        self.reset_training()

    def set(self, **params: Any) -> None:
        """Set header parameters by FANN name (learning_rate=..., rprop_delta_max=..., ...)."""
        for key, value in params.items():
            if key in self.params:
                self.params[key] = value
            elif key in self.header and key not in ("layer_sizes", "num_layers", "network_type", "connection_rate"):
                self.header[key] = value
            else:
                raise NeuralError(f"unknown or read-only parameter {key!r}")

    def set_activation(self, function: int, layer: int | None = None, neuron: int | None = None,
                       steepness: float | None = None) -> None:
        """Per network (layer=None), per layer, or per neuron; layer 1 is the first hidden layer."""
        targets = self.layers if layer is None else [self._layer(layer)]
        for lay in targets:
            idx = slice(None) if neuron is None else neuron
            lay.act[idx] = int(function)
            if steepness is not None:
                lay.steep[idx] = steepness
        self._changed()

    def set_steepness(self, steepness: float, layer: int | None = None, neuron: int | None = None) -> None:
        targets = self.layers if layer is None else [self._layer(layer)]
        for lay in targets:
            lay.steep[slice(None) if neuron is None else neuron] = steepness
        self._changed()

    def __getstate__(self) -> dict[str, Any]:
        """All but the per-thread run buffers (threading.local does not pickle; they
        are rebuilt on demand), so networks copy and pickle as before."""
        state = self.__dict__.copy()
        state.pop("_workspace", None)
        return state

    def _changed(self) -> None:
        """Weights, activations or steepnesses changed: drop what was derived from them."""
        self._plan = None
        self._infer = None
        for lay in self.layers:
            lay._groups = None

    def _layer(self, layer: int) -> Layer:
        if not 1 <= layer <= len(self.layers):
            raise NeuralError(f"layer {layer} out of range 1..{len(self.layers)}")
        return self.layers[layer - 1]

    @property
    def weights(self) -> np.ndarray:
        """All weights in FANN's connection order."""
        return np.array([self.layers[li].W[r, c] for li, r, c in zip(self._conn_layer, self._conn_row, self._conn_col)])

    def _fann_rand(self, low: float, high: float) -> float:
        """FANN's fann_rand macro, in C float arithmetic, from the glibc rand() replica."""
        lo, hi = _f32(low), _f32(high)
        return float(lo + _f32(_f32(hi - lo) * _f32(self._rand.rand())) / _f32(2147483648.0))

    def _set_weights_in_order(self, values: list[float]) -> None:
        for value, li, r, c in zip(values, self._conn_layer, self._conn_row, self._conn_col):
            self.layers[li].W[r, c] = value
        self._changed()
        self.reset_training()

    def randomize_weights(self, low: float = -0.1, high: float = 0.1, seed: int | None = None) -> None:
        """fann_randomize_weights: uniform in [low, high) in FANN's connection order.

        With ``seed`` the draws come from glibc's rand() after srand(seed), so the
        weights equal libfann's after ``srand(seed); fann_randomize_weights(...)``.
        """
        if seed is not None:
            self.seed_rand(seed)
        self._set_weights_in_order([self._fann_rand(low, high) for _ in range(len(self._conn_src))])

    def init_weights(self, data: TrainingData, seed: int | None = None) -> None:
        """fann_init_weights (Widrow + Nguyen): bias connections in +-s, others in [0, s),
        s = (0.7 * hidden)^(1/inputs) / (largest - smallest input)."""
        self._check_data(data)
        if seed is not None:
            self.seed_rand(seed)
        smallest, largest = float(data.inputs.min()), float(data.inputs.max())
        hidden = self.total - (self.num_input + self.num_output + len(self.sizes))
        scale = float(_f32((0.7 * hidden) ** (1.0 / self.num_input) / (largest - smallest)))
        bias_of = {}
        for li in range(1, len(self.sizes)):
            prev = li - 1 if self.network_type == LAYER else 0
            bias_of[li - 1] = self.first[prev] + self.sizes[prev] - 1
        values = [self._fann_rand(-scale, scale) if src == bias_of[li] else self._fann_rand(0.0, scale)
                  for src, li in zip(self._conn_src.tolist(), self._conn_layer.tolist())]
        self._set_weights_in_order(values)

    # ------------------------------------------------------------------ scaling

    def _scale_params(self, where: str, data: np.ndarray, new_min: float, new_max: float) -> None:
        """FANN's SCALE_SET_PARAM: float32 mean and deviation, accumulated in data order."""
        cols = data.astype(np.float32)
        n = _f32(len(cols))
        if len(cols) == 0:
            width = data.shape[1]
            mean, dev = [0.0] * width, [1.0] * width
            new_min, factor = -1.0, 1.0
        else:
            mean = [float(np.cumsum(c, dtype=np.float32)[-1] / n) for c in cols.T]
            dev = []
            for c, m in zip(cols.T, mean):
                d = (c - _f32(m)).astype(np.float32)
                dev.append(float(_f32(np.sqrt(float(np.cumsum(d * d, dtype=np.float32)[-1] / n)))))
            factor = float(_f32(_f32(_f32(new_max) - _f32(new_min)) / _f32(2.0)))
        width = len(mean)
        self.scale[f"scale_mean_{where}"] = mean
        self.scale[f"scale_deviation_{where}"] = dev
        self.scale[f"scale_new_min_{where}"] = [f32(new_min)] * width
        self.scale[f"scale_factor_{where}"] = [factor] * width
        for other in ("in", "out"):  # a file always carries both halves once scaling is on
            if f"scale_mean_{other}" not in self.scale:
                k = self.num_input if other == "in" else self.num_output
                self.scale.update({f"scale_mean_{other}": [0.0] * k, f"scale_deviation_{other}": [1.0] * k,
                                   f"scale_new_min_{other}": [-1.0] * k, f"scale_factor_{other}": [1.0] * k})
        self.header["scale_included"] = 1

    def set_scaling_params(self, data: TrainingData, new_input_min: float = -1.0, new_input_max: float = 1.0,
                           new_output_min: float = -1.0, new_output_max: float = 1.0) -> None:
        """fann_set_scaling_params: remember how to map data into the given ranges."""
        self._check_data(data)
        self._scale_params("in", data.inputs, new_input_min, new_input_max)
        self._scale_params("out", data.outputs, new_output_min, new_output_max)

    def clear_scaling_params(self) -> None:
        self.scale = {}
        self.header["scale_included"] = 0

    def _scaling(self, where: str) -> tuple[np.ndarray, ...]:
        if not self.header.get("scale_included"):
            raise NeuralError("no scaling parameters: call set_scaling_params first")
        return tuple(np.array(self.scale[f"scale_{k}_{where}"]) for k in ("mean", "deviation", "new_min", "factor"))

    def _scale(self, x: Any, where: str) -> np.ndarray:
        mean, dev, new_min, factor = self._scaling(where)
        return ((np.asarray(x, dtype=np.float64) - mean) / dev - (-1.0)) * factor + new_min

    def _descale(self, x: Any, where: str) -> np.ndarray:
        mean, dev, new_min, factor = self._scaling(where)
        return ((np.asarray(x, dtype=np.float64) - new_min) / factor + (-1.0)) * dev + mean

    def scale_input(self, x: Any) -> np.ndarray:
        return self._scale(x, "in")

    def descale_input(self, x: Any) -> np.ndarray:
        return self._descale(x, "in")

    def scale_output(self, y: Any) -> np.ndarray:
        return self._scale(y, "out")

    def descale_output(self, y: Any) -> np.ndarray:
        return self._descale(y, "out")

    def scale_train(self, data: TrainingData) -> TrainingData:
        return TrainingData(self.scale_input(data.inputs), self.scale_output(data.outputs))

    def descale_train(self, data: TrainingData) -> TrainingData:
        return TrainingData(self.descale_input(data.inputs), self.descale_output(data.outputs))

    # ------------------------------------------------------------------ running

    def _forward(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        B = X.shape[0]
        V = np.empty((B, self.total))
        S = np.zeros((B, self.total))
        V[:, : self.num_input] = X
        V[:, self.bias_cols] = 1.0
        for lay in self.layers:
            s = V[:, lay.s0:lay.s1] @ lay.W.T
            s *= lay.steep
            lim = 150.0 / lay.steep
            np.minimum(s, lim, out=s)
            np.maximum(s, -lim, out=s)
            S[:, lay.n0:lay.n1] = s
            out = V[:, lay.n0:lay.n1]
            for code, cols in lay.groups():
                out[:, cols] = activate(code, s[:, cols])
        return V, S

    def _output_cols(self) -> slice:
        last = self.layers[-1]
        return slice(last.n0, last.n0 + self.num_output)

    def _small_plan(self) -> list[tuple[int, int, list[tuple[list[float], float, float, Any]]]] | None:
        plan = getattr(self, "_plan", None)
        if plan is None and len(self._conn_src) <= SMALL_NET_CONNECTIONS:
            plan = [(lay.s0, lay.s1, [(lay.W[k].tolist(), float(lay.steep[k]), 150.0 / float(lay.steep[k])
                                       if lay.steep[k] else float("inf"), SCALAR[int(lay.act[k])])
                                      for k in range(lay.n1 - lay.n0)]) for lay in self.layers]
            self._plan = plan
        return plan

    def _run_small(self, x: np.ndarray, plan: list) -> np.ndarray:
        vals = [1.0] * self.total
        vals[: self.num_input] = x.tolist()
        pos = self.num_input + 1
        for s0, s1, rows in plan:
            window = vals[s0:s1]
            for weights, steep, lim, fn in rows:
                s = sum(map(mul, weights, window)) * steep
                if s > lim:
                    s = lim
                elif s < -lim:
                    s = -lim
                vals[pos] = fn(s)
                pos += 1
            if self.network_type == LAYER:
                pos += 1  # the layer's bias neuron keeps its 1.0
        cols = self._output_cols()
        return np.array(vals[cols.start:cols.stop])

    def _inference_plan(self) -> list[tuple[list[int], np.ndarray, np.ndarray, Layer, np.ndarray]]:
        """Per layer: which earlier layers it reads, its weights over their *computed*
        neurons (contiguous, transposed for the matmul), a bias vector folded from
        the bias-neuron columns, and fann_run's clip bound.  Each layer's activations
        then live in their own contiguous array: no strided writes into one
        all-neurons matrix."""
        if self._infer is not None:
            return self._infer
        bias = set(self.bias_cols)
        computed = [list(range(self.num_input))] + [list(range(l.n0, l.n1)) for l in self.layers]
        plan = []
        for li, lay in enumerate(self.layers):
            src_layers = [li] if self.network_type == LAYER else list(range(li + 1))
            sources = [g for k in src_layers for g in computed[k]]
            pos = {g: i for i, g in enumerate(sources)}
            w_eff = np.zeros((lay.n1 - lay.n0, len(sources)))
            b = np.zeros(lay.n1 - lay.n0)
            for col in range(lay.s1 - lay.s0):
                g = lay.s0 + col
                if g in bias:
                    b += lay.W[:, col]
                elif g in pos:
                    w_eff[:, pos[g]] = lay.W[:, col]
                elif lay.mask is None or lay.mask[:, col].any():
                    raise NeuralError(f"layer {li + 1} reads neuron {g}, which is not an earlier layer's")
            with np.errstate(divide="ignore"):
                lim = 150.0 / lay.steep  # fann_run's clip bound (inf for steepness 0)
            plan.append((src_layers, np.ascontiguousarray(w_eff.T), b, lay, lim))
        self._infer = plan
        return plan

    def _run_batch(self, X: np.ndarray) -> np.ndarray:
        plan = self._inference_plan()
        if X.shape[0] * max(entry[1].shape[1] for entry in plan) >= KERNEL_MIN_ELEMENTS:
            kern = kernels.load()
            if kern is not None:
                return self._run_kernels(kern, plan, X)[:, : self.num_output]
        acts = [np.ascontiguousarray(X)]
        for src_layers, wt, b, lay, lim in plan:
            src = acts[src_layers[0]] if len(src_layers) == 1 else np.hstack([acts[k] for k in src_layers])
            s = src @ wt
            if s.size >= 4096:  # bias, steepness and FANN's clip in one numexpr pass
                s = ne.evaluate(_CLIP, local_dict={"s": s, "b": b, "k": lay.steep, "lim": lim})
            else:
                s += b
                s *= lay.steep
                np.minimum(s, lim, out=s)
                np.maximum(s, -lim, out=s)
            groups = lay.groups()
            if len(groups) == 1:
                out = activate(groups[0][0], s)
            else:
                out = np.empty_like(s)
                for code, cols in groups:
                    out[:, cols] = activate(code, s[:, cols])
            acts.append(out)
        return acts[-1][:, : self.num_output]

    def _run_kernels(self, kern: Any, plan: list, X: np.ndarray) -> np.ndarray:
        """Large batches: rows split over the cores (see :mod:`neural.rowsplit`), each
        part a BLAS product and one fused kernel per layer."""
        X = np.ascontiguousarray(X)
        rows = X.shape[0]
        out = np.empty((rows, plan[-1][1].shape[1]))
        split = rowsplit.splitter() if rows >= 2 * SPLIT_MIN_ROWS else None
        if split is not None:
            parts = min(split.parts, rows // SPLIT_MIN_ROWS)
            bounds = [rows * i // parts for i in range(parts + 1)]

            def part(i: int) -> None:
                if i < parts:
                    r0, r1 = bounds[i], bounds[i + 1]
                    self._forward_rows(kern, plan, X[r0:r1], out[r0:r1])

            if split.run(part):
                return out
        self._forward_rows(kern, plan, X, out)
        return out

    def _forward_rows(self, kern: Any, plan: list, X: np.ndarray, out: np.ndarray) -> None:
        """The forward pass for a block of rows, last layer written into ``out``.
        Hidden layers use per-thread buffers: a fresh megabyte per layer costs more
        in page faults than the matrix product itself."""
        local = self.__dict__.setdefault("_workspace", threading.local())
        rows = X.shape[0]
        bufs = getattr(local, "bufs", None)
        if bufs is None or bufs[0] != rows:
            bufs = local.bufs = (rows, {})

        def buffer(key: tuple[int, int], cols: int) -> np.ndarray:
            buf = bufs[1].get(key)
            if buf is None or buf.shape[1] != cols:
                buf = bufs[1][key] = np.empty((rows, cols))
            return buf

        acts = [X]
        last = len(plan) - 1
        for li, (src_layers, wt, b, lay, lim) in enumerate(plan):
            src = acts[src_layers[0]] if len(src_layers) == 1 else np.hstack([acts[k] for k in src_layers])
            S = buffer((li, 0), wt.shape[1])
            A = out if li == last else buffer((li, 1), wt.shape[1])
            np.matmul(src, wt, out=S)
            groups = lay.groups()
            if len(groups) == 1:
                if not kernels.layer(kern, groups[0][0], S, b, lay.steep, lim, A):
                    A[...] = activate(groups[0][0], A)
            else:  # per-neuron activations: the clipped sums, then each function on its columns
                kern.affine_clip(S, b, lay.steep, lim, 1.0, A)
                for code, cols in groups:
                    A[:, cols] = activate(code, A[:, cols])
            acts.append(A)

    def run(self, x: Any) -> np.ndarray:
        """Outputs for one input vector (1-D) or a batch (2-D, one row per input)."""
        X = np.asarray(x, dtype=np.float64)
        single = X.ndim == 1
        if single and X.shape[0] == self.num_input:
            plan = self._small_plan()
            if plan is not None:
                return self._run_small(X, plan)
        X2 = X.reshape(1, -1) if single else X
        if X2.ndim != 2 or X2.shape[1] != self.num_input:
            raise NeuralError(f"input must have {self.num_input} values per row, got shape {X.shape}")
        out = self._run_batch(X2)
        return out[0].copy() if single else np.ascontiguousarray(out)

    # ------------------------------------------------------------------ errors

    def _output_errors(self, V: np.ndarray, S: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """fann_compute_MSE for a batch: returns (output errors, squared diffs as float32, bit fails)."""
        last = self.layers[-1]
        cols = self._output_cols()
        value = V[:, cols]
        diff = Y - value
        act = last.act[: self.num_output]
        sym = np.isin(act, list(SYMMETRIC))
        if sym.any():
            diff[:, sym] /= 2.0
        sq = (diff * diff).astype(np.float32)
        bit_fail = int(np.count_nonzero(np.abs(diff) >= float(self.header["bit_fail_limit"])))
        if int(self.header["train_error_function"]) == ERROR_TANH:
            with np.errstate(divide="ignore", invalid="ignore"):
                diff = np.where(diff < -0.9999999, -17.0,
                                np.where(diff > 0.9999999, 17.0, np.log((1.0 + diff) / (1.0 - diff))))
        err = np.empty_like(diff)
        steep = last.steep[: self.num_output]
        for code in np.unique(act):
            k = np.flatnonzero(act == code)
            err[:, k] = derivative(int(code), steep[k], value[:, k], S[:, cols][:, k]) * diff[:, k]
        return err, sq, bit_fail

    def _backpropagate(self, V: np.ndarray, S: np.ndarray, E: np.ndarray) -> None:
        """fann_backpropagate_MSE: errors of the output layer spread back to the first hidden layer."""
        for li in range(len(self.layers) - 1, 0, -1):
            lay, prev = self.layers[li], self.layers[li - 1]
            E[:, lay.s0:lay.s1] += E[:, lay.n0:lay.n1] @ lay.W
            Ep, Vp, Sp = E[:, prev.n0:prev.n1], V[:, prev.n0:prev.n1], S[:, prev.n0:prev.n1]
            for code, cols in prev.groups():
                Ep[:, cols] *= derivative(code, prev.steep[cols], Vp[:, cols], Sp[:, cols])

    @staticmethod
    def _mse_accumulate(acc: np.float32, sq: np.ndarray) -> np.float32:
        """libfann adds float32 squared errors one by one into a float32: same order, same result."""
        flat = sq.ravel()
        if flat.size == 0:
            return acc
        return np.cumsum(np.concatenate(([acc], flat)), dtype=np.float32)[-1]

    # ------------------------------------------------------------------ training

    def reset_training(self) -> None:
        """Forget slopes, steps and momentum (FANN: fann_clear_train_arrays on next epoch)."""
        self._slopes_prev: list[np.ndarray] | None = None
        self._steps: list[np.ndarray] | None = None
        self._deltas: list[np.ndarray] | None = None
        self.sarprop_epoch = 0
        self.mse_value = np.float32(0.0)
        self.num_mse = 0
        self.bit_fail = 0

    @property
    def mse(self) -> float:
        return float(self.mse_value / np.float32(self.num_mse)) if self.num_mse else 0.0

    def _check_data(self, data: TrainingData) -> None:
        if data.num_input != self.num_input or data.num_output != self.num_output:
            raise NeuralError(f"data is {data.num_input}->{data.num_output}, network is "
                              f"{self.num_input}->{self.num_output}")

    def test(self, data: TrainingData) -> float:
        """MSE over ``data`` without training (fann_test_data)."""
        self._check_data(data)
        V, S = self._forward(data.inputs)
        _, sq, bit_fail = self._output_errors(V, S, data.outputs)
        self.mse_value = self._mse_accumulate(np.float32(0.0), sq)
        self.num_mse = sq.size
        self.bit_fail = bit_fail
        return self.mse

    def train_epoch(self, data: TrainingData) -> float:
        """One epoch with the configured algorithm, exactly as fann_train_epoch; returns the MSE."""
        self._check_data(data)
        self._plan = None
        self._infer = None
        algo = self.training_algorithm
        self.mse_value, self.num_mse, self.bit_fail = np.float32(0.0), 0, 0
        if algo == INCREMENTAL:
            self._epoch_incremental(data)
            return self.mse
        slopes = self._batch_slopes(data)
        n = data.num_data
        if algo == BATCH:
            eps = float(_f32(_f32(self.header["learning_rate"]) / _f32(n)))
            for lay, g in zip(self.layers, slopes):
                lay.W += g * eps
        elif algo in (RPROP, QUICKPROP):
            self._train_arrays(zero_steps=algo == QUICKPROP)
            self._apply_update([l.W for l in self.layers], slopes, self._slopes_prev, self._steps, n,
                               [l.mask for l in self.layers])
        elif algo == SARPROP:
            self._update_sarprop(slopes)
            self.sarprop_epoch += 1
        else:
            raise NeuralError(f"unknown training algorithm {algo}")
        return self.mse

    def _batch_slopes(self, data: TrainingData) -> list[np.ndarray]:
        V, S = self._forward(data.inputs)
        E = np.zeros_like(V)
        err, sq, bit_fail = self._output_errors(V, S, data.outputs)
        E[:, self._output_cols()] = err
        self._backpropagate(V, S, E)
        self.mse_value = self._mse_accumulate(self.mse_value, sq)
        self.num_mse += sq.size
        self.bit_fail += bit_fail
        out = []
        for lay in self.layers:
            g = E[:, lay.n0:lay.n1].T @ V[:, lay.s0:lay.s1]
            if lay.mask is not None:
                g[~lay.mask] = 0.0
            out.append(g)
        return out

    def _train_arrays(self, zero_steps: bool) -> None:
        if self._slopes_prev is None:
            self._slopes_prev = [np.zeros_like(l.W) for l in self.layers]
            fill = 0.0 if zero_steps else f32(self.header["rprop_delta_zero"])
            self._steps = [np.full_like(l.W, fill) for l in self.layers]

    def _epoch_incremental(self, data: TrainingData) -> None:
        lr = f32(self.header["learning_rate"])
        momentum = f32(self.header["learning_momentum"])
        if self._deltas is None:
            self._deltas = [np.zeros_like(l.W) for l in self.layers]
        for i in range(data.num_data):
            V, S = self._forward(data.inputs[i:i + 1])
            E = np.zeros_like(V)
            err, sq, bit_fail = self._output_errors(V, S, data.outputs[i:i + 1])
            E[:, self._output_cols()] = err
            self._backpropagate(V, S, E)
            self.mse_value = self._mse_accumulate(self.mse_value, sq)
            self.num_mse += sq.size
            self.bit_fail += bit_fail
            for lay, prev in zip(self.layers, self._deltas):
                tmp = E[0, lay.n0:lay.n1] * lr
                if lay.mask is None:
                    delta = np.outer(tmp, V[0, lay.s0:lay.s1]) + momentum * prev
                else:
                    delta = self._sparse_incremental_delta(lay, tmp, V[0], prev, momentum)
                lay.W += delta
                prev[...] = delta

    def _sparse_incremental_delta(self, lay: Layer, tmp: np.ndarray, values: np.ndarray, prev: np.ndarray,
                                  momentum: float) -> np.ndarray:
        """libfann quirk, kept for conformance: fann_update_weights on a sparse net multiplies the
        i-th connection of each neuron by the value of the network's i-th neuron, not of the
        neuron the connection comes from."""
        delta = np.zeros_like(lay.W)
        li = self.layers.index(lay)
        for c in np.flatnonzero(self._conn_layer == li):
            r, col = self._conn_row[c], self._conn_col[c]
            neuron = lay.n0 + r
            i = c - int(self._offsets[neuron])
            delta[r, col] = tmp[r] * values[i] + momentum * prev[r, col]
        return delta

    def _apply_update(self, weights: list[np.ndarray], slopes: list[np.ndarray], prev_slopes: list[np.ndarray],
                      steps: list[np.ndarray], num_data: int, masks: list[np.ndarray | None] | None = None) -> None:
        """One RPROP (iRPROP-) or Quickprop step on any set of weight arrays, elementwise as
        fann_update_weights_irpropm / _quickprop; shared by layers and cascade candidates."""
        algo = self.training_algorithm
        masks = masks or [None] * len(weights)
        if algo == RPROP:
            inc, dec = f32(self.header["rprop_increase_factor"]), f32(self.header["rprop_decrease_factor"])
            dmin, dmax = f32(self.header["rprop_delta_min"]), f32(self.header["rprop_delta_max"])
            for W, slope, prev_slope, step, mask in zip(weights, slopes, prev_slopes, steps, masks):
                prev_step = np.maximum(step, 0.0001)
                same = prev_slope * slope
                next_step = np.where(same >= 0, np.minimum(prev_step * inc, dmax), np.maximum(prev_step * dec, dmin))
                slope = np.where(same >= 0, slope, 0.0)
                w = np.where(slope < 0, np.maximum(W - next_step, -1500.0), np.minimum(W + next_step, 1500.0))
                self._store(W, mask, w, step, next_step, prev_slope, slope)
        elif algo == QUICKPROP:
            eps = float(_f32(_f32(self.header["learning_rate"]) / _f32(num_data)))
            decay, mu = f32(self.header["quickprop_decay"]), f32(self.header["quickprop_mu"])
            shrink = float(_f32(mu / (1.0 + mu)))
            with np.errstate(divide="ignore", invalid="ignore"):
                for W, g, prev_slope, prev_step, mask in zip(weights, slopes, prev_slopes, steps, masks):
                    slope = g + decay * W
                    quad = prev_step * slope / (prev_slope - slope)
                    pos, neg = prev_step > 0.001, prev_step < -0.001
                    step_pos = np.where(slope > 0, eps * slope, 0.0) + np.where(slope > shrink * prev_slope,
                                                                                 mu * prev_step, quad)
                    step_neg = np.where(slope < 0, eps * slope, 0.0) + np.where(slope < shrink * prev_slope,
                                                                                 mu * prev_step, quad)
                    next_step = np.where(pos, step_pos, np.where(neg, step_neg, eps * slope))
                    self._store(W, mask, np.clip(W + next_step, -1500.0, 1500.0), prev_step, next_step,
                                prev_slope, slope)
        else:
            raise NeuralError(f"algorithm {algo} has no batch update here")

    def _update_sarprop(self, slopes: list[np.ndarray | None], first_connection: int = 0) -> None:
        """fann_update_weights_sarprop over the connections from ``first_connection`` on
        (0: all; cascade passes the output layer's first), in FANN's connection order."""
        self._train_arrays(zero_steps=True)
        layers = self._conn_layer[first_connection:].tolist()
        rows = self._conn_row[first_connection:].tolist()
        cols = self._conn_col[first_connection:].tolist()
        cells = ((self.layers[li].W, slopes[li], self._steps[li], self._slopes_prev[li], (r, c))
                 for li, r, c in zip(layers, rows, cols))
        sarprop_cells(cells, self.sarprop_constants(), self._rand)

    def sarprop_constants(self) -> tuple[float, ...]:
        """What fann_update_weights_sarprop derives from the parameters, the MSE and the
        SARPROP epoch before its loop, in its float/double mix."""
        inc, dec = f32(self.header["rprop_increase_factor"]), f32(self.header["rprop_decrease_factor"])
        dmin, dmax = f32(0.000001), f32(self.header["rprop_delta_max"])
        shift = _f32(self.params["sarprop_weight_decay_shift"])
        thresh = _f32(self.params["sarprop_step_error_threshold_factor"])
        err_shift = _f32(self.params["sarprop_step_error_shift"])
        T = _f32(self.params["sarprop_temperature"])
        mse = _f32(self.mse)
        rmse = float(np.sqrt(mse, dtype=np.float32))
        epoch = _f32(self.sarprop_epoch)
        ln2 = 0.69314718055994530942
        decay_factor = float(np.exp(ln2 * float(_f32(-T * epoch) + shift)))
        noise_factor = float(np.exp(ln2 * float(_f32(-T * epoch) + err_shift)))
        limit = float(_f32(thresh * mse))
        return inc, dec, dmin, dmax, decay_factor, noise_factor, limit, rmse

    @property
    def _rand(self) -> GlibcRandom:
        if not hasattr(self, "_glibc"):
            self._glibc = GlibcRandom(1)
        return self._glibc

    def seed_rand(self, seed: int) -> None:
        """Seed the generator SARPROP draws from, as srand() seeds libfann's rand()."""
        self._glibc = GlibcRandom(seed)

    @staticmethod
    def _store(W: np.ndarray, mask: np.ndarray | None, w: np.ndarray, steps: np.ndarray, next_step: np.ndarray,
               prev_slope: np.ndarray, slope: np.ndarray) -> None:
        if mask is not None:  # absent connections of sparse nets stay absent
            w = np.where(mask, w, 0.0)
            next_step = np.where(mask, next_step, steps)
            slope = np.where(mask, slope, 0.0)
        W[...] = w
        steps[...] = next_step
        prev_slope[...] = slope

    # ------------------------------------------------------------------ cascade

    def train_outputs_epoch(self, data: TrainingData) -> float:
        """fann_train_outputs_epoch: slopes and one update for the output layer's weights only."""
        self._check_data(data)
        self._plan = self._infer = None
        self.mse_value, self.num_mse, self.bit_fail = np.float32(0.0), 0, 0
        V, S = self._forward(data.inputs)
        err, sq, bit_fail = self._output_errors(V, S, data.outputs)
        self.mse_value = self._mse_accumulate(self.mse_value, sq)
        self.num_mse, self.bit_fail = sq.size, bit_fail
        last = self.layers[-1]
        g = err[:, : last.n1 - last.n0].T @ V[:, last.s0:last.s1]
        if last.mask is not None:
            g[~last.mask] = 0.0
        if self.training_algorithm == SARPROP:  # libfann: then ++sarprop_epoch, as a full epoch does
            first = int(np.searchsorted(self._conn_layer, len(self.layers) - 1))
            self._update_sarprop([None] * (len(self.layers) - 1) + [g], first)
            self.sarprop_epoch += 1
            return self.mse
        self._train_arrays(zero_steps=self.training_algorithm == QUICKPROP)
        self._apply_update([last.W], [g], self._slopes_prev[-1:], self._steps[-1:], data.num_data, [last.mask])
        return self.mse

    def nonoutput_values(self, X: np.ndarray) -> np.ndarray:
        """Values of every neuron but the outputs, in FANN's neuron order (bias neurons = 1)."""
        V, _ = self._forward(np.asarray(X, dtype=np.float64))
        return V[:, : self.total - self.num_output]

    def _desired_error_reached(self, desired_error: float) -> bool:
        if int(self.header["train_stop_function"]) == STOP_BIT:
            return self.bit_fail <= int(desired_error)
        return self.mse <= desired_error

    def _rebuild(self, ff: fannfile.FannFile) -> None:
        """Take a new structure (cascade installed a neuron), keeping parameters and rand() state."""
        params, glibc, epoch = self.params, getattr(self, "_glibc", None), self.sarprop_epoch
        self.__dict__.update(Network(ff).__dict__)
        self.params, self.sarprop_epoch = params, epoch
        if glibc is not None:
            self._glibc = glibc

    def cascade_train(self, data: TrainingData, max_neurons: int, desired_error: float = 0.0,
                      callback: Any = None) -> float:
        """Cascade2 (fann_cascadetrain_on_data) on a shortcut network; returns the final MSE."""
        from .cascade import cascade_train
        return cascade_train(self, data, max_neurons, desired_error, callback)

    def train(self, data: TrainingData, max_epochs: int, desired_error: float = 0.0,
              callback: Any = None) -> float:
        """fann_train_on_data: epochs until ``desired_error`` (MSE or bit fails) or ``max_epochs``."""
        mse = 0.0
        for epoch in range(1, max_epochs + 1):
            mse = self.train_epoch(data)
            if callback is not None and callback(epoch, mse, self.bit_fail) is False:
                break
            stop = self.bit_fail if int(self.header["train_stop_function"]) == STOP_BIT else mse
            if stop <= desired_error:
                break
        return mse
