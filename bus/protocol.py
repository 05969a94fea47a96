"""OFP/1, the Orchflow wire protocol: the only place frames are built or parsed.

Every process that speaks to the broker (clients, agents, the launcher, tests,
benchmarks) imports this module, so the layout in ``docs/PROTOCOL.md`` has exactly
one implementation in Python.  A message is three ZeroMQ frames after any routing
envelope::

    [signature] [command: 1 byte] [body: msgpack, may be empty]

The signature names the peer type and the protocol version (``OFC1`` for clients,
``OFA1`` for agents), so a peer speaking a future version is told so instead of
being misread.  Bodies that carry tasks or results are *arrays*, which lets every
hop batch: one SUBMIT may carry many tasks, one TASK many assignments, one DONE
many results.  Batching is what makes the bus faster than per-message forwarding.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack
import zmq
from zmq.backend import Socket as _BackendSocket

from . import retry
from .errors import PayloadTooLarge, ProtocolError
from .retry import DEFAULT as DEFAULT_RETRY
from .retry import RetryPolicy

VERSION = 1
CLIENT = b"OFC1"
AGENT = b"OFA1"
_FAMILIES = {b"OFC": CLIENT, b"OFA": AGENT}

#: Default ceiling on one body; larger submissions are refused with ``too-large``.
MAX_BODY = 16 * 1024 * 1024
#: Hard ceiling enforced by libzmq itself (ZMQ_MAXMSGSIZE) so a hostile peer cannot
#: make the broker allocate without bound; bigger frames drop the connection.
MAX_FRAME = 256 * 1024 * 1024

PRIORITY_MIN, PRIORITY_MAX, PRIORITY_DEFAULT = 0, 9, 5
# Limits are in UTF-8 *bytes*: ids become LMDB keys (511 bytes at most), and a step's
# task id is ``<workflow>/<step>#<run>``, so a workflow id plus a step name plus the
# run suffix still fits under MAX_ID_BYTES.
MAX_ID_BYTES = 255
MAX_WORKFLOW_ID_BYTES = 128
MAX_STEP_NAME_BYTES = 60
MAX_KIND_BYTES = 128
MAX_PROJECT_BYTES = 64
MAX_NAME_BYTES = 128
MAX_IDS = 10_000            # ids in one CANCEL/FETCH/STATUS
MAX_BATCH = 100_000         # tasks in one SUBMIT, entries in one DONE/FAILED/PROGRESS
MAX_DEPTH = 64              # nesting of any body: far under msgpack's packing limit (511),
                            # so whatever the broker re-wraps (rows, TASK, RESULT) packs
MAX_ERROR_BYTES = 64 * 1024  # a FAILED error is kept to this, in the journal and in RESULT
#: Kinds clients may not submit: the broker makes tasks of them itself.
RESERVED_KINDS = frozenset({"workflow"})


class Command(IntEnum):
    # client -> broker
    SUBMIT = 0x01
    CANCEL = 0x02
    STATUS = 0x03
    FETCH = 0x04
    WORKFLOW = 0x05
    MANAGE = 0x06
    # broker -> client
    ACCEPTED = 0x11
    RESULT = 0x12
    STATUS_REPLY = 0x13
    MANAGED = 0x14
    # agent -> broker
    READY = 0x21
    PROGRESS = 0x22
    DONE = 0x23
    FAILED = 0x24
    # broker -> agent (CANCEL reuses 0x02 with a list of ids)
    TASK = 0x31
    # either direction between broker and agent
    HEARTBEAT = 0x40
    DISCONNECT = 0x41
    # broker -> anyone
    ERROR = 0x7F


_COMMAND_BYTES = {c: bytes([c]) for c in Command}
_BYTE_COMMANDS = {bytes([c]): c for c in Command}

_BODYLESS = frozenset({Command.DISCONNECT})  # HEARTBEAT may carry {"running": [...]} (1.1)
_NIL = b"\xc0"  # an encoded nil is an empty body (section 3): libraries that encode null send it
CLIENT_COMMANDS = frozenset({Command.SUBMIT, Command.CANCEL, Command.STATUS, Command.FETCH, Command.WORKFLOW,
                             Command.MANAGE})
AGENT_COMMANDS = frozenset(
    {Command.READY, Command.PROGRESS, Command.DONE, Command.FAILED, Command.HEARTBEAT, Command.DISCONNECT}
)


class State:
    """Task states as they appear on the wire, in the journal and in event topics."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FINAL = frozenset({"done", "failed", "cancelled", "expired"})
    ALL = FINAL | {"queued", "running"}


