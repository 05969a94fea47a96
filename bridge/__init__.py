"""The IDE's front door: orchflow's four API groups (swarm, tasks, memory, neural, plus
workflows and events) as JSON-RPC 2.0 over stdio and WebSocket, and as an MCP server
for AI assistants.  docs/IDE.md is the reference.

- ``errors.py``: the error codes, standard and orchflow's own;
- ``jsonsafe.py``: what JSON cannot carry (bytes, NaN, int keys), carried anyway;
- ``jsonrpc.py``: the JSON-RPC 2.0 framing: requests, batches, notifications;
- ``swarm.py``: the link to the swarm and its state (starting, ready, degraded, ...);
- ``api.py``: the methods;
- ``stdio.py``, ``ws.py``: the transports; ``mcp_server.py``: the MCP tools.
"""
