"""The batch's error type (a message a user can act on and the exit code to leave with) and
the one table from the errors of the layers below to exit codes."""

from __future__ import annotations

import sqlite3

from inference.errors import (
    DateOutOfRange,
    InferenceError,
    ModelLoadError,
    ModelUnavailable,
    UnknownModelVersion,
)
from market.store import StoreError

EXIT_FAILURE = 1  # no model, unreachable service, a write failed, ...
EXIT_BAD_INPUT = 2  # no data for the date, unknown model version, bad option values


class BatchError(RuntimeError):
    def __init__(self, message: str, code: int = EXIT_FAILURE):
        super().__init__(message)
        self.code = code


# Looked up along the exception's class hierarchy.
EXIT_CODE: dict[type[Exception], int] = {
    DateOutOfRange: EXIT_BAD_INPUT,
    UnknownModelVersion: EXIT_BAD_INPUT,
    ModelUnavailable: EXIT_FAILURE,
    ModelLoadError: EXIT_FAILURE,
    StoreError: EXIT_FAILURE,
    InferenceError: EXIT_FAILURE,  # any other error a runner reported (--url mode)
}


def as_batch_error(exc: BaseException) -> BatchError:
    """The BatchError to report for any exception raised during a run."""
    if isinstance(exc, BatchError):
        return exc
    for cls in type(exc).__mro__:
        if cls in EXIT_CODE:
            return BatchError(str(exc), code=EXIT_CODE[cls])
    if isinstance(exc, sqlite3.Error):
        return BatchError(f"writing the predictions database failed: {exc}")
    if isinstance(exc, OSError):
        return BatchError(f"writing the outputs failed: {exc}")
    return BatchError(f"unexpected {type(exc).__name__}: {exc}")
