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

    @staticmethod
    def events_beside(frontend: str) -> str | None:
        """The events endpoint of the swarm whose front end is ``frontend`` (ipc layout only)."""
        if frontend.startswith("ipc://") and frontend.endswith("/frontend"):
            return frontend[: -len("frontend")] + "events"
        return None


def ipc_path(endpoint: str) -> str | None:
    return endpoint[6:] if endpoint.startswith("ipc://") else None
