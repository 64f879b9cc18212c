"""Typed errors of the inference core, each with a message a user can act on.

Callers decide what an error means to them: the API answers an HTTP status
(`serving/errors.py` holds the one table), the batch an exit code (`batch/errors.py`).
"""

from __future__ import annotations


class InferenceError(Exception):
    """Base of the errors the inference core raises on purpose."""


class ModelUnavailable(InferenceError):
    """No model can be served (none trained, or every candidate failed to load)."""


class UnknownModelVersion(InferenceError):
    """A pinned model version is not in the store."""


class ModelLoadError(InferenceError):
    """A stored model version cannot be loaded (corrupted files, features differ)."""


class MarketDataLoading(InferenceError):
    """The market snapshot is not loaded yet."""


class MarketStoreUnavailable(InferenceError):
    """The market store cannot be read right now (missing, locked by a writer, damaged):
    what is in memory is still served; a date that needs the store is retryable."""


class DatesBusy(InferenceError):
    """As many uncached dates as allowed are being computed, and this one waited its turn
    too long: retryable."""


class DateOutOfRange(InferenceError):
    """The requested date is outside the stored sessions."""


class NoPriceData(InferenceError):
    """The stock has no price data in the store."""


# Errors that cross the runner's process boundary by name (ScoreResult.error_kind).
SCORING_ERRORS: dict[str, type[InferenceError]] = {
    cls.__name__: cls for cls in (ModelUnavailable, UnknownModelVersion, ModelLoadError)
}


def scoring_error(kind: str | None, message: str) -> InferenceError:
    """The typed error a runner reported by name (a plain InferenceError for an unknown kind)."""
    return SCORING_ERRORS.get(kind or "", InferenceError)(message)
