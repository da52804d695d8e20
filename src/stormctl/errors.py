"""The one domain exception of stormctl; the CLI prints it and exits with its code."""

from __future__ import annotations


class StormctlError(Exception):
    """What went wrong and what to do; ``exit_code`` follows `stormctl --help`."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
