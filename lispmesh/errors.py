"""The error the command line itself raises (bad flags together, nothing to do, ...).

It is a `common.errors.LispmeshError` like every layer's own errors, so `lispmesh.cli.main`
converts all of them the same way: one line, an exit code, no traceback.
"""

from __future__ import annotations

from common.errors import LispmeshError


class CliError(LispmeshError):
    """Printed as one line (`lispmesh: error: ...`), exit code 1 (or `code`), no traceback."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


__all__ = ["CliError", "LispmeshError"]
