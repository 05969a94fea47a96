"""Cascade2 training (fann_cascadetrain_on_data), vectorized over candidates and samples.

The procedure is libfann's:

1. train the output weights alone (RPROP, Quickprop or SARPROP) until the desired error or
   stagnation (``cascade_output_change_fraction`` / ``..._stagnation_epochs``, within
   ``cascade_min_out_epochs .. cascade_max_out_epochs``);
2. create ``len(functions) * len(steepnesses) * groups`` candidate neurons reading
   every non-output neuron, with semi Widrow-Nguyen weights drawn by fann_rand in
   libfann's order, and train them to maximize their covariance with the output
   errors (candidate limit, change fraction and stagnation as in libfann);
3. install the best candidate as a new single-neuron layer before the outputs, each
   output getting a new connection of candidate output weight * cascade_weight_multiplier;
4. repeat until ``max_neurons`` or the desired error; train the outputs once more.

libfann quirks kept: SARPROP's epoch advances in output training only; installed
output weights are assigned in reverse output order; a candidate's sum is clipped
to +-150/steepness *before* the steepness is applied and its derivative uses that unscaled sum; the "hidden neuron"
count in the weight scale includes the bias neuron; output errors for candidates are
(desired - output), halved for symmetric activations, without the error function.
Candidate sums and slopes are accumulated as matrix products, so they may differ from
libfann's sequential sums in the last bits; cascade runs therefore track libfann's
closely rather than bit for bit.  With RPROP and SARPROP (sign-driven steps) the
tests find the same candidates and weights within 1e-6.  Quickprop's quadratic step
divides by slope differences and amplifies those last bits: after two or three
candidates it may pick a different one than libfann.  Summing in libfann's order
(its 4-way unrolled candidate sums, slopes sample by sample) restores the same
choices, at twice the epoch time; not done.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np

from . import fannfile, kernels
from .activation import SYMMETRIC, activate, derivative
from .errors import NeuralError
from .definitions import QUICKPROP, RPROP, SARPROP, SHORTCUT
from .training import sarprop_cells

if TYPE_CHECKING:
    from .data import TrainingData


class Network(Protocol):
    """What cascade training uses of a network: its public training interface
    (neural/training.py) and its structure.  A protocol, so this module needs no import
    of neural/network.py, which imports it for ``Network.cascade_train``."""
    network_type: int
    training_algorithm: int
    sarprop_epoch: int
    header: dict[str, Any]
    layers: list[Any]
    total: int
    num_input: int
    num_output: int
    mse_value: np.float32
    bit_fail: int

    @property
    def mse(self) -> float: ...
    def run(self, x: Any) -> np.ndarray: ...
    def to_fann(self) -> fannfile.FannFile: ...
    def rebuild(self, ff: fannfile.FannFile) -> None: ...
    def reset_training(self) -> None: ...
    def check_data(self, data: "TrainingData") -> None: ...
    def desired_error_reached(self, desired_error: float) -> bool: ...
    def fann_rand(self, low: float, high: float) -> float: ...
    @property
    def glibc_rand(self) -> Any: ...
    def sarprop_constants(self) -> tuple[float, ...]: ...
    def apply_update(self, weights: list[np.ndarray], slopes: list[np.ndarray], prev_slopes: list[np.ndarray],
                     steps: list[np.ndarray], num_data: int, masks: list[np.ndarray | None] | None = None) -> None: ...
    def train_outputs_epoch(self, data: "TrainingData") -> float: ...
    def nonoutput_values(self, X: np.ndarray) -> np.ndarray: ...

_f32 = np.float32


def _f(x: float) -> float:
    return float(_f32(x))


def cascade_train(net: "Network", data: "TrainingData", max_neurons: int, desired_error: float = 0.0,
                  callback: Callable[[int, float, int], Any] | None = None) -> float:
    if net.network_type != SHORTCUT:
        raise NeuralError("cascade training needs a shortcut network (Network.create_shortcut(inputs, outputs))")
    if net.training_algorithm not in (RPROP, QUICKPROP, SARPROP):
        raise NeuralError("cascade training supports the RPROP, Quickprop and SARPROP algorithms")
    net.check_data(data)
    for neurons in range(1, max_neurons + 1):
        train_outputs(net, data, desired_error)
        if callback is not None and callback(neurons - 1, net.mse, net.bit_fail) is False:
            break
        if net.desired_error_reached(desired_error):
            break
        candidates = Candidates(net)
        candidates.train(net, data)
        install(net, candidates)
    train_outputs(net, data, 0.0)
    return net.mse


def train_outputs(net: "Network", data: "TrainingData", desired_error: float) -> int:
    """fann_train_outputs: returns the number of epochs it ran."""
    h = net.header
    max_epochs, min_epochs = int(h["cascade_max_out_epochs"]), int(h["cascade_min_out_epochs"])
    fraction = _f(h["cascade_output_change_fraction"])
    stagnation_epochs = int(h["cascade_output_stagnation_epochs"])
    epoch = net.sarprop_epoch
    net.reset_training()  # fann_clear_train_arrays, which leaves the SARPROP epoch alone
    net.sarprop_epoch = epoch
    initial = _f32(net.train_outputs_epoch(data))
    if net.desired_error_reached(desired_error):
        return 1
    target, backslide = _f32(0.0), _f32(-1.0e20)
    stagnation = max_epochs
    for i in range(1, max_epochs):
        error = _f32(net.train_outputs_epoch(data))
        if net.desired_error_reached(desired_error):
            return i + 1
        improvement = _f32(initial - error)
        if ((target >= 0 and (improvement > target or improvement < backslide))
                or (target < 0 and (improvement < target or improvement > backslide))):
            target = _f32(improvement * _f32(1.0 + fraction))
            backslide = _f32(improvement * _f32(1.0 - fraction))
            stagnation = i + stagnation_epochs
        if i >= stagnation and i >= min_epochs:
            return i + 1
    return max_epochs


class Candidates:
    """All candidate neurons of one round: input weights (n_cand, k), output weights
    (n_cand, n_out), and their RPROP/Quickprop state, in libfann's candidate order."""

    def __init__(self, net: "Network") -> None:
        h = net.header
        funcs = [int(f) for f in h["cascade_activation_functions"]]
        steeps = [float(s) for s in h["cascade_activation_steepnesses"]]
        groups = int(h["cascade_num_candidate_groups"])
        self.act = np.array([f for f in funcs for _ in steeps for _ in range(groups)], dtype=np.int64)
        self.steep = np.array([s for _ in funcs for s in steeps for _ in range(groups)])
        n = len(self.act)
        if n == 0:
            raise NeuralError("no cascade candidates: set cascade activation functions and steepnesses")
        k = net.total - net.num_output               # every non-output neuron, bias included
        hidden = net.total - net.num_input - net.num_output  # libfann counts the bias here too
        # (float)(2.0 * pow(0.7f * (float)hidden, 1.0f / (float)num_input)): float operands, double pow
        base = float(_f32(_f32(0.7) * _f32(hidden)))
        exponent = float(_f32(_f32(1.0) / _f32(net.num_input)))
        scale = float(_f32(2.0 * base ** exponent))
        scale = 8.0 if scale > 8 else (0.5 if scale < 0.5 else scale)
        bias_index = net.num_input                   # the input layer's bias neuron
        w = np.empty((n, k + net.num_output))
        for c in range(n):                           # fann_rand draws in libfann's order
            for i in range(k + net.num_output):
                w[c, i] = net.fann_rand(-scale, scale) if i == bias_index else net.fann_rand(0.0, scale)
        self.w_in, self.w_out = w[:, :k].copy(), w[:, k:].copy()
        rprop = net.training_algorithm == 2
        step0 = _f(h["rprop_delta_zero"]) if rprop else 0.0
        self.steps = [np.full_like(self.w_in, step0), np.full_like(self.w_out, step0)]
        self.prev_slopes = [np.zeros_like(self.w_in), np.zeros_like(self.w_out)]
        self.scores = np.zeros(n)
        self.best = 0

    def epoch(self, net: "Network", data: "TrainingData", V: np.ndarray, E: np.ndarray) -> float:
        """fann_train_candidates_epoch: score, slopes, one weight update; returns the best score."""
        kern = kernels.load()
        if kern is not None:  # one compiled pass in libfann's order; ~3x the numpy path below
            ST = self.w_in @ V.T
            errorT = np.empty_like(ST)
            out_slopes = np.empty_like(self.w_out)
            kern.candidate_epoch(ST, self.steep, self.act, self.w_out, E, float(net.mse_value), *kernels.TABLE_ARGS,
                                 errorT, out_slopes, self.scores)
            in_slopes = -(errorT @ V)
        else:
            in_slopes, out_slopes = self._slopes_numpy(net, V, E)
        if net.training_algorithm == SARPROP:
            self._update_sarprop(net, in_slopes, out_slopes)
        else:
            net.apply_update([self.w_in, self.w_out], [in_slopes, out_slopes], self.prev_slopes, self.steps,
                              data.num_data)
        self.best = int(np.argmax(self.scores))  # first maximum, as libfann's strict '>' scan
        return float(self.scores[self.best])

    def _update_sarprop(self, net: "Network", in_slopes: np.ndarray, out_slopes: np.ndarray) -> None:
        """fann_update_candidate_weights for SARPROP: candidate by candidate, input then
        output weights (libfann's layout), at the current SARPROP epoch, which libfann
        does not advance here ("TODO: increase epoch?" in its source)."""
        k, n_out = self.w_in.shape[1], self.w_out.shape[1]

        def cells() -> Any:
            for c in range(len(self.act)):
                for i in range(k):
                    yield self.w_in, in_slopes, self.steps[0], self.prev_slopes[0], (c, i)
                for j in range(n_out):
                    yield self.w_out, out_slopes, self.steps[1], self.prev_slopes[1], (c, j)

        sarprop_cells(cells(), net.sarprop_constants(), net.glibc_rand)

    def _slopes_numpy(self, net: "Network", V: np.ndarray, E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sums = V @ self.w_in.T
        lim = 150.0 / self.steep
        np.minimum(sums, lim, out=sums)
        np.maximum(sums, -lim, out=sums)
        act = np.empty_like(sums)
        der = np.empty_like(sums)
        for code in np.unique(self.act):
            cols = np.flatnonzero(self.act == code)
            act[:, cols] = activate(int(code), self.steep[cols] * sums[:, cols])
            der[:, cols] = derivative(int(code), self.steep[cols], act[:, cols], sums[:, cols])
        diff = act[:, :, None] * self.w_out[None, :, :] - E[:, None, :]     # (B, cand, out)
        out_slopes = -2.0 * np.einsum("bcj,bc->cj", diff, act)
        self.scores = float(net.mse_value) - np.einsum("bcj,bcj->c", diff, diff)
        error = np.einsum("bcj,cj->bc", diff, self.w_out) * der
        return -(error.T @ V), out_slopes

    def train(self, net: "Network", data: "TrainingData") -> int:
        """fann_train_candidates: returns the number of epochs."""
        h = net.header
        max_epochs, min_epochs = int(h["cascade_max_cand_epochs"]), int(h["cascade_min_cand_epochs"])
        fraction = _f(h["cascade_candidate_change_fraction"])
        limit = float(h["cascade_candidate_limit"])
        stagnation_epochs = int(h["cascade_candidate_stagnation_epochs"])
        V = net.nonoutput_values(data.inputs)
        out = net.run(data.inputs)
        E = data.outputs - out
        sym = np.isin(net.layers[-1].act[: net.num_output], list(SYMMETRIC))
        E[:, sym] /= 2.0
        mse_sum = float(net.mse_value)
        target, backslide = 0.0, -1.0e20
        stagnation = max_epochs
        for i in range(max_epochs):
            best = self.epoch(net, data, V, E)
            if mse_sum and best / mse_sum > limit:
                return i + 1
            if best > target or best < backslide:
                target = best * _f(1.0 + fraction)
                backslide = best * _f(1.0 - fraction)
                stagnation = i + stagnation_epochs
            if i >= stagnation and i >= min_epochs:
                return i + 1
        return max_epochs


def install(net: "Network", cand: Candidates) -> None:
    """fann_install_candidate: the best candidate becomes a layer of one neuron before the outputs."""
    ff = net.to_fann()
    c = cand.best
    place = net.total - net.num_output
    new_neuron = (place, int(cand.act[c]), float(cand.steep[c]))
    multiplier = float(ff.header["cascade_weight_multiplier"])
    offsets = np.cumsum([0] + [n for n, _, _ in ff.neurons])
    connections = list(ff.connections[: offsets[place]])
    connections += [(i, float(cand.w_in[c, i])) for i in range(place)]
    num_output = net.num_output
    for j, n in enumerate(range(place, net.total)):
        connections += ff.connections[offsets[n]:offsets[n + 1]]
        # libfann walks the outputs from the last while counting candidate output
        # weights up, so output j receives the candidate's weight num_output-1-j.
        connections.append((place, float(cand.w_out[c, num_output - 1 - j]) * multiplier))
    neurons = list(ff.neurons[:place]) + [new_neuron]
    neurons += [(count + 1, act, steep) for count, act, steep in ff.neurons[place:]]
    header = dict(ff.header)
    sizes = list(header["layer_sizes"])
    header["layer_sizes"] = sizes[:-1] + [1] + sizes[-1:]
    header["num_layers"] = len(header["layer_sizes"])
    net.rebuild(fannfile.FannFile(header, neurons, connections, ff.scale))