# ---------------------------------------------------------------------------
# encoding


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def message(signature: bytes, command: Command, body: Any = None) -> list[bytes]:
    """Frames for one message; ``body=None`` sends an empty body frame."""
    return [signature, _COMMAND_BYTES[command], b"" if body is None else pack(body)]


def command_byte(command: Command) -> bytes:
    return _COMMAND_BYTES[command]


def client_message(command: Command, body: Any = None) -> list[bytes]:
    return message(CLIENT, command, body)


def agent_message(command: Command, body: Any = None) -> list[bytes]:
    return message(AGENT, command, body)


def error_body(code: str, text: str, ids: list[str] | None = None, ref: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": text}
    if ids:
        body["ids"] = ids
    if ref is not None:
        body["ref"] = ref
    return body


# ---------------------------------------------------------------------------
# socket I/O
#
# pyzmq's send_multipart/recv_multipart go through Python wrappers and enum flag
# arithmetic on every frame (about 5 us per message).  Calling the Cython backend
# with plain-int flags costs under 1 us to send, which matters on every hop of
# every task.

_raw_send = _BackendSocket.send
_raw_recv = _BackendSocket.recv
_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)


def send(sock: zmq.Socket, frames: list[bytes], block: bool = False) -> None:
    """Send one multipart message; raises ``zmq.Again`` if it cannot be queued (non-blocking)."""
    flags = 0 if block else _NOBLOCK
    more = flags | _SNDMORE
    last = len(frames) - 1
    for i in range(last):
        _raw_send(sock, frames[i], more)
    _raw_send(sock, frames[last], flags)


def try_recv_with_user(sock: zmq.Socket) -> tuple[list[bytes], str | None] | None:
    """:func:`try_recv`, plus the ZAP User-Id libzmq stamped on the message (None on
    connections without ZAP, i.e. ipc): the sender's identity, which no frame can forge."""
    try:
        frame = _raw_recv(sock, _NOBLOCK, False)
    except zmq.Again:
        return None
    try:
        user = frame.get("User-Id")
    except zmq.ZMQError:
        user = None
    frames = [frame.bytes]
    while frame.more:
        frame = _raw_recv(sock, _NOBLOCK, False)
        frames.append(frame.bytes)
    return frames, user


def try_recv(sock: zmq.Socket) -> list[bytes] | None:
    """The next whole message, or None if none is waiting.

    One zmq.Again at the end of a run (3 µs) instead of an EVENTS query per
    message (1.4 µs); frames come as zmq.Frame and say themselves whether more
    follow, where asking the socket (RCVMORE) costs pyzmq an enum, 0.7 µs a frame."""
    try:
        frame = _raw_recv(sock, _NOBLOCK, False)
    except zmq.Again:
        return None
    frames = [frame.bytes]
    while frame.more:
        frame = _raw_recv(sock, _NOBLOCK, False)
        frames.append(frame.bytes)
    return frames


# ---------------------------------------------------------------------------
# decoding


