"""``orchflow serve --ws HOST:PORT``: the same JSON-RPC methods over WebSocket (the
``websockets`` library), one JSON-RPC message (or batch) per text frame.

Who may connect:

- a bearer token is required (``Authorization: Bearer <token>``); it lives in
  ``$ORCHFLOW_HOME/bridge.token``, created 0600 on first use, so only the user who owns
  the swarm can read it;
- a browser's ``Origin`` must be one given with ``--allow-origin`` (none by default):
  a web page the user happens to visit cannot drive the swarm through their browser;
  clients that send no Origin (the IDE's own process, scripts) pass this check;
- loopback only, unless a certificate is given (wss://): off this machine, a token
  in clear text would be anyone's on the path.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import secrets
import ssl
import sys
from http import HTTPStatus
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .api import OrchflowAPI, Session
from .jsonrpc import MAX_MESSAGE, Dispatcher, notification
from .swarm import SwarmLink, launch_detached, launcher_alive

log = logging.getLogger("orchflow.bridge")

TOKEN_FILE = "bridge.token"


def bridge_token(home: Path) -> str:
    """The token, created (0600, exclusively) if there is none yet."""
    path = Path(home) / TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    Path(home).mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another server made it first: use theirs
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


class WsServer:
    def __init__(self, home: Path, project: str = "default", allow_origins: list[str] | None = None,
                 poll: float = 0.5) -> None:
        self.home = Path(home)
        self.token = bridge_token(self.home)
        self.allow_origins = list(allow_origins or [])
        self.link = SwarmLink(self.home, poll=poll, project=project)
        self.api = OrchflowAPI(self.link, project)
        self.dispatcher = Dispatcher(self.api)
        self.sessions: set[Session] = set()
        self.link.listen(self._broadcast_state)

    def _broadcast_state(self, state: str, info: dict) -> None:
        for session in list(self.sessions):
            session.notify("swarm.state", info)

    def check_token(self, connection: ServerConnection, request: Request) -> Response | None:
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {self.token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            log.warning("refused a WebSocket connection from %s: missing or wrong bearer token",
                        connection.remote_address)
            return connection.respond(HTTPStatus.UNAUTHORIZED, "a bearer token is required "
                                      f"(Authorization: Bearer <the token in $ORCHFLOW_HOME/{TOKEN_FILE}>)\n")
        return None

    async def handle(self, connection: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[str] = asyncio.Queue()
        session = Session(lambda method, params: out.put_nowait(notification(method, params)))
        self.sessions.add(session)
        session.notify("swarm.state", self.link.info())
        pending: set[asyncio.Task] = set()

        async def writer() -> None:
            while True:
                await connection.send(await out.get())

        async def answer(message: str | bytes) -> None:
            reply = await self.dispatcher.handle_text(message, session)
            if reply is not None:
                out.put_nowait(reply)

        send_task = loop.create_task(writer())
        try:
            async for message in connection:
                task = loop.create_task(answer(message))
                pending.add(task)
                task.add_done_callback(pending.discard)
        except ConnectionClosed:
            pass
        finally:
            for task in pending:
                task.cancel()
            send_task.cancel()
            self.sessions.discard(session)
            self.api.close_session(session)

    async def serve(self, host: str, port: int, tls: ssl.SSLContext | None = None,
                    ready: asyncio.Event | None = None, ensure: bool = False) -> None:
        await self.link.check()
        watch = asyncio.create_task(self.link.run())
        if ensure and not launcher_alive(self.home):
            asyncio.create_task(asyncio.to_thread(launch_detached, self.home))
        try:
            async with serve(self.handle, host, port, origins=[None, *self.allow_origins],
                             process_request=self.check_token, max_size=MAX_MESSAGE, ssl=tls) as server:
                self.port = server.sockets[0].getsockname()[1]
                log.info("serving JSON-RPC on %s://%s:%d (token in %s)", "wss" if tls else "ws", host, self.port,
                         self.home / TOKEN_FILE)
                if ready is not None:
                    ready.set()
                await asyncio.Future()  # until cancelled
        finally:
            watch.cancel()
            if self.api.hub is not None:
                self.api.hub.close()
            await self.link.close()


def run(home: Path, address: str, ensure: bool, project: str, allow_origins: list[str],
        cert: str | None, key: str | None) -> int:
    try:
        host, port = split_address(address)
    except ValueError as exc:
        print(f"orchflow serve: --ws: {exc}", file=sys.stderr)
        return 2
    tls = None
    if cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
    elif not is_loopback(host):
        print(f"orchflow serve: refusing to serve {host} without TLS: the token would cross the network in "
              "clear text; give --tls-cert and --tls-key, or bind 127.0.0.1", file=sys.stderr)
        return 2
    logging.getLogger("orchflow").setLevel(logging.INFO)
    server = WsServer(home, project, allow_origins)
    print(f"orchflow serve: ws{'s' if tls else ''}://{host}:{port}, token in {Path(home) / TOKEN_FILE}",
          file=sys.stderr, flush=True)
    try:
        asyncio.run(server.serve(host, port, tls, ensure=ensure))
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"orchflow serve: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0
