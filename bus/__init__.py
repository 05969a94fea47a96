"""The Orchflow bus: broker, wire protocol and client SDK."""

from .endpoints import Endpoints
from .errors import BrokerUnavailable, BusError, PayloadTooLarge, ProtocolError, TaskFailed, TaskRejected

__all__ = ["AsyncClient", "Broker", "BrokerConfig", "BrokerUnavailable", "BusError", "Client", "Endpoints", "PayloadTooLarge",
           "ProtocolError", "Subscription", "TaskFailed", "TaskRejected", "UnknownTask"]

# Loaded on first use (PEP 562): an agent or a client never needs the broker's code, the
# launcher needs neither broker nor asyncio, and every import is start-up time (#14).
_LAZY = {"Broker": "broker", "BrokerConfig": "broker", "Client": "client", "Subscription": "client",
         "UnknownTask": "client", "AsyncClient": "aclient"}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bus' has no attribute {name!r}")
    from importlib import import_module
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
