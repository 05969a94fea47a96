"""Errors of the launcher and the CLIs: each ends a command with one line and a code."""

from __future__ import annotations

from . import exit_codes


class CliError(Exception):
    """Ends an ``orchflow`` command: ``message`` on one line of stderr, exit ``code``."""

    def __init__(self, message: str, code: int = exit_codes.USAGE) -> None:
        super().__init__(message)
        self.code = code
