"""Where a swarm's sockets live: one private directory of ipc endpoints by default."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Endpoints:
    frontend: str   # clients (DEALER) -> broker ROUTER
    backend: str    # agents (DEALER) -> broker ROUTER
    events_in: str  # publishers (PUB) -> proxy XSUB
    events: str     # proxy XPUB -> subscribers (SUB)

    @classmethod
    def in_directory(cls, run_dir: str) -> "Endpoints":
        run_dir = os.path.abspath(run_dir)
        return cls(f"ipc://{run_dir}/frontend", f"ipc://{run_dir}/backend",
                   f"ipc://{run_dir}/events-in", f"ipc://{run_dir}/events")

    @classmethod
    def local(cls, home: str | None = None) -> "Endpoints":
        """The swarm ``orchflow-launch`` runs for this user: ``$ORCHFLOW_HOME/run``
        (``~/.orchflow/run`` by default), so code needs no path to find it."""
        home = home or os.environ.get("ORCHFLOW_HOME") or os.path.join(os.path.expanduser("~"), ".orchflow")
        return cls.in_directory(os.path.join(home, "run"))

    @staticmethod
    def events_beside(frontend: str) -> str | None:
        """The events endpoint of the swarm whose front end is ``frontend``: the ipc
        layout, or the TCP one (clients PORT, agents PORT+1, events PORT+2)."""
        if frontend.startswith("ipc://") and frontend.endswith("/frontend"):
            return frontend[: -len("frontend")] + "events"
        tcp = tcp_ports(frontend)
        return tcp.events if tcp is not None else None


@dataclass(frozen=True)
class TcpEndpoints:
    """A swarm's remote endpoints: three consecutive ports, all CURVE-only."""

    frontend: str
    backend: str
    events: str

    @classmethod
    def at(cls, host_port: str) -> "TcpEndpoints":
        """``HOST:PORT`` (as ``orchflow-launch --tcp`` takes it) -> PORT, PORT+1, PORT+2."""
        host, sep, port = host_port.removeprefix("tcp://").rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65534:
            raise ValueError(f"expected HOST:PORT with PORT below 65534, got {host_port!r}")
        p = int(port)
        return cls(f"tcp://{host}:{p}", f"tcp://{host}:{p + 1}", f"tcp://{host}:{p + 2}")


def tcp_ports(frontend: str) -> TcpEndpoints | None:
    if not frontend.startswith("tcp://"):
        return None
    try:
        return TcpEndpoints.at(frontend)
    except ValueError:
        return None


def ipc_path(endpoint: str) -> str | None:
    return endpoint[6:] if endpoint.startswith("ipc://") else None


def metrics_address(text: str) -> str:
    """``PORT`` or ``HOST:PORT`` as ``HOST:PORT``; the host defaults to loopback, because
    metrics name the swarm's kinds, projects and agents."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not [HOST:]PORT with a port in 1..65535")
    return f"{host or '127.0.0.1'}:{int(port)}"
