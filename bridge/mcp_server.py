"""``orchflow mcp``: orchflow's tools for AI coding assistants, over MCP's stdio
transport, on the official ``mcp`` SDK (MCPServer).

A small, real tool set (eleven tools, one-line descriptions): assistants pay for every
tool definition in their context window, and each of these does real work on the
swarm; none is simulated.  Long work (a shell command, a training run) reports MCP
progress from the task's own progress events.  Every tool goes through the same
methods as the IDE's JSON-RPC API (bridge/api.py), so limits, projects and errors
are the same.

    claude mcp add orchflow -- orchflow mcp
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from .api import OrchflowAPI, Session
from .errors import RpcError
from .swarm import SwarmLink

log = logging.getLogger("orchflow.bridge")


def as_text(value: Any) -> str:
    """Every tool answers with one JSON text: what a model reads best, and the same
    shape whatever the value (the SDK would split a list into several contents)."""
    return json.dumps(value, ensure_ascii=False)


def build(link: SwarmLink, project: str = "default") -> MCPServer:
    api = OrchflowAPI(link, project)
    quiet = Session(lambda method, params: None)
    server = MCPServer("orchflow", instructions="Run work on the local orchflow swarm: shell commands, workflows, "
                                                "shared memory and neural networks. Start with swarm_status.")

    async def call(method: str, **params: Any) -> str:
        try:
            return as_text(await api.call(method, {k: v for k, v in params.items() if v is not None}, quiet))
        except RpcError as exc:
            raise ToolError(f"{exc.message} (code {exc.code})") from None

    async def with_progress(ctx: Context, kind: str, payload: Any, timeout: float, proj: str | None,
                            total: float | None = None) -> Any:
        steps = 0

        async def progress(event: dict[str, Any]) -> None:
            nonlocal steps
            steps += 1
            data = event.get("data")
            value, message = float(steps), str(data)[:200]
            if isinstance(data, dict) and "epoch" in data:  # neural.train: epochs of max_epochs
                value = float(data["epoch"])
                message = f"epoch {data['epoch']}, MSE {data.get('mse')}"
            elif isinstance(data, dict) and "line" in data:  # shell: the output line
                message = str(data["line"])[:200]
            await ctx.report_progress(value, total, message)

        try:
            return as_text(await api.run_with_progress(kind, payload, proj or project, timeout, progress))
        except RpcError as exc:
            raise ToolError(f"{exc.message} (code {exc.code})") from None

    @server.tool(description="Run a task of KIND (e.g. shell with {'cmd': 'make test'}) and wait for its outcome.")
    async def run_task(kind: str, ctx: Context, payload: Any = None, project: str | None = None,
                       timeout: float = 600.0) -> str:
        return await with_progress(ctx, kind, payload, timeout, project)

    @server.tool(description="States of tasks by id: queued, running, done, failed, cancelled or expired.")
    async def task_status(ids: list[str]) -> str:
        return await call("tasks.status", ids=ids)

    @server.tool(description="A task's outcome by id (state, result, error), waiting up to timeout seconds.")
    async def task_result(id: str, wait: bool = True, timeout: float = 60.0) -> str:
        return await call("tasks.result", id=id, wait=wait, timeout=timeout)

    @server.tool(description="Cancel tasks or workflows by id.")
    async def cancel_task(ids: list[str]) -> str:
        return await call("tasks.cancel", ids=ids)

    @server.tool(description="Run a workflow: steps [{name, kind, payload, after: [names]}], wait for its outcome.")
    async def run_workflow(steps: list[dict[str, Any]], strategy: str = "parallel", project: str | None = None,
                           timeout: float = 600.0) -> str:
        return await call("workflows.submit", steps=steps, strategy=strategy, project=project, wait=True,
                          timeout=timeout)

    @server.tool(description="Read a key from the swarm's shared memory (this project's, or ns='shared').")
    async def memory_get(key: str, ns: str | None = None, project: str | None = None) -> str:
        return await call("memory.get", key=key, ns=ns, project=project)

    @server.tool(description="Store a value under a key in the swarm's memory (survives restarts; ttl in seconds).")
    async def memory_put(key: str, value: Any, ttl: float | None = None, ns: str | None = None,
                         project: str | None = None) -> str:
        return await call("memory.put", key=key, value=value, ttl=ttl, ns=ns, project=project)

    @server.tool(description="Find memory entries whose key or value contains the text.")
    async def memory_search(text: str, ns: str | None = None, project: str | None = None) -> str:
        return await call("memory.search", text=text, ns=ns, project=project)

    @server.tool(description="Train a named neural network (created if new) on FANN-format data text.")
    async def neural_train(name: str, data_text: str, ctx: Context, layers: list[int] | None = None,
                           max_epochs: int = 1000, desired_error: float = 0.001, project: str | None = None) -> str:
        if layers:
            await call("neural.create", name=name, layers=layers, project=project)
        payload = {"name": name, "data_text": data_text, "max_epochs": max_epochs, "desired_error": desired_error,
                   "report_every": max(1, max_epochs // 50)}
        return await with_progress(ctx, "neural.train", payload, 3600.0, project, total=float(max_epochs))

    @server.tool(description="Run a named neural network on an input vector (or a list of vectors).")
    async def neural_run(name: str, input: list[Any], project: str | None = None) -> str:
        return await call("neural.run", name=name, input=input, project=project)

    @server.tool(description="The swarm's state, agents, queues and counters.")
    async def swarm_status() -> str:
        return await call("swarm.status")

    return server


async def serve(home: Path, project: str = "default", poll: float = 0.5) -> None:
    link = SwarmLink(home, poll=poll, project=project)
    await link.check()
    watch = asyncio.create_task(link.run())
    try:
        await build(link, project).run_stdio_async()
    finally:
        watch.cancel()
        await link.close()


def run(home: Path, project: str) -> int:
    try:
        asyncio.run(serve(home, project))
    except KeyboardInterrupt:
        return 130
    return 0
