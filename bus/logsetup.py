"""One log format for every orchflow process, at one level the launcher hands down.

``orchflow-launch --log-level`` (or ``log_level`` in config.toml) sets
``ORCHFLOW_LOG_LEVEL``; every child it spawns inherits the environment and reads it
here, so a single switch turns the whole swarm's logs up or down.
"""

from __future__ import annotations

import logging
import os

LEVEL_ENV = "ORCHFLOW_LOG_LEVEL"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def configure_logging(level: str | None = None) -> None:
    name = (level or os.environ.get(LEVEL_ENV) or "INFO").upper()
    logging.basicConfig(level=getattr(logging, name if name in LEVELS else "INFO"), format=FORMAT)
