"""Training, as libfann's fann_train.c: the forward pass that keeps every neuron's
sum, the MSE and bit-fail count, backpropagation, and the five algorithms
(incremental, batch, RPROP, Quickprop, SARPROP) in libfann's float/double mix, so
each epoch's MSE and weights match libfann's.

A part of :class:`neural.network.Network` (a mixin over its ``layers``, ``header``
and connection map).  The methods cascade training builds on (``check_data``,
``apply_update``, ``fann_rand``, ``glibc_rand``, ``desired_error_reached``,
``train_outputs_epoch``) are public: they are its interface, see neural/cascade.py."""

from __future__ import annotations

from typing import Any

import numpy as np

from .activation import SYMMETRIC, activate, derivative
from .data import TrainingData
from .definitions import (BATCH, ERROR_TANH, INCREMENTAL, QUICKPROP, RPROP, SARPROP, STOP_BIT, Layer, _f32,
                          f32)
from .errors import NeuralError
from .glibc_rand import GlibcRandom


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


class Training:
    layers: list[Layer]
    header: dict[str, Any]
    params: dict[str, Any]
    total: int
    num_input: int
    num_output: int
    bias_cols: list[int]
    _conn_layer: np.ndarray
    _conn_row: np.ndarray
    _conn_col: np.ndarray
    _offsets: np.ndarray
    _plan: Any
    _infer: Any

    training_algorithm: int  # a property of Network's


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

    def check_data(self, data: TrainingData) -> None:
        if data.num_input != self.num_input or data.num_output != self.num_output:
            raise NeuralError(f"data is {data.num_input}->{data.num_output}, network is "
                              f"{self.num_input}->{self.num_output}")

    def test(self, data: TrainingData) -> float:
        """MSE over ``data`` without training (fann_test_data)."""
        self.check_data(data)
        V, S = self._forward(data.inputs)
        _, sq, bit_fail = self._output_errors(V, S, data.outputs)
        self.mse_value = self._mse_accumulate(np.float32(0.0), sq)
        self.num_mse = sq.size
        self.bit_fail = bit_fail
        return self.mse

    def train_epoch(self, data: TrainingData) -> float:
        """One epoch with the configured algorithm, exactly as fann_train_epoch; returns the MSE."""
        self.check_data(data)
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
            self.apply_update([l.W for l in self.layers], slopes, self._slopes_prev, self._steps, n,
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

    def apply_update(self, weights: list[np.ndarray], slopes: list[np.ndarray], prev_slopes: list[np.ndarray],
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
        sarprop_cells(cells, self.sarprop_constants(), self.glibc_rand)

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
    def glibc_rand(self) -> GlibcRandom:
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

    # ------------------------------------------------------------------ for cascade training

    def train_outputs_epoch(self, data: TrainingData) -> float:
        """fann_train_outputs_epoch: slopes and one update for the output layer's weights only."""
        self.check_data(data)
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
        self.apply_update([last.W], [g], self._slopes_prev[-1:], self._steps[-1:], data.num_data, [last.mask])
        return self.mse

    def nonoutput_values(self, X: np.ndarray) -> np.ndarray:
        """Values of every neuron but the outputs, in FANN's neuron order (bias neurons = 1)."""
        V, _ = self._forward(np.asarray(X, dtype=np.float64))
        return V[:, : self.total - self.num_output]

    def desired_error_reached(self, desired_error: float) -> bool:
        if int(self.header["train_stop_function"]) == STOP_BIT:
            return self.bit_fail <= int(desired_error)
        return self.mse <= desired_error

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
