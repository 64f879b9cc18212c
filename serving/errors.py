"""Typed errors of the HTTP layer and the one table that maps every error the API answers on
purpose to its HTTP status. Anything not in the table is a 500 (and a bug). Every 503 says
when to retry (Retry-After), and no message carries a file path or a native stack trace."""

from __future__ import annotations

import re

from inference.errors import (
    DateOutOfRange,
    DatesBusy,
    MarketDataLoading,
    MarketStoreUnavailable,
    ModelLoadError,
    ModelUnavailable,
    NoPriceData,
    UnknownModelVersion,
)
from market.master import AmbiguousStockError, UnknownStockError
from training_artifacts.model_store import ModelNotFound, ModelStoreError


class ApiError(Exception):
    """An error of the request itself, with optional detail for the body."""

    def __init__(self, message: str, detail: object = None):
        super().__init__(message)
        self.message, self.detail = message, detail


class InvalidRequest(ApiError):
    """The request is well-formed JSON but asks for something the API cannot do."""


class RunnerUnavailable(ApiError):
    """The model runner did not answer (restarting or overloaded): retryable."""


# Looked up along the exception's class hierarchy, so a subclass may refine its base's status.
STATUS: dict[type[Exception], int] = {
    InvalidRequest: 422,
    UnknownStockError: 404,
    AmbiguousStockError: 422,
    NoPriceData: 404,
    DateOutOfRange: 422,
    UnknownModelVersion: 404,
    ModelNotFound: 404,
    ModelLoadError: 422,
    ModelStoreError: 422,  # a model the code cannot serve (e.g. its features differ)
    ModelUnavailable: 503,
    MarketDataLoading: 503,
    MarketStoreUnavailable: 503,
    DatesBusy: 503,
    RunnerUnavailable: 503,
}

# Seconds to wait before retrying a 503, by error (others: DEFAULT_RETRY_AFTER).
RETRY_AFTER: dict[type[Exception], int] = {
    RunnerUnavailable: 1,
    DatesBusy: 2,
    MarketStoreUnavailable: 5,
    MarketDataLoading: 5,
    ModelUnavailable: 30,
}
DEFAULT_RETRY_AFTER = 5


def status_of(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return 500


def error_headers(exc: BaseException) -> dict[str, str] | None:
    """Retry-After for a 503."""
    if status_of(exc) != 503:
        return None
    seconds = next((RETRY_AFTER[c] for c in type(exc).__mro__ if c in RETRY_AFTER),
                   DEFAULT_RETRY_AFTER)
    return {"Retry-After": str(seconds)}


# A native stack trace (xgboost's "Stack trace:", Python's "Traceback") and what follows it.
_TRACE = re.compile(r"\s*(Stack trace:|Traceback \(most recent call last\)).*", re.S)
# A file system path of two or more components (not an API route): its last component stays.
_PATH = re.compile(r"(?<![\w/.:])(?:/(?!api/)[\w.@+-]+){2,}/?")


def public_text(text: str) -> str:
    """`text` for clients: no native stack trace, and each file path reduced to its name
    (the server log keeps the full text)."""
    text = _TRACE.sub("", text)
    return _PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], text).strip()


def message_of(exc: BaseException) -> str:
    return public_text(exc.message if isinstance(exc, ApiError) else str(exc))
