"""FANN 2.2 activation functions and the derivatives libfann trains with, vectorized.

Values follow ``fann_activation.h`` exactly, including its float literals: where the
C code writes ``0.01f`` the constant is the float32 value widened to double
(0.009999999776...), because that is what libdoublefann computes with.

All functions take ``x`` = steepness * weighted sum, already clipped to
±150/steepness by the caller (FANN's ``fann_run`` clips *after* multiplying by the
steepness, a quirk kept here).
"""

from __future__ import annotations

from enum import IntEnum

import numexpr as ne
import numpy as np


class Activation(IntEnum):
    LINEAR = 0
    THRESHOLD = 1
    THRESHOLD_SYMMETRIC = 2
    SIGMOID = 3
    SIGMOID_STEPWISE = 4
    SIGMOID_SYMMETRIC = 5
    SIGMOID_SYMMETRIC_STEPWISE = 6
    GAUSSIAN = 7
    GAUSSIAN_SYMMETRIC = 8
    GAUSSIAN_STEPWISE = 9  # declared by FANN but computes 0: "not implemented" there too
    ELLIOT = 10
    ELLIOT_SYMMETRIC = 11
    LINEAR_PIECE = 12
    LINEAR_PIECE_SYMMETRIC = 13
    SIN_SYMMETRIC = 14
    COS_SYMMETRIC = 15
    SIN = 16
    COS = 17


#: Functions whose output range is symmetric: FANN halves their output error.
SYMMETRIC = frozenset({Activation.LINEAR_PIECE_SYMMETRIC, Activation.THRESHOLD_SYMMETRIC,
                       Activation.SIGMOID_SYMMETRIC, Activation.SIGMOID_SYMMETRIC_STEPWISE,
                       Activation.ELLIOT_SYMMETRIC, Activation.GAUSSIAN_SYMMETRIC,
                       Activation.SIN_SYMMETRIC, Activation.COS_SYMMETRIC})


def _f32(x: float) -> float:
    return float(np.float32(x))


# Clip bounds of fann_activation_derived, float literals in C.
_LO, _HI = _f32(0.01), _f32(0.99)
_SLO, _SHI = _f32(-0.98), _f32(0.98)

# fann_stepwise breakpoints (v1..v6) and values (r1..r6), as printed in fann_activation.h.
_SIG_STEP = (
    (-2.64665246009826660156e+00, -1.47221946716308593750e+00, -5.49306154251098632812e-01,
     5.49306154251098632812e-01, 1.47221934795379638672e+00, 2.64665293693542480469e+00),
    (4.99999988824129104614e-03, 5.00000007450580596924e-02, 2.50000000000000000000e-01,
     7.50000000000000000000e-01, 9.49999988079071044922e-01, 9.95000004768371582031e-01),
    0.0, 1.0)
_SYM_STEP = (
    (-2.64665293693542480469e+00, -1.47221934795379638672e+00, -5.49306154251098632812e-01,
     5.49306154251098632812e-01, 1.47221934795379638672e+00, 2.64665293693542480469e+00),
    (-9.90000009536743164062e-01, -8.99999976158142089844e-01, -5.00000000000000000000e-01,
     5.00000000000000000000e-01, 8.99999976158142089844e-01, 9.90000009536743164062e-01),
    -1.0, 1.0)


def _stepwise_expression(table: tuple) -> str:
    """fann_stepwise as one numexpr expression with the C macro's formula.  numexpr
    folds the constant differences its own way, so about 7% of results differ from
    the macro by one ulp (1.1e-16); the scalar path is bit-identical.  It evaluates
    every branch, yet measured faster here than gathering per-segment coefficients
    (searchsorted or take: 2-3x slower)."""
    (v1, v2, v3, v4, v5, v6), (r1, r2, r3, r4, r5, r6), lo, hi = table

    def lin(va: float, ra: float, vb: float, rb: float) -> str:
        return f"((({rb!r} - {ra!r}) * (x - {va!r})) / ({vb!r} - {va!r}) + {ra!r})"

    return (f"where(x < {v5!r}, where(x < {v3!r}, where(x < {v2!r}, where(x < {v1!r}, {float(lo)!r}, "
            f"{lin(v1, r1, v2, r2)}), {lin(v2, r2, v3, r3)}), where(x < {v4!r}, {lin(v3, r3, v4, r4)}, "
            f"{lin(v4, r4, v5, r5)})), where(x < {v6!r}, {lin(v5, r5, v6, r6)}, {float(hi)!r}))")


