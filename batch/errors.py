"""The batch's one error type: a message a user can act on and the exit code to leave with."""

from __future__ import annotations

EXIT_FAILURE = 1  # no model, unreachable service, a write failed, ...
EXIT_BAD_INPUT = 2  # no data for the date, unknown model version, bad option values


class BatchError(RuntimeError):
    def __init__(self, message: str, code: int = EXIT_FAILURE):
        super().__init__(message)
        self.code = code
