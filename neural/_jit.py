"""The numba-compiled kernels behind :mod:`neural.kernels` (imported only through
:func:`neural.kernels.load`, so numba loads only when a batch needs it).

Module-level functions, not closures: numba caches those on disk, so a process
loads compiled code instead of compiling (~1 s for the cascade kernel).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .activation import _HI, _LO, _SHI, _SLO, Activation

_OPTS = {"cache": True, "error_model": "numpy", "nogil": True}


@njit(inline="always", **_OPTS)
def neuron_sum(s, b, k, lim):  # noqa: ANN001, ANN202
    """fann_run's sum: (product + bias) * steepness, clipped at +-150/steepness."""
    x = (s + b) * k
    if x > lim:
        return lim
    if x < -lim:
        return -lim
    return x


# Written as straight-line assignments under ifs so LLVM turns them into
# vector selects; `out` is never the input (aliasing stops vectorization).
@njit(**_OPTS)
def affine_clip(S, b, k, lim, scale, out):  # noqa: ANN001, ANN202
    """out = scale * clipped (S + b) * k: the neuron sum as fann_run leaves it."""
    n, m = S.shape
    for i in range(n):
        row = S[i]
        o = out[i]
        for j in range(m):
            o[j] = scale * neuron_sum(row[j], b[j], k[j], lim[j])


@njit(**_OPTS)
def stepwise(S, b, k, lim, V, R, lo, hi, out):  # noqa: ANN001, ANN202
    """fann_stepwise on the clipped sum: the same segment tests and the macro's
    ((r2 - r1) * (x - v1)) / (v2 - v1) + r1, hence bit-identical."""
    n, m = S.shape
    v1, v2, v3, v4, v5, v6 = V[0], V[1], V[2], V[3], V[4], V[5]
    r1, r2, r3, r4, r5, r6 = R[0], R[1], R[2], R[3], R[4], R[5]
    d1, d2, d3, d4, d5 = r2 - r1, r3 - r2, r4 - r3, r5 - r4, r6 - r5
    e1, e2, e3, e4, e5 = v2 - v1, v3 - v2, v4 - v3, v5 - v4, v6 - v5
    for i in range(n):
        row = S[i]
        o = out[i]
        for j in range(m):
            x = neuron_sum(row[j], b[j], k[j], lim[j])
            va, ra, dr, dv = v5, r5, d5, e5
            if x < v5:
                va, ra, dr, dv = v4, r4, d4, e4
            if x < v4:
                va, ra, dr, dv = v3, r3, d3, e3
            if x < v3:
                va, ra, dr, dv = v2, r2, d2, e2
            if x < v2:
                va, ra, dr, dv = v1, r1, d1, e1
            y = (dr * (x - va)) / dv + ra
            if x < v1:
                y = lo
            if not x < v6:  # NaN lands here too, as in C
                y = hi
            o[j] = y


@njit(**_OPTS)
def sigmoid_finish(E, num, shift):  # noqa: ANN001, ANN202
    """In place: E = num / (1 + E) + shift, where E already holds exp(-2x)."""
    n, m = E.shape
    for i in range(n):
        row = E[i]
        for j in range(m):
            row[j] = num / (1.0 + row[j]) + shift


# Activation codes as plain ints: numba freezes module globals into the code.
_A = Activation
LINEAR, THRESHOLD, THRESHOLD_SYMMETRIC = int(_A.LINEAR), int(_A.THRESHOLD), int(_A.THRESHOLD_SYMMETRIC)
SIGMOID, SIGMOID_STEPWISE = int(_A.SIGMOID), int(_A.SIGMOID_STEPWISE)
SIGMOID_SYMMETRIC, SIGMOID_SYMMETRIC_STEPWISE = int(_A.SIGMOID_SYMMETRIC), int(_A.SIGMOID_SYMMETRIC_STEPWISE)
GAUSSIAN, GAUSSIAN_SYMMETRIC, ELLIOT = int(_A.GAUSSIAN), int(_A.GAUSSIAN_SYMMETRIC), int(_A.ELLIOT)
ELLIOT_SYMMETRIC, LINEAR_PIECE = int(_A.ELLIOT_SYMMETRIC), int(_A.LINEAR_PIECE)
LINEAR_PIECE_SYMMETRIC, SIN_SYMMETRIC = int(_A.LINEAR_PIECE_SYMMETRIC), int(_A.SIN_SYMMETRIC)
COS_SYMMETRIC, SIN, COS = int(_A.COS_SYMMETRIC), int(_A.SIN), int(_A.COS)
LO, HI, SLO, SHI = _LO, _HI, _SLO, _SHI  # fann_activation_derived's clip bounds


