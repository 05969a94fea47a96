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


class InvalidArgument(StoreError, ValueError):
    """A TTL, delta or other argument that is out of range or of the wrong type."""


class CorruptStore(StoreError):
    """The store is damaged: not a readable LMDB environment, or an entry that fails its checksum."""


class CorruptValue(CorruptStore):
    """One stored value is damaged (bad checksum, or does not decode): reported with its
    key, never returned as a wrong value."""

    def __init__(self, message: str, key: bytes | None = None) -> None:
        super().__init__(message)
        self.key = key


class Forbidden(StoreError):
    """A project tried to write a namespace that is not its own."""


class JournalLocked(StoreError):
    """Another broker holds this journal: one broker per journal, or tasks run twice."""
