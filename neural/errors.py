"""Every error the neural package raises."""

from __future__ import annotations


class NeuralError(Exception):
    """Misuse of a network or training data (shapes, ranges, unknown parameters)."""


class FannFormatError(NeuralError):
    """A FANN network or training-data file that cannot be read; names the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