@njit(inline="always", **_OPTS)
def step_scalar(x, V, R, lo, hi):  # noqa: ANN001, ANN202
    if x < V[4]:
        if x < V[2]:
            if x < V[1]:
                if x < V[0]:
                    return lo
                return ((R[1] - R[0]) * (x - V[0])) / (V[1] - V[0]) + R[0]
            return ((R[2] - R[1]) * (x - V[1])) / (V[2] - V[1]) + R[1]
        if x < V[3]:
            return ((R[3] - R[2]) * (x - V[2])) / (V[3] - V[2]) + R[2]
        return ((R[4] - R[3]) * (x - V[3])) / (V[4] - V[3]) + R[3]
    if x < V[5]:
        return ((R[5] - R[4]) * (x - V[4])) / (V[5] - V[4]) + R[4]
    return hi


# Row functions: one activation for a whole row, the branch outside the loop (a
# branch per element measured 4x slower).  Formulas as activation.SCALAR and
# activation.derivative; exp/sin/cos are libm's, as in C.

@njit(inline="always", **_OPTS)
def activate_row(code, s, X, SV, SR, YV, YR, out):  # noqa: ANN001, ANN202
    """out = activation(code)(s * X)."""
    n = X.shape[0]
    if code == SIGMOID_SYMMETRIC:
        for b in range(n):
            out[b] = 2.0 / (1.0 + math.exp(-2.0 * (s * X[b]))) - 1.0
    elif code == SIGMOID:
        for b in range(n):
            out[b] = 1.0 / (1.0 + math.exp(-2.0 * (s * X[b])))
    elif code == SIGMOID_STEPWISE:
        for b in range(n):
            out[b] = step_scalar(s * X[b], SV, SR, 0.0, 1.0)
    elif code == SIGMOID_SYMMETRIC_STEPWISE:
        for b in range(n):
            out[b] = step_scalar(s * X[b], YV, YR, -1.0, 1.0)
    elif code == LINEAR:
        for b in range(n):
            out[b] = s * X[b]
    elif code == THRESHOLD:
        for b in range(n):
            out[b] = 0.0 if s * X[b] < 0 else 1.0
    elif code == THRESHOLD_SYMMETRIC:
        for b in range(n):
            out[b] = -1.0 if s * X[b] < 0 else 1.0
    elif code == GAUSSIAN:
        for b in range(n):
            x = s * X[b]
            out[b] = math.exp(-x * x)
    elif code == GAUSSIAN_SYMMETRIC:
        for b in range(n):
            x = s * X[b]
            out[b] = math.exp(-x * x) * 2.0 - 1.0
    elif code == ELLIOT:
        for b in range(n):
            x = s * X[b]
            out[b] = (x / 2.0) / (1.0 + abs(x)) + 0.5
    elif code == ELLIOT_SYMMETRIC:
        for b in range(n):
            x = s * X[b]
            out[b] = x / (1.0 + abs(x))
    elif code == LINEAR_PIECE:
        for b in range(n):
            x = s * X[b]
            out[b] = 0.0 if x < 0 else (1.0 if x > 1 else x)
    elif code == LINEAR_PIECE_SYMMETRIC:
        for b in range(n):
            x = s * X[b]
            out[b] = -1.0 if x < -1 else (1.0 if x > 1 else x)
    elif code == SIN_SYMMETRIC:
        for b in range(n):
            out[b] = math.sin(s * X[b])
    elif code == COS_SYMMETRIC:
        for b in range(n):
            out[b] = math.cos(s * X[b])
    elif code == SIN:
        for b in range(n):
            out[b] = math.sin(s * X[b]) / 2.0 + 0.5
    elif code == COS:
        for b in range(n):
            out[b] = math.cos(s * X[b]) / 2.0 + 0.5
    else:  # GAUSSIAN_STEPWISE: not implemented in FANN either
        for b in range(n):
            out[b] = 0.0


