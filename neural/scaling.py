"""Input and output scaling, as libfann's fann_train_data.c does it (fann_scale_*):
float32 means and deviations accumulated in data order, so scaled values and the
parameters written to a file match libfann's.

A part of :class:`neural.network.Network` (a mixin over its ``header``, ``scale``,
``num_input`` and ``num_output``), kept apart because it is its own concern."""

from __future__ import annotations

from typing import Any

import numpy as np

from .data import TrainingData
from .definitions import _f32, f32
from .errors import NeuralError


class Scaling:
    header: dict[str, Any]
    scale: dict[str, list[float]]
    num_input: int
    num_output: int


    def _scale_params(self, where: str, data: np.ndarray, new_min: float, new_max: float) -> None:
        """FANN's SCALE_SET_PARAM: float32 mean and deviation, accumulated in data order."""
        cols = data.astype(np.float32)
        n = _f32(len(cols))
        if len(cols) == 0:
            width = data.shape[1]
            mean, dev = [0.0] * width, [1.0] * width
            new_min, factor = -1.0, 1.0
        else:
            mean = [float(np.cumsum(c, dtype=np.float32)[-1] / n) for c in cols.T]
            dev = []
            for c, m in zip(cols.T, mean):
                d = (c - _f32(m)).astype(np.float32)
                dev.append(float(_f32(np.sqrt(float(np.cumsum(d * d, dtype=np.float32)[-1] / n)))))
            factor = float(_f32(_f32(_f32(new_max) - _f32(new_min)) / _f32(2.0)))
        width = len(mean)
        self.scale[f"scale_mean_{where}"] = mean
        self.scale[f"scale_deviation_{where}"] = dev
        self.scale[f"scale_new_min_{where}"] = [f32(new_min)] * width
        self.scale[f"scale_factor_{where}"] = [factor] * width
        for other in ("in", "out"):  # a file always carries both halves once scaling is on
            if f"scale_mean_{other}" not in self.scale:
                k = self.num_input if other == "in" else self.num_output
                self.scale.update({f"scale_mean_{other}": [0.0] * k, f"scale_deviation_{other}": [1.0] * k,
                                   f"scale_new_min_{other}": [-1.0] * k, f"scale_factor_{other}": [1.0] * k})
        self.header["scale_included"] = 1

    def set_scaling_params(self, data: TrainingData, new_input_min: float = -1.0, new_input_max: float = 1.0,
                           new_output_min: float = -1.0, new_output_max: float = 1.0) -> None:
        """fann_set_scaling_params: remember how to map data into the given ranges."""
        self.check_data(data)
        self._scale_params("in", data.inputs, new_input_min, new_input_max)
        self._scale_params("out", data.outputs, new_output_min, new_output_max)

    def clear_scaling_params(self) -> None:
        self.scale = {}
        self.header["scale_included"] = 0

    def _scaling(self, where: str) -> tuple[np.ndarray, ...]:
        if not self.header.get("scale_included"):
            raise NeuralError("no scaling parameters: call set_scaling_params first")
        return tuple(np.array(self.scale[f"scale_{k}_{where}"]) for k in ("mean", "deviation", "new_min", "factor"))

    def _scale(self, x: Any, where: str) -> np.ndarray:
        mean, dev, new_min, factor = self._scaling(where)
        return ((np.asarray(x, dtype=np.float64) - mean) / dev - (-1.0)) * factor + new_min

    def _descale(self, x: Any, where: str) -> np.ndarray:
        mean, dev, new_min, factor = self._scaling(where)
        return ((np.asarray(x, dtype=np.float64) - new_min) / factor + (-1.0)) * dev + mean

    def scale_input(self, x: Any) -> np.ndarray:
        return self._scale(x, "in")

    def descale_input(self, x: Any) -> np.ndarray:
        return self._descale(x, "in")

    def scale_output(self, y: Any) -> np.ndarray:
        return self._scale(y, "out")

    def descale_output(self, y: Any) -> np.ndarray:
        return self._descale(y, "out")

    def scale_train(self, data: TrainingData) -> TrainingData:
        return TrainingData(self.scale_input(data.inputs), self.scale_output(data.outputs))

    def descale_train(self, data: TrainingData) -> TrainingData:
        return TrainingData(self.descale_input(data.inputs), self.descale_output(data.outputs))
