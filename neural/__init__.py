"""FANN-compatible neural networks in numpy: libfann's file format, outputs and training."""

from .activation import Activation
from .data import TrainingData
from .errors import FannFormatError, NeuralError
from .network import BATCH, INCREMENTAL, QUICKPROP, RPROP, SARPROP, Network

__all__ = ["Activation", "BATCH", "FannFormatError", "INCREMENTAL", "Network", "NeuralError", "QUICKPROP",
           "RPROP", "SARPROP", "TrainingData"]