_EXPRESSIONS: dict[int, str] = {}


def _stepwise(x: np.ndarray, table: tuple) -> np.ndarray:
    expr = _EXPRESSIONS.get(id(table))
    if expr is None:
        expr = _EXPRESSIONS[id(table)] = _stepwise_expression(table)
    return ne.evaluate(expr, local_dict={"x": x})


def _stepwise_scalar(x: float, table: tuple) -> float:
    (v1, v2, v3, v4, v5, v6), (r1, r2, r3, r4, r5, r6), lo, hi = table

    def lin(va: float, ra: float, vb: float, rb: float) -> float:
        return ((rb - ra) * (x - va)) / (vb - va) + ra

    if x < v5:
        if x < v3:
            if x < v2:
                return lo if x < v1 else lin(v1, r1, v2, r2)
            return lin(v2, r2, v3, r3)
        return lin(v3, r3, v4, r4) if x < v4 else lin(v4, r4, v5, r5)
    return lin(v5, r5, v6, r6) if x < v6 else hi


#: Activations evaluated by numexpr in one multithreaded pass (numpy would make four
#: temporaries).  Its exp/sin/cos may differ from numpy's by an ulp; conformance
#: with libfann is unaffected (1e-9 outputs, 1e-6 training).
_NUMEXPR = {
    Activation.SIGMOID: "1.0 / (1.0 + exp(-2.0 * x))",
    Activation.SIGMOID_SYMMETRIC: "2.0 / (1.0 + exp(-2.0 * x)) - 1.0",
    Activation.GAUSSIAN: "exp(-x * x)",
    Activation.GAUSSIAN_SYMMETRIC: "exp(-x * x) * 2.0 - 1.0",
    Activation.ELLIOT: "(x / 2.0) / (1.0 + abs(x)) + 0.5",
    Activation.ELLIOT_SYMMETRIC: "x / (1.0 + abs(x))",
    Activation.SIN_SYMMETRIC: "sin(x)",
    Activation.COS_SYMMETRIC: "cos(x)",
    Activation.SIN: "sin(x) / 2.0 + 0.5",
    Activation.COS: "cos(x) / 2.0 + 0.5",
}
_NUMEXPR_MIN_SIZE = 4096  # below this numexpr's call overhead outweighs its one pass


def activate(code: int, x: np.ndarray) -> np.ndarray:
    """Neuron value for ``x`` = steepness * sum (clipped)."""
    with np.errstate(over="ignore"):  # exp(300) -> inf gives the right limit (0 or 1), as in C
        return _activate(code, x)


def _activate(code: int, x: np.ndarray) -> np.ndarray:
    A = Activation
    x = np.asarray(x, dtype=np.float64)
    expr = _NUMEXPR.get(code)
    if expr is not None and x.size >= _NUMEXPR_MIN_SIZE:
        return ne.evaluate(expr, local_dict={"x": x})
    if code == A.LINEAR:
        return x.copy()
    if code == A.SIGMOID:
        return 1.0 / (1.0 + np.exp(-2.0 * x))
    if code == A.SIGMOID_SYMMETRIC:
        return 2.0 / (1.0 + np.exp(-2.0 * x)) - 1.0
    if code == A.SIGMOID_STEPWISE:
        return _stepwise(x, _SIG_STEP)
    if code == A.SIGMOID_SYMMETRIC_STEPWISE:
        return _stepwise(x, _SYM_STEP)
    if code == A.THRESHOLD:
        return np.where(x < 0, 0.0, 1.0)
    if code == A.THRESHOLD_SYMMETRIC:
        return np.where(x < 0, -1.0, 1.0)
    if code == A.GAUSSIAN:
        return np.exp(-x * x)
    if code == A.GAUSSIAN_SYMMETRIC:
        return np.exp(-x * x) * 2.0 - 1.0
    if code == A.ELLIOT:
        return (x / 2.0) / (1.0 + np.abs(x)) + 0.5
    if code == A.ELLIOT_SYMMETRIC:
        return x / (1.0 + np.abs(x))
    if code == A.LINEAR_PIECE:
        return np.where(x < 0, 0.0, np.where(x > 1, 1.0, x))
    if code == A.LINEAR_PIECE_SYMMETRIC:
        return np.where(x < -1, -1.0, np.where(x > 1, 1.0, x))
    if code == A.SIN_SYMMETRIC:
        return np.sin(x)
    if code == A.COS_SYMMETRIC:
        return np.cos(x)
    if code == A.SIN:
        return np.sin(x) / 2.0 + 0.5
    if code == A.COS:
        return np.cos(x) / 2.0 + 0.5
    if code == A.GAUSSIAN_STEPWISE:
        return np.zeros_like(x)
    raise ValueError(f"unknown activation function {code}")


