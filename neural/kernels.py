"""Fused per-layer kernels for batched ``run``, compiled by numba.

After a layer's matrix product (OpenBLAS, at the machine's peak) what is left is
per-element work: add the bias, multiply by the steepness, clip at ±150/steepness,
apply the activation.  numpy or numexpr make that several passes over memory, and
numexpr's ``where`` chains for FANN's stepwise sigmoid cost ~8 ns per element,
more than the matrix product itself.  One compiled pass does it in under 1 ns, with
the C macro's formula and clip, so results are bit-identical to libfann's.

The kernels are single-threaded on purpose: OpenBLAS keeps its worker threads
spinning for a while after each product, and a parallel kernel fighting them for
the second core measured 25x slower.  They release the GIL, so callers may run
them from several threads.

numba is imported lazily, only when a batch is large enough to use the kernels, so
agents and small runs never pay for its import.  If it cannot be imported, callers
fall back to the numpy/numexpr path: same results, slower.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .activation import _SIG_STEP, _SYM_STEP, Activation

#: Activations with a fused kernel; the others get :func:`layer`'s clipped sum and the
#: generic activation code.
STEPWISE_TABLES = {int(code): (np.array(t[0]), np.array(t[1]), float(t[2]), float(t[3]))
                   for code, t in ((Activation.SIGMOID_STEPWISE, _SIG_STEP),
                                   (Activation.SIGMOID_SYMMETRIC_STEPWISE, _SYM_STEP))}
#: y = num / (1 + exp(-2x)) + shift, fann_sigmoid_real / fann_sigmoid_symmetric_real
SIGMOIDS = {int(Activation.SIGMOID): (1.0, 0.0), int(Activation.SIGMOID_SYMMETRIC): (2.0, -1.0)}

_kernels: Any = None
_failed = False


def load() -> Any | None:
    """The compiled kernels, or None when numba is unavailable.  Compiled on first use
    and cached on disk by numba, so later processes only load them."""
    global _kernels, _failed
    if _kernels is None and not _failed:
        try:
            _kernels = _compile()
        except Exception:  # noqa: BLE001 - no numba or no compiler: the numpy path stays correct
            _failed = True
    return _kernels


def _compile() -> Any:
    from numba import njit

    opts = {"cache": True, "error_model": "numpy", "nogil": True}

    # Written as straight-line assignments under ifs so LLVM turns them into
    # vector selects; `out` is never the input (aliasing stops vectorization).

    @njit(**opts)
    def affine_clip(S, b, k, lim, scale, out):  # noqa: ANN001, ANN202
        """out = scale * clipped (S + b) * k: the neuron sum as fann_run leaves it."""
        n, m = S.shape
        for i in range(n):
            row = S[i]
            o = out[i]
            for j in range(m):
                x = (row[j] + b[j]) * k[j]
                lj = lim[j]
                if x > lj:
                    x = lj
                elif x < -lj:
                    x = -lj
                o[j] = scale * x

    @njit(**opts)
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
                x = (row[j] + b[j]) * k[j]
                lj = lim[j]
                if x > lj:
                    x = lj
                elif x < -lj:
                    x = -lj
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

    @njit(**opts)
    def sigmoid_finish(E, num, shift):  # noqa: ANN001, ANN202
        """In place: E = num / (1 + E) + shift, where E already holds exp(-2x)."""
        n, m = E.shape
        for i in range(n):
            row = E[i]
            for j in range(m):
                row[j] = num / (1.0 + row[j]) + shift

    class Kernels:
        pass

    kern = Kernels()
    kern.affine_clip, kern.stepwise, kern.sigmoid_finish = affine_clip, stepwise, sigmoid_finish
    return kern


def layer(kern: Any, code: int, S: np.ndarray, b: np.ndarray, k: np.ndarray, lim: np.ndarray,
          out: np.ndarray) -> bool:
    """Bias, steepness, clip and activation ``code`` for the matrix product ``S``,
    written to ``out`` (not ``S``).  Returns False when ``code`` has no fused kernel:
    ``out`` then holds the clipped sum and the caller applies the activation."""
    table = STEPWISE_TABLES.get(code)
    if table is not None:
        V, R, lo, hi = table
        kern.stepwise(S, b, k, lim, V, R, lo, hi, out)
        return True
    sig = SIGMOIDS.get(code)
    if sig is not None:
        kern.affine_clip(S, b, k, lim, -2.0, out)
        with np.errstate(over="ignore"):  # exp(300) = inf gives the right limit, as in C
            np.exp(out, out=out)  # numpy's SIMD exp: 4x numba's scalar one
        kern.sigmoid_finish(out, sig[0], sig[1])
        return True
    kern.affine_clip(S, b, k, lim, 1.0, out)
    return False
