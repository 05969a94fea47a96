"""LMDB-backed persistence: swarm memory shared by all projects, and the task journal."""

from .env import orchflow_home
from .errors import (CorruptStore, CorruptValue, Forbidden, InvalidArgument, InvalidKey, JournalLocked, NotSerializable,
                     StoreError, ValueTooLarge)
from .journal import TaskJournal
from .memory import SHARED, Memory, project_namespace

__all__ = ["CorruptStore", "CorruptValue", "Forbidden", "InvalidArgument", "InvalidKey", "JournalLocked", "Memory", "NotSerializable", "SHARED",
           "StoreError", "TaskJournal", "ValueTooLarge", "orchflow_home", "project_namespace"]