def parse(frames: list[bytes], signature: bytes, allowed: frozenset[Command] | None = None,
          max_body: int = MAX_BODY) -> tuple[Command, Any]:
    """Validate the frame layout and decode the body.

    Raises :class:`ProtocolError` with a stable code for every way a message can
    be wrong; callers turn that into an ERROR reply and a counter, never a crash.
    """
    if len(frames) != 3:
        raise ProtocolError("bad-frame", f"expected 3 frames (signature, command, body), got {len(frames)}")
    sig, cmd, body = frames
    if sig != signature:
        family = _FAMILIES.get(bytes(sig[:3]))
        if family == signature:
            raise ProtocolError("bad-version", f"unsupported protocol version {bytes(sig)!r}; this broker speaks {signature!r}")
        raise ProtocolError("bad-signature", f"expected signature {signature!r}, got {bytes(sig[:16])!r}")
    command = _BYTE_COMMANDS.get(bytes(cmd))
    if command is None or (allowed is not None and command not in allowed):
        raise ProtocolError("bad-command", f"unknown or misplaced command {bytes(cmd[:4]).hex()}")
    if len(body) > max_body:
        raise PayloadTooLarge(len(body), max_body)
    if not body or body == _NIL:
        return command, None
    if command in _BODYLESS:
        raise ProtocolError("bad-body", f"{command.name} carries no body")
    try:
        decoded = unpack(body)
    except Exception as exc:  # msgpack raises a zoo of types for garbage input
        raise ProtocolError("bad-body", f"body is not valid msgpack: {type(exc).__name__}") from None
    check_depth(decoded)
    return command, decoded


_CONTAINERS = (list, dict)


