"""``orchflow logs [PROCESS] [-n N] [-f]``: the swarm's logs, one process or all.

Every process of a swarm writes ``$ORCHFLOW_HOME/logs/<process>.log`` (the launcher
sends each child's output there).  Without PROCESS, every log's tail is shown, each
line prefixed with its process; ``-f`` then follows them all, as ``tail -F`` would:
a log that is truncated or replaced is read again from its start.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import exit_codes
from .errors import CliError

POLL = 0.2


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("logs", parents=[common], help="show (and follow) the swarm's logs",
                       description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("process", nargs="?", help="broker, launcher, agent0, neural0, ... (default: all)")
    p.add_argument("-n", "--lines", type=int, default=20, help="lines of each log to show first (default 20)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing what is written (Ctrl-C stops)")


def log_files(home: Path) -> dict[str, Path]:
    directory = home / "logs"
    try:
        return {p.stem: p for p in sorted(directory.glob("*.log"))}
    except OSError:
        return {}


def tail_lines(path: Path, count: int) -> tuple[list[str], int]:
    """The last ``count`` lines and the offset after them (reading back from the end in
    blocks: logs can be large)."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        data, pos = b"", end
        while pos > 0 and data.count(b"\n") <= count:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.decode("utf-8", "replace").splitlines()
    return (lines[-count:] if count > 0 else []), end


def run(home: Path, args: argparse.Namespace) -> int:
    files = log_files(home)
    if not files:
        raise CliError(f"no logs under {home / 'logs'}; start a swarm with orchflow-launch", exit_codes.UNAVAILABLE)
    if args.process:
        if args.process not in files:
            raise CliError(f"no log for {args.process!r}; there are: {', '.join(files)}")
        files = {args.process: files[args.process]}
    prefix = args.process is None
    width = max(len(n) for n in files)
    offsets: dict[str, tuple[int, int]] = {}  # name -> (inode, offset)
    out = sys.stdout
    for name, path in files.items():
        try:
            lines, end = tail_lines(path, max(0, args.lines))
            offsets[name] = (path.stat().st_ino, end)
        except OSError:
            continue
        for line in lines:
            out.write(f"{name:<{width}} | {line}\n" if prefix else f"{line}\n")
    out.flush()
    if not args.follow:
        return exit_codes.DONE
    partial: dict[str, bytes] = {}
    while True:
        for name, path in log_files(home).items() if not args.process else files.items():
            try:
                st = path.stat()
            except OSError:
                continue
            inode, offset = offsets.get(name, (st.st_ino, 0))
            if st.st_ino != inode or st.st_size < offset:
                offset, partial[name] = 0, b""  # replaced or truncated: from its start
            if st.st_size > offset:
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = partial.get(name, b"") + f.read(st.st_size - offset)
                *complete, partial[name] = data.split(b"\n")
                width = max(width, len(name))
                for raw in complete:
                    line = raw.decode("utf-8", "replace")
                    out.write(f"{name:<{width}} | {line}\n" if prefix else f"{line}\n")
                out.flush()
            offsets[name] = (st.st_ino, st.st_size)
        time.sleep(POLL)
