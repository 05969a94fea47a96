"""FANN-compatible neural networks in numpy: libfann's file format, outputs and training."""

import os as _os

# numexpr logs "NumExpr defaulting to N threads" at INFO into every process that
# configures logging; set what it would pick (cores, at most 16) so it stays quiet.
_os.environ.setdefault("NUMEXPR_MAX_THREADS", str(min(_os.cpu_count() or 1, 16)))

from .activation import Activation
from .data import TrainingData
from .errors import FannFormatError, NeuralError
from .network import BATCH, INCREMENTAL, QUICKPROP, RPROP, SARPROP, Network

__all__ = ["Activation", "BATCH", "FannFormatError", "INCREMENTAL", "Network", "NeuralError", "QUICKPROP",
           "RPROP", "SARPROP", "TrainingData"]
