"""Training data in FANN's file format: ``num_pairs num_inputs num_outputs`` then pairs of lines."""

from __future__ import annotations

import os

import numpy as np

from .errors import FannFormatError, NeuralError

MAX_VALUES = 200_000_000


class TrainingData:
    def __init__(self, inputs: np.ndarray, outputs: np.ndarray) -> None:
        inputs = np.ascontiguousarray(inputs, dtype=np.float64)
        outputs = np.ascontiguousarray(outputs, dtype=np.float64)
        if inputs.ndim != 2 or outputs.ndim != 2 or len(inputs) != len(outputs):
            raise NeuralError(f"inputs {inputs.shape} and outputs {outputs.shape} must be 2-D with equal rows")
        self.inputs, self.outputs = inputs, outputs

    @property
    def num_data(self) -> int:
        return len(self.inputs)

    @property
    def num_input(self) -> int:
        return self.inputs.shape[1]

    @property
    def num_output(self) -> int:
        return self.outputs.shape[1]

    def __len__(self) -> int:
        return self.num_data

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainingData":
        with open(path, encoding="ascii") as f:
            return cls.loads(f.read())

    @classmethod
    def loads(cls, text: str) -> "TrainingData":
        tokens = text.split()
        if len(tokens) < 3:
            raise FannFormatError("header", "need 'num_pairs num_inputs num_outputs'")
        try:
            n, n_in, n_out = (int(t) for t in tokens[:3])
        except ValueError:
            raise FannFormatError("header", f"not three integers: {' '.join(tokens[:3])[:60]!r}") from None
        if n < 0 or n_in <= 0 or n_out <= 0 or n * (n_in + n_out) > MAX_VALUES:
            raise FannFormatError("header", f"absurd sizes {n} {n_in} {n_out}")
        need = n * (n_in + n_out)
        if len(tokens) - 3 < need:
            raise FannFormatError("data", f"{len(tokens) - 3} values, header promises {need}")
        try:
            values = np.array(tokens[3:3 + need], dtype=np.float64).reshape(n, n_in + n_out)
        except ValueError:
            raise FannFormatError("data", "a value is not a number") from None
        return cls(values[:, :n_in], values[:, n_in:])

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="ascii") as f:
            f.write(f"{self.num_data} {self.num_input} {self.num_output}\n")
            for x, y in zip(self.inputs, self.outputs):
                f.write(" ".join(f"{v:.20e}" for v in x) + "\n")
                f.write(" ".join(f"{v:.20e}" for v in y) + "\n")

    def shuffle(self, seed: int | None = None) -> None:
        order = np.random.default_rng(seed).permutation(self.num_data)
        self.inputs, self.outputs = self.inputs[order], self.outputs[order]

    def subset(self, pos: int, length: int) -> "TrainingData":
        if pos < 0 or length < 0 or pos + length > self.num_data:
            raise NeuralError(f"subset {pos}+{length} outside 0..{self.num_data}")
        return TrainingData(self.inputs[pos:pos + length], self.outputs[pos:pos + length])

    def merge(self, other: "TrainingData") -> "TrainingData":
        if (self.num_input, self.num_output) != (other.num_input, other.num_output):
            raise NeuralError("cannot merge data of different shapes")
        return TrainingData(np.vstack([self.inputs, other.inputs]), np.vstack([self.outputs, other.outputs]))
