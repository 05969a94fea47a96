"""JSON-RPC 2.0 (https://www.jsonrpc.org/specification): one request, a batch, or a
notification in; a response, a batch of them, or nothing out.

Strict where the spec is: ``"jsonrpc": "2.0"``, a string ``method``, ``params`` an
object or absent (orchflow's methods take named params), an ``id`` that is a string,
a number or null.  Strict where Python's json module is not: NaN and Infinity are not
JSON and are a parse error here, as is nesting deeper than the bus allows.  A method
that fails with a bug answers INTERNAL_ERROR (logged with its traceback) and the
server serves on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from .api import OrchflowAPI, Session
from .errors import (INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, RpcError)
from .jsonsafe import MAX_DEPTH

log = logging.getLogger("orchflow.bridge")

MAX_MESSAGE = 64 * 1024 * 1024   # bytes of one line (one message or batch)
MAX_BATCH = 1000                 # requests in one batch


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth(value: Any) -> int:
    """Nesting depth, iteratively (a hostile 100,000-deep array must not recurse)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH + 2:
                return depth
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def error_response(request_id: Any, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error.to_json()}


def dumps(message: Any) -> str:
    return json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class Dispatcher:
    def __init__(self, api: OrchflowAPI) -> None:
        self.api = api

    async def handle_text(self, text: str | bytes, session: Session) -> str | None:
        """One line in; the line to send back, or None (notifications only)."""
        if len(text) > MAX_MESSAGE:
            return dumps(error_response(None, RpcError(PARSE_ERROR, f"message over {MAX_MESSAGE} bytes")))
        try:
            message = json.loads(text, parse_constant=_no_constants)
        except RecursionError:
            return dumps(error_response(None, RpcError(PARSE_ERROR, "parse error: nested too deep")))
        except (ValueError, UnicodeDecodeError) as exc:
            return dumps(error_response(None, RpcError(PARSE_ERROR, f"parse error: {exc}")))
        if isinstance(message, list):
            if not message:
                return dumps(error_response(None, RpcError(INVALID_REQUEST, "invalid request: empty batch")))
            if len(message) > MAX_BATCH:
                return dumps(error_response(None, RpcError(INVALID_REQUEST,
                                                           f"invalid request: batch over {MAX_BATCH} requests")))
            replies = await asyncio.gather(*(self.handle_one(m, session) for m in message))
            out = [r for r in replies if r is not None]
            return dumps(out) if out else None
        reply = await self.handle_one(message, session)
        return None if reply is None else dumps(reply)

    async def handle_one(self, message: Any, session: Session) -> dict[str, Any] | None:
        request_id = message.get("id") if isinstance(message, dict) else None
        if not (isinstance(request_id, (str, int, float)) and not isinstance(request_id, bool)) \
                and request_id is not None:
            request_id = None
        if (not isinstance(message, dict) or message.get("jsonrpc") != "2.0"
                or not isinstance(message.get("method"), str)
                or ("params" in message and not isinstance(message["params"], (dict, list)))
                or ("id" in message and request_id is None and message["id"] is not None)):
            return error_response(request_id, RpcError(INVALID_REQUEST, "invalid request: not a JSON-RPC 2.0 "
                                                        "request (jsonrpc, method, params?, id?)"))
        notification = "id" not in message
        method = message["method"]
        try:
            if method not in self.api.methods:
                raise RpcError(METHOD_NOT_FOUND, f"method not found: {method[:100]!r}")
            if _depth(message.get("params")) > MAX_DEPTH + 1:
                raise RpcError(INVALID_REQUEST, f"invalid request: params nested deeper than {MAX_DEPTH}")
            result = await self.api.call(method, message.get("params"), session)
        except RpcError as exc:
            return None if notification else error_response(request_id, exc)
        except Exception:  # noqa: BLE001 - a bug answers this request, never ends the server
            log.exception("internal error in %s", method)
            return None if notification else error_response(
                request_id, RpcError(INTERNAL_ERROR, "internal error (logged); nothing else changed"))
        if notification:
            return None
        return {"jsonrpc": "2.0", "id": request_id, "result": result}


def notification(method: str, params: dict[str, Any]) -> str:
    return dumps({"jsonrpc": "2.0", "method": method, "params": params})
