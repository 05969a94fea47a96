"""``orchflow serve --ws`` with a real WebSocket client (token and Origin checks), and
``orchflow mcp`` with the MCP SDK's own client over stdio (issue #15)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bus.client import Client
from launcher.procs import free_tcp_block

pytestmark = pytest.mark.timeout(180)

XOR = "4 2 1\n-1 -1\n-1\n-1 1\n1\n1 -1\n1\n1 1\n-1\n"


@pytest.fixture
def ws_server(swarm):
    env, home, _ = swarm
    port = free_tcp_block()
    proc = subprocess.Popen(["orchflow", "serve", "--ws", f"127.0.0.1:{port}", "--allow-origin",
                             "vscode-webview://orchflow"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        token_file = Path(home) / "bridge.token"
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the WebSocket server did not start"
            if token_file.exists():
                try:
                    with socket_to(port):
                        break
                except OSError:
                    pass
            time.sleep(0.1)
        yield port, token_file.read_text().strip(), token_file
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


class socket_to:
    def __init__(self, port: int) -> None:
        import socket
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=1)

    def __enter__(self):
        return self.sock

    def __exit__(self, *exc):
        self.sock.close()


async def rpc(ws, method: str, params: dict | None = None, request_id: int = 1) -> dict:
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}))
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if message.get("id") == request_id:
            return message


def test_websocket_needs_the_token_and_an_allowed_origin(ws_server):
    port, token, token_file = ws_server
    url = f"ws://127.0.0.1:{port}"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600" and len(token) >= 32

    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as no_token:
            async with connect(url):
                pass
        assert no_token.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as wrong:
            async with connect(url, additional_headers={"Authorization": "Bearer " + "x" * len(token)}):
                pass
        assert wrong.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as evil:
            async with connect(url, origin="https://evil.example", additional_headers={
                    "Authorization": f"Bearer {token}"}):
                pass
        assert evil.value.response.status_code == 403
        headers = {"Authorization": f"Bearer {token}"}
        for origin in (None, "vscode-webview://orchflow"):  # the IDE's process, and its allowed webview
            async with connect(url, origin=origin, additional_headers=headers) as ws:
                hello = json.loads(await ws.recv())
                assert hello["method"] == "swarm.state" and hello["params"]["state"] == "ready"
                reply = await rpc(ws, "tasks.submit", {"kind": "sys.echo", "payload": {"x": [1, 2]}, "wait": True})
                assert reply["result"]["result"] == {"x": [1, 2]}
                bad = await rpc(ws, "no.such", request_id=2)
                assert bad["error"]["code"] == -32601

    asyncio.run(scenario())


def test_websocket_refuses_to_serve_off_loopback_without_tls(swarm):
    env = swarm[0]
    done = subprocess.run(["orchflow", "serve", "--ws", "0.0.0.0:1"], env=env, capture_output=True, timeout=30)
    assert done.returncode == 2 and b"without TLS" in done.stderr


def test_mcp_sdk_client_initializes_lists_calls_every_tool_and_gets_progress(swarm):
    env, _, state = swarm

    async def scenario() -> None:
        params = StdioServerParameters(command="orchflow", args=["mcp"], env=dict(env))
        async with stdio_client(params) as streams:
            async with ClientSession(*streams) as session:
                init = await session.initialize()
                assert init.server_info.name == "orchflow"
                tools = {t.name: t for t in (await session.list_tools()).tools}
                assert len(tools) <= 12
                assert all(t.description and "\n" not in t.description.strip() for t in tools.values())

                async def call(name: str, args: dict, progress=None):
                    result = await session.call_tool(name, args, progress_callback=progress)
                    assert not result.is_error, (name, result.content)
                    return result

                def value(result):  # each tool answers with one JSON text
                    assert len(result.content) == 1
                    return json.loads(result.content[0].text)

                seen: list[tuple[float, str | None]] = []

                async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                    seen.append((progress, message))

                script = "for i in 1 2 3; do echo step-$i; sleep 0.2; done"
                ran = value(await call("run_task", {"kind": "shell", "payload": {"cmd": ["sh", "-c", script]}},
                                       on_progress))
                assert ran["exit_code"] == 0 and "step-3" in ran["stdout"]
                assert [m for _, m in seen] == ["step-1", "step-2", "step-3"]
                assert value(await call("swarm_status", {}))["state"] == "ready"
                assert value(await call("memory_put", {"key": "mcp-key", "value": {"v": 1}})) is True
                assert value(await call("memory_get", {"key": "mcp-key"})) == {"v": 1}
                assert value(await call("memory_search", {"text": "mcp-"})) == [["mcp-key", {"v": 1}]]
                flow = value(await call("run_workflow", {"steps": [{"name": "a", "kind": "sys.echo", "payload": 1}]}))
                assert flow["state"] == "done"
                seen.clear()
                trained = value(await call("neural_train", {"name": "mcpnet", "data_text": XOR, "layers": [2, 3, 1],
                                                            "max_epochs": 200, "desired_error": 0.0001}, on_progress))
                assert trained["epochs"] >= 1 and seen and seen[-1][1].startswith("epoch")
                out = value(await call("neural_run", {"name": "mcpnet", "input": [1, -1]}))
                assert isinstance(out, list) and len(out) == 1
                # the task tools on a task nobody serves (submitted as the IDE would): status, result, cancel
                with Client(state["endpoints"]["frontend"]) as client:
                    task_id = client.submit("mcp.unserved", None)
                states = value(await call("task_status", {"ids": [task_id]}))
                assert states == {task_id: "queued"}
                assert value(await call("task_result", {"id": task_id, "wait": False}))["state"] == "queued"
                assert value(await call("cancel_task", {"ids": [task_id]})) == {"sent": [task_id]}
                assert value(await call("task_result", {"id": task_id}))["state"] == "cancelled"
                failing = await session.call_tool("run_task", {"kind": "sys.fail", "payload": "boom"})
                assert failing.is_error and "boom" in failing.content[0].text

    asyncio.run(scenario())
