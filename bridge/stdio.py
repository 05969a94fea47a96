"""``orchflow serve --stdio``: JSON-RPC 2.0 on stdin/stdout, one message per line (as
MCP's stdio transport frames them).  The IDE spawns it as a child and owns it.

Requests are handled concurrently: a long ``tasks.result`` does not hold up a
``memory.get`` sent after it; responses carry their request's id.  stdout carries
protocol only; logs go to stderr.  EOF on stdin ends the server (the IDE went away).
A line over the size limit is answered with a parse error and skipped, not read into
memory whole.  At EOF the requests already read are answered first, so
``echo '{...}' | orchflow serve --stdio`` works as a one-shot call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path

from .api import OrchflowAPI, Session
from .errors import PARSE_ERROR, RpcError
from .jsonrpc import MAX_MESSAGE, Dispatcher, dumps, error_response, notification
from .swarm import DEGRADED, SwarmLink, launch_detached, launcher_alive

log = logging.getLogger("orchflow.bridge")


class LineWriter:
    """Whole lines to a pipe, in order, from any coroutine."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    def send(self, line: str) -> None:
        if not self.writer.is_closing():
            self.writer.write(line.encode() + b"\n")


async def _stdio_streams() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_MESSAGE + 1)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0))
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin,
                                                       os.fdopen(1, "wb", buffering=0))
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


TOO_LONG = b"\x00too long"  # what read_line returns for a line it skipped


async def read_line(reader: asyncio.StreamReader) -> bytes | None:
    """The next line without its newline; None at EOF; TOO_LONG for a line over the
    limit (skipped, never held whole)."""
    try:
        line = await reader.readuntil(b"\n")
        return line[:-1]
    except asyncio.IncompleteReadError as exc:
        return exc.partial or None
    except asyncio.LimitOverrunError as exc:
        await reader.readexactly(exc.consumed)
        while True:  # drop the rest of the line
            try:
                await reader.readuntil(b"\n")
                return TOO_LONG
            except asyncio.LimitOverrunError as more:
                await reader.readexactly(more.consumed)
            except asyncio.IncompleteReadError:
                return TOO_LONG


async def serve_stdio(home: Path, ensure: bool = False, project: str = "default", poll: float = 0.5) -> int:
    reader, writer = await _stdio_streams()
    sys.stdout = sys.stderr  # stdout is the protocol's: a stray print() (stop_swarm's, a library's) goes to stderr
    out = LineWriter(writer)
    session = Session(lambda method, params: out.send(notification(method, params)))
    link = SwarmLink(home, poll=poll, project=project)
    api = OrchflowAPI(link, project)
    dispatcher = Dispatcher(api)
    await link.check()
    # A broker that is up but slow to answer the first STATUS (a loaded machine, a cold
    # client) is not a broker that is down: look again for a few seconds before saying so,
    # or a one-shot `echo ... | orchflow serve --stdio` fails on a busy CI host.
    settle = time.monotonic() + 3.0
    while link.state == DEGRADED and not link.broker_up and time.monotonic() < settle:
        await asyncio.sleep(0.1)
        await link.check()
    session.notify("swarm.state", link.info())  # the first word: where things stand
    link.listen(lambda state, info: session.notify("swarm.state", info))
    watch = asyncio.create_task(link.run())
    if ensure and not launcher_alive(home):
        asyncio.create_task(asyncio.to_thread(launch_detached, home))
    pending: set[asyncio.Task] = set()

    async def answer(line: bytes) -> None:
        reply = await dispatcher.handle_text(line, session)
        if reply is not None:
            out.send(reply)

    try:
        while True:
            line = await read_line(reader)
            if line is None:  # EOF: answer what was asked (each request has its own timeout), then end
                if pending:
                    await asyncio.wait(set(pending))
                break
            if line == TOO_LONG:
                out.send(dumps(error_response(None, RpcError(PARSE_ERROR, f"message over {MAX_MESSAGE} bytes"))))
                continue
            if not line.strip():
                continue  # blank lines between messages are not messages
            task = asyncio.create_task(answer(line))
            pending.add(task)
            task.add_done_callback(pending.discard)
    finally:
        for task in pending:
            task.cancel()
        watch.cancel()
        api.close_session(session)
        if api.hub is not None:
            api.hub.close()
        await link.close()
        try:
            await writer.drain()
        except (ConnectionError, RuntimeError):
            pass
    return 0


def run(home: Path, ensure: bool, project: str) -> int:
    logging.getLogger("orchflow").setLevel(logging.INFO)
    try:
        return asyncio.run(serve_stdio(home, ensure, project))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    finally:
        sys.stderr.flush()
