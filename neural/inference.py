"""Running a network (fann_run), fast at every size: single vectors of small
nets in plain Python floats, batches as one matrix product per layer, large batches
through the compiled kernels with rows split over the cores.

A part of :class:`neural.network.Network` (a mixin over its ``layers`` and shape),
kept apart because it is its own concern, as fann_run is apart from training."""

from __future__ import annotations

import threading
from operator import mul
from typing import Any

import numexpr as ne
import numpy as np

from . import kernels, rowsplit
from .activation import SCALAR, activate
from .definitions import LAYER, Layer
from .errors import NeuralError

#: Networks with at most this many connections run single vectors in plain Python
#: floats: for a 2-3-3-1 net that is ~10x faster than numpy's per-call overhead.
SMALL_NET_CONNECTIONS = 400

#: Batches of at least this many layer outputs use the compiled kernels (the row
#: split's hand-off and the workspace pay off from here on).
KERNEL_MIN_ELEMENTS = 16384
#: Rows per part, at least, when a batch is split over the cores.
SPLIT_MIN_ROWS = 64

_CLIP = "where((s + b) * k > lim, lim, where((s + b) * k < -lim, -lim, (s + b) * k))"

_CLIP = "where((s + b) * k > lim, lim, where((s + b) * k < -lim, -lim, (s + b) * k))"


class Inference:
    layers: list[Layer]
    total: int
    num_input: int
    num_output: int
    network_type: int
    _conn_src: np.ndarray
    _plan: Any
    _infer: Any

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
