"""The Orchflow bus: broker, wire protocol and client SDK."""

from .broker import Broker, BrokerConfig
from .client import Client, Subscription, UnknownTask
from .endpoints import Endpoints
from .errors import BrokerUnavailable, BusError, PayloadTooLarge, ProtocolError, TaskFailed, TaskRejected

__all__ = ["Broker", "BrokerConfig", "BrokerUnavailable", "BusError", "Client", "Endpoints", "PayloadTooLarge",
           "ProtocolError", "Subscription", "TaskFailed", "TaskRejected", "UnknownTask"]
