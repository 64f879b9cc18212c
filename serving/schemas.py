"""Request and response bodies of /api/v1 (flat JSON, as in the seed's API), with examples."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from inference.scoring import MODEL_VERSION_PATTERN

MAX_BATCH = 100
_STOCK_EXAMPLE = {"bse_code": "700001"}
# Unknown fields are refused (422 naming them), not silently ignored.
_STRICT = ConfigDict(extra="forbid")


def _text_only(value: Any) -> Any:
    if value is not None and not isinstance(value, str):
        raise ValueError("a date is a string YYYY-MM-DD")
    return value


# Inputs are taken as their JSON type only: 0 is not false, "true" is not true, 20240105 is
# not a date (each is a 422), so the schema says exactly what is accepted.
IsoDate = Annotated[date, BeforeValidator(_text_only)]

# The largest body each route accepts (serving/http.py BodyLimitMiddleware answers 413 beyond
# it, before parsing): a few times what the largest valid request takes, and small enough that
# parsing it takes milliseconds.
BODY_LIMITS = {"/api/v1/predict": 16 * 1024, "/api/v1/batch_predict": 64 * 1024,
               "/api/v1/models/reload": 4 * 1024}
SCORE_ROW_BYTES = 1024  # a row of 25 features at full float precision, with a pinned version


def body_limits(max_score_rows: int) -> dict[str, int]:
    """BODY_LIMITS, with score_features' own for `max_score_rows` rows."""
    return {**BODY_LIMITS,
            "/api/v1/score_features": (max_score_rows + 1) * SCORE_ROW_BYTES}


class StockRef(BaseModel):
    model_config = _STRICT

    isin: str | None = Field(
        None, description="12-character ISIN", examples=["INEZ02101018"], max_length=20
    )
    bse_code: str | None = Field(
        None, description="6-digit BSE scrip code", examples=["700001"], max_length=20
    )
    nse_symbol: str | None = Field(
        None, description="NSE symbol (case-insensitive)", examples=["RAUTGO"], max_length=40
    )


class PredictOptions(BaseModel):
    model_config = _STRICT

    prediction_date: IsoDate | None = Field(
        None, description="As-of date (YYYY-MM-DD); default: the latest session in the store. "
        "A weekend or holiday maps to the session before it (see `note` in the response)."
    )
    include_features: StrictBool = Field(False, description="Return the 25 feature values")
    include_explanation: StrictBool = Field(
        False, description="Return the top feature contributions (xgboost TreeSHAP)"
    )
    model_version: str | None = Field(
        None, description="Pin a model version; default: the active one", max_length=76,
        pattern=MODEL_VERSION_PATTERN,
    )


class PredictRequest(StockRef, PredictOptions):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"bse_code": "700001", "include_features": True},
        {"nse_symbol": "RAUTGO", "prediction_date": "2026-10-30", "include_explanation": True},
    ]})


class BatchPredictRequest(PredictOptions):
    stocks: list[StockRef] = Field(
        ..., description=f"1 to {MAX_BATCH} stocks", examples=[[_STOCK_EXAMPLE]],
        min_length=1, max_length=MAX_BATCH,
    )
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"stocks": [{"bse_code": "700001"}, {"nse_symbol": "RAUTGO"}],
         "include_features": False},
    ]})


class Contraction(BaseModel):
    high_date: date = Field(description="Session of the swing high the contraction starts at")
    high: float
    low_date: date = Field(description="Session of its lowest low")
    low: float
    depth: float = Field(description="1 - low / high")
    volume_ratio: float | None = Field(
        description="Mean volume in the contraction / the 50-day average at its end")


