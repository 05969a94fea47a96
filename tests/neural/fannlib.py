"""ctypes access to the reference libfann (libdoublefann.so.2), for conformance tests."""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np

_P = ctypes.c_void_p
_D = ctypes.c_double


def load() -> ctypes.CDLL | None:
    for name in ("libdoublefann.so.2", ctypes.util.find_library("doublefann") or ""):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        sigs = {
            "fann_create_from_file": ([ctypes.c_char_p], _P),
            "fann_save": ([_P, ctypes.c_char_p], ctypes.c_int),
            "fann_run": ([_P, ctypes.POINTER(_D)], ctypes.POINTER(_D)),
            "fann_destroy": ([_P], None),
            "fann_read_train_from_file": ([ctypes.c_char_p], _P),
            "fann_destroy_train": ([_P], None),
            "fann_train_epoch": ([_P, _P], ctypes.c_float),
            "fann_test_data": ([_P, _P], ctypes.c_float),
            "fann_set_training_algorithm": ([_P, ctypes.c_int], None),
            "fann_set_activation_function_hidden": ([_P, ctypes.c_int], None),
            "fann_set_activation_function_output": ([_P, ctypes.c_int], None),
            "fann_set_activation_steepness_hidden": ([_P, _D], None),
            "fann_set_activation_steepness_output": ([_P, _D], None),
            "fann_set_learning_momentum": ([_P, ctypes.c_float], None),
            "fann_set_learning_rate": ([_P, ctypes.c_float], None),
            "fann_set_train_error_function": ([_P, ctypes.c_int], None),
            "fann_randomize_weights": ([_P, _D, _D], None),
            "fann_get_bit_fail": ([_P], ctypes.c_uint),
        }
        for fn, (args, res) in sigs.items():
            getattr(lib, fn).argtypes = args
            getattr(lib, fn).restype = res
        lib.fann_create_standard.restype = _P
        lib.fann_create_shortcut.restype = _P
        lib.fann_create_sparse.restype = _P
        lib.fann_create_sparse.argtypes = None
        return lib
    return None


def create(lib: ctypes.CDLL, kind: str, layers: list[int], rate: float = 0.6) -> int:
    args = [ctypes.c_uint(len(layers)), *[ctypes.c_uint(n) for n in layers]]
    if kind == "standard":
        return lib.fann_create_standard(*args)
    if kind == "shortcut":
        return lib.fann_create_shortcut(*args)
    return lib.fann_create_sparse(ctypes.c_float(rate), *args)


def run(lib: ctypes.CDLL, ann: int, x: np.ndarray, num_output: int) -> np.ndarray:
    arr = (_D * len(x))(*x)
    out = lib.fann_run(ann, arr)
    return np.array([out[i] for i in range(num_output)])
