"""Every error the store raises."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of everything the store package raises."""


class ValueTooLarge(StoreError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"value of {size} bytes exceeds the limit of {limit} bytes")
        self.size, self.limit = size, limit


class NotSerializable(StoreError):
    """The value cannot be encoded as msgpack (sets, custom objects, ...)."""


class InvalidKey(StoreError):
    """Empty, too long, or containing NUL (the namespace separator)."""


class CorruptValue(StoreError):
    """A stored value failed to decode: reported, never silently dropped or crashed on."""


class CorruptStore(StoreError):
    """The directory is not a readable LMDB environment."""


class Forbidden(StoreError):
    """A project tried to write a namespace that is not its own."""