def derivative(code: int, steepness: np.ndarray, value: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``fann_activation_derived``: what backpropagation multiplies errors by.

    ``x`` is the neuron's stored sum (steepness already applied, clipped): the
    sin/cos derivatives multiply it by the steepness *again*, as libfann does.
    """
    A = Activation
    s = steepness
    if code in (A.LINEAR, A.LINEAR_PIECE, A.LINEAR_PIECE_SYMMETRIC):
        return np.broadcast_to(s, np.shape(value)).astype(float)
    if code in (A.SIGMOID, A.SIGMOID_STEPWISE):
        v = np.clip(value, _LO, _HI)
        return 2.0 * s * v * (1.0 - v)
    if code in (A.SIGMOID_SYMMETRIC, A.SIGMOID_SYMMETRIC_STEPWISE):
        v = np.clip(value, _SLO, _SHI)
        return s * (1.0 - v * v)
    if code == A.GAUSSIAN:
        return -2.0 * x * value * s * s
    if code == A.GAUSSIAN_SYMMETRIC:
        return -2.0 * x * (value + 1.0) * s * s
    if code == A.ELLIOT:
        return s * 1.0 / (2.0 * (1.0 + np.abs(x)) * (1.0 + np.abs(x)))
    if code == A.ELLIOT_SYMMETRIC:
        return s * 1.0 / ((1.0 + np.abs(x)) * (1.0 + np.abs(x)))
    if code == A.SIN_SYMMETRIC:
        return s * np.cos(s * x)
    if code == A.COS_SYMMETRIC:
        return s * -np.sin(s * x)
    if code == A.SIN:
        return s * np.cos(s * x) / 2.0
    if code == A.COS:
        return s * -np.sin(s * x) / 2.0
    # THRESHOLD (libfann reports "can't train"), THRESHOLD_SYMMETRIC, GAUSSIAN_STEPWISE: 0
    return np.zeros(np.shape(value))


def _scalar_table() -> dict[int, object]:
    from math import cos, exp, sin
    A = Activation
    return {
        A.LINEAR: lambda x: x,
        A.SIGMOID: lambda x: 1.0 / (1.0 + exp(-2.0 * x)),
        A.SIGMOID_SYMMETRIC: lambda x: 2.0 / (1.0 + exp(-2.0 * x)) - 1.0,
        A.SIGMOID_STEPWISE: lambda x: _stepwise_scalar(x, _SIG_STEP),
        A.SIGMOID_SYMMETRIC_STEPWISE: lambda x: _stepwise_scalar(x, _SYM_STEP),
        A.THRESHOLD: lambda x: 0.0 if x < 0 else 1.0,
        A.THRESHOLD_SYMMETRIC: lambda x: -1.0 if x < 0 else 1.0,
        A.GAUSSIAN: lambda x: exp(-x * x),
        A.GAUSSIAN_SYMMETRIC: lambda x: exp(-x * x) * 2.0 - 1.0,
        A.GAUSSIAN_STEPWISE: lambda x: 0.0,
        A.ELLIOT: lambda x: (x / 2.0) / (1.0 + abs(x)) + 0.5,
        A.ELLIOT_SYMMETRIC: lambda x: x / (1.0 + abs(x)),
        A.LINEAR_PIECE: lambda x: 0.0 if x < 0 else (1.0 if x > 1 else x),
        A.LINEAR_PIECE_SYMMETRIC: lambda x: -1.0 if x < -1 else (1.0 if x > 1 else x),
        A.SIN_SYMMETRIC: sin,
        A.COS_SYMMETRIC: cos,
        A.SIN: lambda x: sin(x) / 2.0 + 0.5,
        A.COS: lambda x: cos(x) / 2.0 + 0.5,
    }


#: Scalar versions of :func:`activate`, same formulas, for the small-network fast path.
SCALAR = _scalar_table()
