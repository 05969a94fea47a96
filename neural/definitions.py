"""What every part of a network shares, as libfann's fann_data.h is: the
enumerations, the default header of a new network, the float32 rounding libfann's C
``float`` parameters imply, and the per-layer weight block."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

LAYER, SHORTCUT = 0, 1
INCREMENTAL, BATCH, RPROP, QUICKPROP, SARPROP = range(5)
ERROR_LINEAR, ERROR_TANH = 0, 1
STOP_MSE, STOP_BIT = 0, 1

_f32 = np.float32


def f32(x: float) -> float:
    """A C ``float`` parameter as libdoublefann sees it: rounded to float32, used as double."""
    return float(_f32(x))


DEFAULT_HEADER: dict[str, Any] = {
    "learning_rate": 0.7, "connection_rate": 1.0, "network_type": 0, "learning_momentum": 0.0,
    "training_algorithm": RPROP, "train_error_function": ERROR_TANH, "train_stop_function": STOP_MSE,
    "cascade_output_change_fraction": 0.01, "quickprop_decay": -0.0001, "quickprop_mu": 1.75,
    "rprop_increase_factor": 1.2, "rprop_decrease_factor": 0.5, "rprop_delta_min": 0.0, "rprop_delta_max": 50.0,
    "rprop_delta_zero": 0.1, "cascade_output_stagnation_epochs": 12, "cascade_candidate_change_fraction": 0.01,
    "cascade_candidate_stagnation_epochs": 12, "cascade_max_out_epochs": 150, "cascade_min_out_epochs": 50,
    "cascade_max_cand_epochs": 150, "cascade_min_cand_epochs": 50, "cascade_num_candidate_groups": 2,
    "bit_fail_limit": 0.35, "cascade_candidate_limit": 1000.0, "cascade_weight_multiplier": 0.4,
    "cascade_activation_functions_count": 10, "cascade_activation_functions": [3, 5, 7, 8, 10, 11, 14, 15, 16, 17],
    "cascade_activation_steepnesses_count": 4, "cascade_activation_steepnesses": [0.25, 0.5, 0.75, 1.0],
    "scale_included": 0,
}
#: Not stored in FANN files but part of a network's training state.
SARPROP_DEFAULTS = {"sarprop_weight_decay_shift": -6.644, "sarprop_step_error_threshold_factor": 0.1,
                    "sarprop_step_error_shift": 1.385, "sarprop_temperature": 0.015}


@dataclass
class Layer:
    n0: int                    # first computed neuron (global index)
    n1: int                    # one past the last computed neuron
    s0: int                    # first source neuron
    s1: int                    # one past the last source neuron
    W: np.ndarray              # (n1-n0, s1-s0) weights, zero where no connection
    mask: np.ndarray | None    # same shape, bool; None when fully connected
    act: np.ndarray            # (n,) activation codes
    steep: np.ndarray          # (n,) steepness
    _groups: list[tuple[int, np.ndarray]] | None = field(default=None, repr=False)

    def groups(self) -> list[tuple[int, np.ndarray]]:
        """Columns per activation function; cached, reset by ``Network.changed``."""
        if self._groups is None:
            codes = np.unique(self.act)
            if len(codes) == 1:  # the common case: a slice, not fancy indexing
                self._groups = [(int(codes[0]), slice(0, len(self.act)))]
            else:
                self._groups = [(int(code), np.flatnonzero(self.act == code)) for code in codes]
        return self._groups
