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

import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack
import zmq
from zmq.backend import Socket as _BackendSocket

from . import retry, schema
from .errors import PayloadTooLarge, ProtocolError
from .retry import DEFAULT as DEFAULT_RETRY
from .retry import RetryPolicy

VERSION = 1
#: The minor version this code speaks.  1.1 only adds optional fields (``req``, the map
#: form of SUBMIT, ``agent`` on progress events): a 1.0 peer works unchanged.
PROTOCOL = "1.1"
CLIENT = b"OFC1"
AGENT = b"OFA1"
_FAMILIES = {b"OFC": CLIENT, b"OFA": AGENT}

# Every limit and field rule lives in the schema (bus/ofp.schema.json); these names
# are read from it so the code cannot disagree with what third parties are told.
_SCHEMA = schema.ofp()
_LIMITS = _SCHEMA.doc["x-limits"]
_TASK_FIELDS = _SCHEMA.properties("#/$defs/taskMap")


def _max_bytes(node: dict[str, Any]) -> int:
    return node["x-bytes"][1]


#: Default ceiling on one body; larger submissions are refused with ``too-large``.
MAX_BODY = _LIMITS["max_body"]
#: Hard ceiling enforced by libzmq itself (ZMQ_MAXMSGSIZE) so a hostile peer cannot
#: make the broker allocate without bound; bigger frames drop the connection.
MAX_FRAME = _LIMITS["max_frame"]

PRIORITY_MIN, PRIORITY_MAX = _TASK_FIELDS["priority"]["minimum"], _TASK_FIELDS["priority"]["maximum"]
PRIORITY_DEFAULT = _TASK_FIELDS["priority"]["default"]
# Limits are in UTF-8 *bytes*: ids become LMDB keys (511 bytes at most), and a step's
# task id is ``<workflow>/<step>#<run>``, so a workflow id plus a step name plus the
# run suffix still fits under MAX_ID_BYTES.
MAX_ID_BYTES = _max_bytes(_TASK_FIELDS["id"])
MAX_WORKFLOW_ID_BYTES = _max_bytes(_SCHEMA.properties("#/$defs/workflow")["id"])
MAX_STEP_NAME_BYTES = _max_bytes(_SCHEMA.properties("#/$defs/step")["name"])
MAX_KIND_BYTES = _max_bytes(_TASK_FIELDS["kind"])
MAX_PROJECT_BYTES = _max_bytes(_TASK_FIELDS["project"])
MAX_NAME_BYTES = _max_bytes(_SCHEMA.properties("#/$defs/ready")["name"])
MAX_IDS = _LIMITS["max_ids"]            # ids in one CANCEL/FETCH/STATUS
MAX_BATCH = _LIMITS["max_batch"]        # tasks in one SUBMIT, entries in one DONE/FAILED/PROGRESS
MAX_DEPTH = _LIMITS["max_depth"]        # nesting of any body: far under msgpack's packing limit (511),
                                        # so whatever the broker re-wraps (rows, TASK, RESULT) packs
MAX_ERROR_BYTES = _LIMITS["max_error_bytes"]  # a FAILED error is kept to this, in the journal and RESULT
MAX_DELAY = float(_LIMITS["max_delay"])
MAX_STEPS = _LIMITS["max_steps"]
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


def quick_reconnect(sock: zmq.Socket) -> None:
    """Retry a connect after 10 ms, backing off to 2 s, rather than libzmq's flat 100 ms:
    an agent or client started alongside its broker (the whole swarm starts at once)
    is connected as soon as the broker binds, not up to 100 ms later, and a broker
    that stays away is not hammered."""
    sock.reconnect_ivl = 10
    sock.reconnect_ivl_max = 2000


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


_check_task = schema.validator("#/$defs/taskMap", root="task")
_check_submit = schema.body_validator("SUBMIT")
_check_workflow = schema.body_validator("WORKFLOW")
_check_ready = schema.body_validator("READY")
_check_heartbeat = schema.body_validator("HEARTBEAT")
_check_manage = schema.body_validator("MANAGE")
_check_ids = {"CANCEL": schema.body_validator("CANCEL"), "FETCH": schema.body_validator("FETCH"),
              "STATUS": schema.body_validator("STATUS")}
_check_answers = {"DONE": schema.body_validator("DONE"), "FAILED": schema.body_validator("FAILED"),
                  "PROGRESS": schema.body_validator("PROGRESS")}
_check_req = schema.validator("#/$defs/req", root="req")


def request_req(body: Any) -> str | int | None:
    """A request's ``req`` (1.1), if it carries a valid one: echoed in the reply, and in
    the ERROR when the rest of the request is refused."""
    if type(body) is not dict or "req" not in body:
        return None
    try:
        _check_req(body["req"])
    except ProtocolError:
        return None
    return body["req"]


def parse_submit(body: Any) -> tuple[list[TaskSpec], str | int | None]:
    """SUBMIT: an array of task maps (1.0), or ``{"tasks": [...], "req"?}`` (1.1)."""
    _check_submit(body)
    if type(body) is dict:
        return [_task_spec(e) for e in body["tasks"]], body.get("req")
    return [_task_spec(e) for e in body], None


