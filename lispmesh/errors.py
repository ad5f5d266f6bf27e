"""The one error type commands raise for problems a person can act on."""

from __future__ import annotations


class CliError(Exception):
    """Printed as one line (`lispmesh: error: ...`), exit code 1 (or `code`), no traceback."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
