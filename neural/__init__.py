"""FANN-compatible neural networks in numpy: libfann's file format, outputs and training."""

import os as _os

# numexpr logs "NumExpr defaulting to N threads" at INFO into every process that
# configures logging; set what it would pick (cores, at most 16) so it stays quiet.
_os.environ.setdefault("NUMEXPR_MAX_THREADS", str(min(_os.cpu_count() or 1, 16)))

from typing import Any as _Any

from .errors import FannFormatError, NeuralError

__all__ = ["Activation", "BATCH", "FannFormatError", "INCREMENTAL", "Network", "NeuralError", "QUICKPROP",
           "RPROP", "SARPROP", "TrainingData"]

# The rest loads on first use (PEP 562): the broker imports neural.router and should
# not carry numpy (~12 MB) until a routing model exists.
_LAZY = {"Activation": "activation", "TrainingData": "data", "Network": "network", "BATCH": "definitions",
         "INCREMENTAL": "definitions", "QUICKPROP": "definitions", "RPROP": "definitions", "SARPROP": "definitions"}


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'neural' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
