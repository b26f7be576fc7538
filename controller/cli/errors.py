"""The CLI's expected failures: one message and an exit status, never a traceback."""

from __future__ import annotations

USAGE = 2
"""Exit status of a malformed command line (argparse's too)."""


class CliError(Exception):
    """An expected failure: printed as one message, exit status `code`, no traceback."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def usage(message: str) -> CliError:
    return CliError(message, code=USAGE)
