"""Agent SDK: write a handler, run it as a process against the broker."""

from .errors import AgentError, Retry, TaskCancelled, TaskError
from .runtime import Agent, TaskContext

__all__ = ["Agent", "AgentError", "Retry", "TaskCancelled", "TaskContext", "TaskError"]
