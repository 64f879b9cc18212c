"""Typed errors of the HTTP layer and the one table that maps every error the API answers on
purpose to its HTTP status. Anything not in the table is a 500 (and a bug)."""

from __future__ import annotations

from inference.errors import (
    DateOutOfRange,
    MarketDataLoading,
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
    RunnerUnavailable: 503,
}


def status_of(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return 500


def message_of(exc: BaseException) -> str:
    return exc.message if isinstance(exc, ApiError) else str(exc)
