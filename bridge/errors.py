"""JSON-RPC errors: the standard codes and orchflow's application codes (-32000..-32099,
the range JSON-RPC reserves for servers).  docs/IDE.md lists them with examples."""

from __future__ import annotations

from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SWARM_UNAVAILABLE = -32001  # no swarm, or it is starting, restarting or degraded: retry when swarm.state is ready
REJECTED = -32002           # the broker refused the request (data.code: bad-field, too-large, forbidden, ...)
UNKNOWN_TASK = -32003       # no such task (or it was compacted away)
TIMEOUT = -32004            # the wait ran out; the task goes on (data.id)
UNAUTHORIZED = -32005       # WebSocket only: missing or wrong bearer token


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def invalid_params(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, f"invalid params: {message}")


def unavailable(state: str, why: str = "") -> RpcError:
    return RpcError(SWARM_UNAVAILABLE, f"the swarm is {state}" + (f": {why}" if why else ""), {"state": state})