class Setup(BaseModel):
    """A VCP setup as the detector (features/vcp.py) found it at the as-of date."""

    footprint: str = Field(description="Weeks, deepest/last depth % and contractions, e.g. "
                                       "'18W 28/4 3T'")
    base_start: date = Field(description="Session of the base high")
    base_sessions: int = Field(description="Sessions from the base high to the as-of date")
    base_high: float
    prior_advance: float = Field(description="Advance into the base: 0.45 = +45%")
    contractions: list[Contraction]
    pivot: float = Field(description="The last contraction's high: the buy-stop level")
    stop: float = Field(description="The trade's initial stop: the last contraction's low, or "
                        "8% below the pivot when that is closer")
    risk_pct: float = Field(description="1 - stop / pivot")
    volume_dryup: float | None = Field(
        description="Mean volume in the last contraction / the 50-day average")
    breakout: bool = Field(description="Close above the pivot on volume >= 1.4x its average")
    extended: bool = Field(description="Close more than 5% above the pivot")


class Contribution(BaseModel):
    feature: str
    value: float | None
    contribution: float = Field(description="Log-odds contribution (TreeSHAP)")


class Explanation(BaseModel):
    base_value: float = Field(description="Log-odds before any feature")
    top: list[Contribution]


class PredictResponse(BaseModel):
    isin: str
    bse_code: str | None
    nse_symbol: str | None
    name: str
    as_of_date: date = Field(description="The trading session the features are as of")
    note: str | None = Field(
        None, description="Set when prediction_date was not a session (mapped to the one before)")
    probability: float | None = Field(
        description="Calibrated probability that the setup's breakout trade wins; null when "
                    "the stock has no setup or is outside the tradeable universe (see why_not)")
    confidence: Literal["HIGH", "MEDIUM", "LOW", "NONE"] = Field(
        description="From the model's thresholds on out-of-sample precision; NONE without a "
                    "probability")
    pattern: Setup | None = Field(description="The VCP setup, or null when there is none")
    why_not: str | None = Field(
        description="Why there is no probability: the features cannot be computed, the stock "
                    "is outside the universe's liquidity or price floor, or the first VCP rule "
                    "it fails")
    trend_template: dict[str, bool]
    trend_template_count: int
    features: dict[str, float | None] | None = None
    explanation: Explanation | None = None
    model_name: str
    model_version: str | None = Field(description="Null when the model did not score the stock")
    data_source: str = Field(description="'simulated' (demo market) or 'real'")
    latency_ms: float


class StockError(BaseModel):
    index: int
    isin: str | None
    bse_code: str | None
    nse_symbol: str | None
    status: int
    error: str


class BatchPredictResponse(BaseModel):
    results: list[PredictResponse]
    errors: list[StockError]
    model_version: str | None
    latency_ms: float


class ErrorResponse(BaseModel):
    error: str
    detail: object | None = None


class LatencySummary(BaseModel):
    p50_ms: float | None
    p95_ms: float | None


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded", "down"]
    reasons: list[str]
    active_model: str | None
    data_as_of: date | None
    data_source: str | None
    universe_size: int
    scoreable_today: int
    uptime_seconds: float
    requests: int
    error_rate: float
    latency: LatencySummary


class ModelSummary(BaseModel):
    version: str
    created: str
    data_source: str | None
    quick: bool
    holdout_roc_auc: float | None = Field(
        description="ROC-AUC among the setups of the frozen holdout (the evaluated model)")
    holdout_precision_at_10: float | None = Field(
        description="Mean per-day precision of the top 10 setups on the holdout")
    features_match_code: bool
    active: bool
    cached: bool


class UnreadableVersion(BaseModel):
    version: str = Field(description="The version folder's name")
    error: str = Field(description="Why it cannot be read (it is skipped)")


class ModelsResponse(BaseModel):
    active: str | None
    models: list[ModelSummary] = Field(description="The readable versions, newest first")
    unreadable: list[UnreadableVersion] = Field(
        default_factory=list, description="Version folders that cannot be read, skipped")


class ReloadRequest(BaseModel):
    model_config = _STRICT

    version: str | None = Field(
        None, description="Version to promote and serve; default: re-read the active pointer",
        max_length=76, pattern=MODEL_VERSION_PATTERN,
    )


class ReloadResponse(BaseModel):
    active: str
    previous: str | None
    data_as_of: date | None