def check_depth(obj: Any, limit: int = MAX_DEPTH) -> None:
    """ProtocolError ``too-deep`` if ``obj`` nests containers deeper than ``limit``.

    Iterative, so hostile nesting costs no recursion; only containers are pushed,
    so a flat list of numbers is one pass of type checks."""
    if type(obj) not in _CONTAINERS:
        return
    stack = [(obj, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > limit:
            raise ProtocolError("too-deep", f"body nests deeper than {limit} levels")
        for child in (node.values() if type(node) is dict else node):
            if type(child) in _CONTAINERS:
                push((child, depth + 1))


def _text(value: Any, field: str, limit: int, allowed_empty: bool = False) -> str:
    """A string field within ``limit`` UTF-8 bytes; bad-field otherwise."""
    if not isinstance(value, str) or (not value and not allowed_empty):
        raise ProtocolError("bad-field", f"field {field!r} must be a non-empty string")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise ProtocolError("bad-field", f"field {field!r} is not valid UTF-8") from None
    if size > limit or "\x00" in value:
        raise ProtocolError("bad-field", f"field {field!r} must be 1..{limit} UTF-8 bytes without NUL, got {size}")
    return value


def describe_error(error: Any) -> str:
    """A FAILED ``error`` as the string the journal and RESULT keep: strings are cut to
    MAX_ERROR_BYTES; anything else is summarized by reprlib (bounded depth and length,
    so a hostile nested value costs no recursion)."""
    if not isinstance(error, str):
        import reprlib
        error = f"(non-string error) {reprlib.repr(error)}"
    if len(error) > MAX_ERROR_BYTES // 4:
        raw = error.encode(errors="replace")
        if len(raw) > MAX_ERROR_BYTES:
            error = raw[:MAX_ERROR_BYTES].decode(errors="ignore") + " ...(truncated)"
    return error


# ---------------------------------------------------------------------------
# typed bodies


@dataclass(slots=True)
class TaskSpec:
    """A validated submission; the broker builds its task record from this."""

    id: str | None
    kind: str
    payload: Any
    project: str
    priority: int
    deadline: float | None
    max_retries: int
    ack: bool = True
    retry: RetryPolicy = DEFAULT_RETRY
    not_before: float | None = None   # delayed task: not dispatched before this unix time


def _want(entry: dict, key: str, types: type | tuple[type, ...], default: Any) -> Any:
    value = entry.get(key, default)
    if value is default:
        return value
    if isinstance(value, bool) or not isinstance(value, types):
        raise ProtocolError("bad-field", f"field {key!r} must be {getattr(types, '__name__', types)}, got {type(value).__name__}")
    return value


def parse_submission(entry: Any) -> TaskSpec:
    if not isinstance(entry, dict):
        raise ProtocolError("bad-field", f"each task must be a map, got {type(entry).__name__}")
    kind = _text(entry.get("kind"), "kind", MAX_KIND_BYTES)
    if kind in RESERVED_KINDS:
        raise ProtocolError("bad-field", f"kind {kind!r} is reserved (submit workflows with WORKFLOW)")
    task_id = entry.get("id")
    if task_id is not None:
        _text(task_id, "id", MAX_ID_BYTES)
    project = _text(entry.get("project", "default"), "project", MAX_PROJECT_BYTES)
    priority = _want(entry, "priority", int, PRIORITY_DEFAULT)
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ProtocolError("bad-field", f"field 'priority' must be in {PRIORITY_MIN}..{PRIORITY_MAX}")
    deadline = _want(entry, "deadline", (int, float), None)
    if deadline is not None and not math.isfinite(deadline):
        raise ProtocolError("bad-field", "field 'deadline' must be a finite unix time")
    policy = retry.parse(entry.get("retry"), entry.get("max_retries"))
    ack = entry.get("ack", True)
    if not isinstance(ack, bool):
        raise ProtocolError("bad-field", "field 'ack' must be a boolean")
    return TaskSpec(task_id, kind, entry.get("payload"), project, priority,
                    float(deadline) if deadline is not None else None, policy.max, ack, policy,
                    _not_before(entry))


MAX_DELAY = 366 * 86_400.0


def _not_before(entry: dict) -> float | None:
    """``delay`` (seconds from now) or ``eta`` (unix time): when a delayed task may run."""
    delay, eta = entry.get("delay"), entry.get("eta")
    if delay is not None and eta is not None:
        raise ProtocolError("bad-field", "give 'delay' or 'eta', not both")
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= MAX_DELAY:
            raise ProtocolError("bad-field", f"field 'delay' must be 0..{MAX_DELAY:g} seconds")
        return time.time() + delay if delay > 0 else None
    if eta is not None:
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) \
                or eta > time.time() + MAX_DELAY:
            raise ProtocolError("bad-field", "field 'eta' must be a unix time within a year")
        return float(eta)
    return None


STRATEGIES = ("parallel", "sequential", "adaptive")
MAX_STEPS = 10_000


@dataclass(slots=True)
class StepSpec:
    name: str
    task: TaskSpec
    deps: list[str]
    retries: int


@dataclass(slots=True)
class WorkflowSpec:
    id: str | None
    strategy: str
    project: str
    steps: dict[str, StepSpec]
    order: list[str]            # a topological order, ties in submission order


def parse_workflow(body: Any) -> WorkflowSpec:
    """WORKFLOW body: ``{"id"?, "strategy"?, "project"?, "steps": [{"name", "kind", "payload"?,
    "deps"?, "priority"?, "retry"?, "max_retries"?, "retries"?}, ...]}``; must be a DAG."""
    if not isinstance(body, dict):
        raise ProtocolError("bad-body", "WORKFLOW body must be a map")
    strategy = body.get("strategy", "parallel")
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ProtocolError("bad-field", f"field 'strategy' must be one of {', '.join(STRATEGIES)}")
    wf_id = body.get("id")
    if wf_id is not None and "/" in _text(wf_id, "id", MAX_WORKFLOW_ID_BYTES):
        raise ProtocolError("bad-field", f"field 'id' must be 1..{MAX_WORKFLOW_ID_BYTES} bytes without '/'")
    project = _text(body.get("project", "default"), "project", MAX_PROJECT_BYTES)
    raw = body.get("steps")
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_STEPS:
        raise ProtocolError("bad-field", f"field 'steps' must be a list of 1..{MAX_STEPS} steps")
    steps: dict[str, StepSpec] = {}
    for entry in raw:
        if not isinstance(entry, dict):
            raise ProtocolError("bad-field", "each step must be a map")
        name = entry.get("name")
        if not isinstance(name, str) or "/" in name or "#" in name:
            raise ProtocolError("bad-field", f"step 'name' must be 1..{MAX_STEP_NAME_BYTES} bytes without '/' or '#'")
        _text(name, "name", MAX_STEP_NAME_BYTES)
        if name in steps:
            raise ProtocolError("bad-field", f"step name {name!r} is used twice")
        deps = entry.get("deps", [])
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise ProtocolError("bad-field", f"step {name!r}: 'deps' must be a list of step names")
        retries = _want(entry, "retries", int, 0)
        if not 0 <= retries <= 100:
            raise ProtocolError("bad-field", f"step {name!r}: 'retries' must be in 0..100")
        if "delay" in entry or "eta" in entry:
            raise ProtocolError("bad-field", f"step {name!r}: 'delay' and 'eta' are for tasks, not steps")
        task = parse_submission({k: v for k, v in entry.items() if k not in ("name", "deps", "retries", "id")}
                                | {"project": project})
        steps[name] = StepSpec(name, task, list(dict.fromkeys(deps)), retries)
    for step in steps.values():
        for dep in step.deps:
            if dep not in steps:
                raise ProtocolError("bad-field", f"step {step.name!r} depends on unknown step {dep!r}")
    # Kahn's algorithm: a topological order, or a cycle
    indegree = {n: len(s.deps) for n, s in steps.items()}
    children: dict[str, list[str]] = {n: [] for n in steps}
    for s in steps.values():
        for dep in s.deps:
            children[dep].append(s.name)
    ready = [n for n in steps if indegree[n] == 0]
    order: list[str] = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for child in children[n]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if len(order) != len(steps):
        cyclic = sorted(n for n, d in indegree.items() if d > 0)
        raise ProtocolError("bad-field", f"the steps have a dependency cycle through {cyclic[:5]}")
    return WorkflowSpec(wf_id, strategy, project, steps, order)


def parse_prefetch(body: Any) -> int:
    """READY's optional ``prefetch`` (1.1): tasks held beyond ``capacity``, queued at the agent."""
    prefetch = body.get("prefetch", 0) if isinstance(body, dict) else 0
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or not 0 <= prefetch <= 100_000:
        raise ProtocolError("bad-field", "READY 'prefetch' must be an int in 0..100000")
    return prefetch


def parse_ready(body: Any) -> tuple[str, list[str], int]:
    """READY body: ``{"name": str, "kinds": [str, ...], "capacity": int}``."""
    if not isinstance(body, dict):
        raise ProtocolError("bad-body", "READY body must be a map")
    kinds = body.get("kinds")
    if not isinstance(kinds, list) or not 0 < len(kinds) <= 1000:
        raise ProtocolError("bad-field", "READY 'kinds' must be a non-empty list of at most 1000 strings")
    kinds = list(dict.fromkeys(_text(k, "kinds", MAX_KIND_BYTES) for k in kinds))
    capacity = _want(body, "capacity", int, 1)
    if not 0 <= capacity <= 100_000:
        raise ProtocolError("bad-field", "READY 'capacity' must be in 0..100000")
    name = _text(body.get("name", "agent"), "name", MAX_NAME_BYTES)
    return name, kinds, capacity


def parse_running(body: Any) -> list[str] | None:
    """READY's or HEARTBEAT's optional ``running``: the ids an agent is running (1.1)."""
    if not isinstance(body, dict) or "running" not in body:
        return None
    running = body["running"]
    if not isinstance(running, list) or len(running) > MAX_BATCH or not all(isinstance(i, str) for i in running):
        raise ProtocolError("bad-field", "'running' must be a list of task ids")
    return running


def parse_heartbeat(body: Any) -> list[str] | None:
    """A HEARTBEAT body: nil, or a map whose optional ``running`` lists task ids (1.1)."""
    if body is not None and not isinstance(body, dict):
        raise ProtocolError("bad-body", "HEARTBEAT body must be empty or a map")
    return parse_running(body)


def parse_max_body(body: Any) -> int:
    """READY's optional ``max_body`` (1.1): the largest message the agent accepts."""
    value = body.get("max_body", MAX_BODY) if isinstance(body, dict) else MAX_BODY
    if isinstance(value, bool) or not isinstance(value, int) or not 1024 <= value <= MAX_FRAME:
        raise ProtocolError("bad-field", f"READY 'max_body' must be an integer in 1024..{MAX_FRAME}")
    return value


def parse_id_list(body: Any, what: str, required: bool = True) -> list[str]:
    """CANCEL/FETCH/STATUS bodies: ``{"ids": [str, ...]}``; CANCEL and FETCH must name
    at least one task (an empty one would get no answer at all)."""
    if not isinstance(body, dict):
        raise ProtocolError("bad-body", f"{what} body must be a map with an 'ids' list")
    ids = body.get("ids", [])
    if not isinstance(ids, list) or len(ids) > MAX_IDS or (required and not ids):
        raise ProtocolError("bad-field", f"{what} 'ids' must be a list of {int(required)}..{MAX_IDS} task ids")
    for task_id in ids:
        _text(task_id, "ids", MAX_ID_BYTES)
    return ids


def parse_outcomes(body: Any, what: str) -> list[dict]:
    """DONE/FAILED/PROGRESS bodies: a list of maps each holding an ``id``."""
    if not isinstance(body, list) or len(body) > MAX_BATCH:
        raise ProtocolError("bad-body", f"{what} body must be a list of at most {MAX_BATCH} entries")
    for entry in body:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise ProtocolError("bad-field", f"each {what} entry must be a map with a string 'id'")
    return body


def packed_array(items: list[bytes]) -> bytes:
    """A msgpack array of already-packed elements: lets the broker measure each TASK
    entry once and cut batches under the receiver's limit without packing twice."""
    n = len(items)
    head = bytes([0x90 | n]) if n < 16 else (b"\xdc" + n.to_bytes(2, "big") if n < 65536
                                              else b"\xdd" + n.to_bytes(4, "big"))
    return head + b"".join(items)


def batches_under(entries: list[Any], limit: int) -> tuple[list[bytes], list[tuple[Any, int]]]:
    """Pack ``entries`` as msgpack arrays of at most ``limit`` bytes each.

    Returns the packed bodies and the entries that do not fit alone, with their sizes,
    so the sender can fail those instead of sending what the receiver must drop.  The
    common case (everything fits) packs once, as one array."""
    whole = pack(entries)
    if len(whole) <= limit:
        return [whole], []
    bodies: list[bytes] = []
    oversize: list[tuple[Any, int]] = []
    group: list[bytes] = []
    size = 5  # the largest array header
    for entry in entries:
        packed = pack(entry)
        if len(packed) + 5 > limit:
            oversize.append((entry, len(packed)))
            continue
        if size + len(packed) > limit:
            bodies.append(packed_array(group))
            group, size = [], 5
        group.append(packed)
        size += len(packed)
    if group:
        bodies.append(packed_array(group))
    return bodies, oversize


# ---------------------------------------------------------------------------
# MANAGE (bus/manage.py does the work)

MANAGE_OPS = ("tasks", "purge", "requeue", "schedule.add", "schedule.list", "schedule.remove")
MAX_LIST = 10_000


def manage_ref(body: Any) -> str | None:
    """The request's ``ref``, if it has a usable one: echoed in MANAGED and ERROR."""
    ref = body.get("ref") if isinstance(body, dict) else None
    if isinstance(ref, str) and 0 < len(ref.encode(errors="replace")) <= MAX_ID_BYTES:
        return ref
    return None


def parse_manage(body: Any) -> tuple[str, dict[str, Any]]:
    """MANAGE body: ``{"op": one of MANAGE_OPS, "ref"?: str, ...the op's fields}``."""
    if not isinstance(body, dict):
        raise ProtocolError("bad-body", "MANAGE body must be a map")
    op = body.get("op")
    if op not in MANAGE_OPS:
        raise ProtocolError("bad-field", f"field 'op' must be one of {', '.join(MANAGE_OPS)}")
    if "ref" in body:
        _text(body["ref"], "ref", MAX_ID_BYTES)
    return op, body


def checked_text(value: Any, field: str, limit: int) -> str:
    """A string field: 1..``limit`` UTF-8 bytes without NUL, else ``bad-field``."""
    return _text(value, field, limit)


def optional_text(body: dict, field: str, limit: int) -> str | None:
    value = body.get(field)
    return None if value is None else _text(value, field, limit)


def bounded_int(body: dict, field: str, low: int, high: int, default: int) -> int:
    value = body.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ProtocolError("bad-field", f"field {field!r} must be an int in {low}..{high}")
    return value
