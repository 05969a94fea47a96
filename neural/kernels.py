"""Compiled kernels (numba, in :mod:`neural._jit`) for batched ``run`` and Cascade2.

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

Cascade2's candidate epoch is one kernel too: per candidate, activations and
derivatives for all samples, then libfann's running sums in sample order (the
numpy version built a samples x candidates x outputs tensor; 3-4x slower).

numba is imported lazily, only when work is large enough to use the kernels, so
agents and small runs never pay for its import; numba caches the compiled code on
disk.  If it cannot be imported, callers fall back to the numpy/numexpr path: same
results, slower.
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
    """The kernels module, or None when numba is unavailable."""
    global _kernels, _failed
    if _kernels is None and not _failed:
        try:
            from . import _jit  # imports numba
            _kernels = _jit
        except Exception:  # noqa: BLE001 - no numba or no compiler: the numpy path stays correct
            _failed = True
    return _kernels


#: Stepwise tables as the candidate kernel's activation takes them.
TABLE_ARGS = (np.array(_SIG_STEP[0]), np.array(_SIG_STEP[1]), np.array(_SYM_STEP[0]), np.array(_SYM_STEP[1]))


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
