"""``$ORCHFLOW_HOME/config.toml``: settings a person keeps instead of typing flags.

Read with the standard library's tomllib.  Precedence: a command-line flag, then the
file, then the built-in default.  Unknown keys and wrong types are errors that name
the key, so a typo never silently does nothing.

    agents = 1            # built-in agent processes
    capacity = 8          # concurrent tasks per agent
    neural_workers = 1
    neural_start = "demand"  # or "eager": start the neural workers with the swarm
    learned_routing = false  # true: route by a model learned from every task's outcome
    log_level = "INFO"    # DEBUG, INFO, WARNING, ERROR: every process of the swarm
    result_ttl = 3600     # seconds finished tasks, and failed ones (dead letters), are kept
    unserved_grace = 600  # fail queued tasks of a kind no agent served this long (default: wait)
    heartbeat = 1.0       # seconds between heartbeats
    tcp = "127.0.0.1:5555"  # also listen for remote peers, CURVE keys only
    log_format = "json"   # "text" (default) or "json": one JSON object per line
    metrics = "127.0.0.1:9464"  # serve Prometheus metrics here
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from bus.logsetup import FORMATS, LEVELS

from .errors import CliError

FILE = "config.toml"
DEFAULTS: dict[str, Any] = {"agents": 1, "capacity": 8, "neural_workers": 1, "neural_start": "demand",
                            "learned_routing": False,
                            "log_level": "INFO",
                            "result_ttl": 3600.0, "heartbeat": 1.0, "tcp": None, "unserved_grace": None,
                            "log_format": "text", "metrics": None}
NEURAL_STARTS = ("demand", "eager")
_TYPES: dict[str, tuple[type, ...]] = {"agents": (int,), "capacity": (int,), "neural_workers": (int,),
                                       "neural_start": (str,), "learned_routing": (bool,),
                                       "log_level": (str,), "result_ttl": (int, float),
                                       "heartbeat": (int, float), "tcp": (str,), "unserved_grace": (int, float),
                                       "log_format": (str,), "metrics": (str,)}


def load(home: Path) -> dict[str, Any]:
    """The file's settings (only those it sets); CliError naming the problem."""
    path = home / FILE
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}") from None
    for key, value in doc.items():
        if key not in _TYPES:
            raise CliError(f"{path}: unknown setting {key!r}; known: {', '.join(_TYPES)}")
        if (isinstance(value, bool) and bool not in _TYPES[key]) or not isinstance(value, _TYPES[key]):
            raise CliError(f"{path}: {key} must be {' or '.join(t.__name__ for t in _TYPES[key])}")
    if "log_level" in doc and doc["log_level"].upper() not in LEVELS:
        raise CliError(f"{path}: log_level must be one of {', '.join(LEVELS)}")
    if "neural_start" in doc and doc["neural_start"] not in NEURAL_STARTS:
        raise CliError(f"{path}: neural_start must be one of {', '.join(NEURAL_STARTS)}")
    if "log_format" in doc and doc["log_format"] not in FORMATS:
        raise CliError(f"{path}: log_format must be one of {', '.join(FORMATS)}")
    for key in ("agents", "capacity", "result_ttl", "heartbeat", "unserved_grace"):
        if key in doc and doc[key] <= 0:
            raise CliError(f"{path}: {key} must be positive")
    return doc


def settings(home: Path, flags: dict[str, Any]) -> dict[str, Any]:
    """Every setting: the flag where one was given (not None), else the file, else the default."""
    merged = {**DEFAULTS, **load(home)}
    merged.update({k: v for k, v in flags.items() if v is not None})
    return merged
