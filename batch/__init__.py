"""The daily batch: score the whole universe as of one date and publish the ranked list
(`python -m vcp batch run`). See `batch.run` for the stages and the failure guarantees."""

from batch.errors import BatchError
from batch.run import BatchConfig, BatchResult, run_batch

__all__ = ["BatchConfig", "BatchError", "BatchResult", "run_batch"]
