"""The Orchflow bus: broker, wire protocol and client SDK."""

from .broker import Broker, BrokerConfig
from .client import Client, Subscription, UnknownTask
from .endpoints import Endpoints
from .errors import BrokerUnavailable, BusError, PayloadTooLarge, ProtocolError, TaskFailed, TaskRejected

__all__ = ["AsyncClient", "Broker", "BrokerConfig", "BrokerUnavailable", "BusError", "Client", "Endpoints", "PayloadTooLarge",
           "ProtocolError", "Subscription", "TaskFailed", "TaskRejected", "UnknownTask"]


def __getattr__(name: str) -> object:
    """``AsyncClient`` loads on first use: importing asyncio costs every broker and agent
    process memory it never uses."""
    if name == "AsyncClient":
        from .aclient import AsyncClient
        return AsyncClient
    raise AttributeError(f"module 'bus' has no attribute {name!r}")