def parse_submission(entry: Any) -> TaskSpec:
    """One task map, checked against the schema (for callers outside SUBMIT)."""
    _check_task(entry)
    return _task_spec(entry)


def _task_spec(entry: dict[str, Any]) -> TaskSpec:
    """A task map the schema has passed: what is left are the rules between fields."""
    kind = entry["kind"]
    if kind in RESERVED_KINDS:
        raise ProtocolError("bad-field", f"kind {kind!r} is reserved (submit workflows with WORKFLOW)")
    policy = retry.parse(entry.get("retry"), entry.get("max_retries"))
    deadline = entry.get("deadline")
    return TaskSpec(entry.get("id"), kind, entry.get("payload"), entry.get("project", "default"),
                    entry.get("priority", PRIORITY_DEFAULT), float(deadline) if deadline is not None else None,
                    policy.max, entry.get("ack", True), policy, _not_before(entry))


def _not_before(entry: dict) -> float | None:
    """``delay`` (seconds from now) or ``eta`` (unix time): when a delayed task may run."""
    delay, eta = entry.get("delay"), entry.get("eta")
    if delay is not None:
        return time.time() + delay if delay > 0 else None
    if eta is not None:
        if eta > time.time() + MAX_DELAY:
            raise ProtocolError("bad-field", "field 'eta' must be a unix time within a year")
        return float(eta)
    return None


STRATEGIES = tuple(_SCHEMA.properties("#/$defs/workflow")["strategy"]["enum"])


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


_STEP_ONLY = ("name", "deps", "retries")


def parse_workflow(body: Any) -> WorkflowSpec:
    """WORKFLOW body (schema ``workflow``); the steps must form a DAG."""
    _check_workflow(body)
    wf_id, project = body.get("id"), body.get("project", "default")
    steps: dict[str, StepSpec] = {}
    for entry in body["steps"]:
        name = entry["name"]
        if name in steps:
            raise ProtocolError("bad-field", f"step name {name!r} is used twice")
        task = _task_spec({k: v for k, v in entry.items() if k not in _STEP_ONLY} | {"project": project})
        steps[name] = StepSpec(name, task, list(dict.fromkeys(entry.get("deps", ()))), entry.get("retries", 0))
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
    return WorkflowSpec(wf_id, body.get("strategy", "parallel"), project, steps, order)


@dataclass(slots=True)
class ReadySpec:
    """A READY, checked: who the agent is and what it takes."""

    name: str
    kinds: list[str]
    capacity: int
    prefetch: int          # tasks held beyond capacity, queued at the agent (1.1)
    running: list[str]     # ids it still runs from before a broker restart (1.1)
    max_body: int          # the largest message it accepts (1.1)


_READY_DEFAULTS = _SCHEMA.defaults("#/$defs/ready")


def parse_ready(body: Any) -> ReadySpec:
    _check_ready(body)
    capacity = body.get("capacity", _READY_DEFAULTS["capacity"])
    return ReadySpec(body.get("name", _READY_DEFAULTS["name"]), list(dict.fromkeys(body["kinds"])), capacity,
                     body.get("prefetch", 0) if capacity else 0, body.get("running", []),
                     body.get("max_body", _READY_DEFAULTS["max_body"]))


def parse_heartbeat(body: Any) -> list[str] | None:
    """A HEARTBEAT body: nil, or a map whose optional ``running`` lists task ids (1.1)."""
    if body is None:
        return None
    _check_heartbeat(body)
    return body.get("running")


def parse_id_list(body: Any, what: str) -> tuple[list[str], str | int | None]:
    """CANCEL, FETCH and STATUS bodies: ``{"ids": [...], "req"?}``, and the ``req``.
    CANCEL and FETCH must name at least one task; STATUS may be nil."""
    _check_ids[what](body)
    if body is None:
        return [], None
    return body.get("ids", []), body.get("req")


def parse_outcomes(body: Any, what: str) -> list[dict]:
    """DONE/FAILED/PROGRESS bodies: a list of maps each holding a string ``id``."""
    _check_answers[what](body)
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

MANAGE_OPS = tuple(_SCHEMA.properties("#/$defs/manage")["op"]["enum"])
MAX_LIST = _SCHEMA.properties("#/$defs/manage")["limit"]["maximum"]


def manage_ref(body: Any) -> str | None:
    """The request's ``ref``, if it has a usable one: echoed in MANAGED and ERROR."""
    ref = body.get("ref") if isinstance(body, dict) else None
    if isinstance(ref, str) and 0 < len(ref.encode(errors="replace")) <= MAX_ID_BYTES:
        return ref
    return None


def parse_manage(body: Any) -> tuple[str, dict[str, Any]]:
    """MANAGE body (schema ``manage``): the op and its fields, which bus/manage.py reads."""
    _check_manage(body)
    return body["op"], body


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