@njit(inline="always", **_OPTS)
def derive_row(code, s, A, X, out):  # noqa: ANN001, ANN202
    """out = fann_activation_derived(code, s, A, X), X the unscaled clipped sum."""
    n = X.shape[0]
    if code == LINEAR or code == LINEAR_PIECE or code == LINEAR_PIECE_SYMMETRIC:
        for b in range(n):
            out[b] = s
    elif code == SIGMOID or code == SIGMOID_STEPWISE:
        for b in range(n):
            v = min(max(A[b], LO), HI)
            out[b] = 2.0 * s * v * (1.0 - v)
    elif code == SIGMOID_SYMMETRIC or code == SIGMOID_SYMMETRIC_STEPWISE:
        for b in range(n):
            v = min(max(A[b], SLO), SHI)
            out[b] = s * (1.0 - v * v)
    elif code == GAUSSIAN:
        for b in range(n):
            out[b] = -2.0 * X[b] * A[b] * s * s
    elif code == GAUSSIAN_SYMMETRIC:
        for b in range(n):
            out[b] = -2.0 * X[b] * (A[b] + 1.0) * s * s
    elif code == ELLIOT:
        for b in range(n):
            out[b] = s * 1.0 / (2.0 * (1.0 + abs(X[b])) * (1.0 + abs(X[b])))
    elif code == ELLIOT_SYMMETRIC:
        for b in range(n):
            out[b] = s * 1.0 / ((1.0 + abs(X[b])) * (1.0 + abs(X[b])))
    elif code == SIN_SYMMETRIC:
        for b in range(n):
            out[b] = s * math.cos(s * X[b])
    elif code == COS_SYMMETRIC:
        for b in range(n):
            out[b] = s * -math.sin(s * X[b])
    elif code == SIN:
        for b in range(n):
            out[b] = s * math.cos(s * X[b]) / 2.0
    elif code == COS:
        for b in range(n):
            out[b] = s * -math.sin(s * X[b]) / 2.0
    else:  # THRESHOLD (libfann: cannot train), THRESHOLD_SYMMETRIC, GAUSSIAN_STEPWISE
        for b in range(n):
            out[b] = 0.0


@njit(**_OPTS)
def candidate_epoch(ST, steep, codes, w_out, E, mse, SV, SR, YV, YR, errorT, out_slopes, scores):  # noqa: ANN001, ANN202
    """fann_update_candidate_slopes over all samples.  Per candidate: the clipped
    sums, activations and derivatives for every sample, then libfann's running
    sums in sample order.  ``ST`` = candidate weights @ inputs.T (candidate-major);
    fills ``errorT`` (the input slopes are a matrix product left to BLAS),
    ``out_slopes`` and ``scores``."""
    C, B = ST.shape
    O = E.shape[1]
    X = np.empty(B)
    A = np.empty(B)
    D = np.empty(B)
    for c in range(C):
        s = steep[c]
        lim = 150.0 / s
        for b in range(B):
            x = ST[c, b]
            if x > lim:
                x = lim
            elif x < -lim:
                x = -lim
            X[b] = x
        activate_row(codes[c], s, X, SV, SR, YV, YR, A)
        derive_row(codes[c], s, A, X, D)
        score = mse
        for j in range(O):
            out_slopes[c, j] = 0.0
        for b in range(B):
            a = A[b]
            ev = 0.0
            for j in range(O):
                w = w_out[c, j]
                diff = a * w - E[b, j]
                out_slopes[c, j] -= 2.0 * diff * a
                ev += diff * w
                score -= diff * diff
            errorT[c, b] = ev * D[b]
        scores[c] = score
