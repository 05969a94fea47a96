"""One log format for every orchflow process, at one level the launcher hands down.

``orchflow-launch --log-level`` (or ``log_level`` in config.toml) sets
``ORCHFLOW_LOG_LEVEL``, and ``--log-format json`` sets ``ORCHFLOW_LOG_FORMAT``; every
child it spawns inherits the environment and reads them here, so one switch turns the
whole swarm's logs up or down, or into JSON lines a log shipper can take.

What is logged: lifecycle (start, stop, joined, lost, restarted), failures with
their reasons, and counts.  Never a payload, a result or an environment value: they
may hold secrets, and logs are read by more people than task data is.
"""

from __future__ import annotations

import json
import logging
import os
import time

LEVEL_ENV = "ORCHFLOW_LOG_LEVEL"
FORMAT_ENV = "ORCHFLOW_LOG_FORMAT"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")
FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class JsonLines(logging.Formatter):
    """One JSON object per line: ts (ISO 8601, UTC), level, logger, pid, msg, and exc
    when there is a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name, "pid": record.process,
               "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def formatter(fmt: str | None = None) -> logging.Formatter:
    style = (fmt or os.environ.get(FORMAT_ENV) or "text").lower()
    return JsonLines() if style == "json" else logging.Formatter(FORMAT)


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    name = (level or os.environ.get(LEVEL_ENV) or "INFO").upper()
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(fmt))
    logging.basicConfig(level=getattr(logging, name if name in LEVELS else "INFO"), handlers=[handler])


def also_log_to(path: str) -> None:
    """Log records to ``path`` too, unless stderr already is that file (a detached
    launcher's output is), so ``orchflow logs launcher`` has them either way."""
    try:
        if os.path.samestat(os.fstat(2), os.stat(path)):
            return
    except OSError:
        pass
    handler = logging.FileHandler(path)
    handler.setFormatter(formatter())
    logging.getLogger().addHandler(handler)
