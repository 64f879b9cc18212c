"""The one settings object: every `VCP_*` environment variable (and BENTOML_HOME), read and
validated once by an entry point (the CLI, service.py, the tests) and passed down as values.

A bad value stops start-up with a message that names the variable and what it accepts.
Booleans accept true/false, yes/no, on/off and 1/0 (any case); lists are comma-separated;
an empty variable counts as unset.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from features.universe import Floors
from inference import DEFAULT_BATCH_ROWS

PROJECT_ROOT = Path(__file__).resolve().parent.parent

CsvList = Annotated[tuple[str, ...], NoDecode]
WHOLE_AT_LEAST_1 = "a whole number >= 1"
SECONDS = "a number of seconds >= 0"


class SettingsError(ValueError):
    """One or more settings are invalid; the message names each variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VCP_", env_ignore_empty=True, extra="ignore", frozen=True)

    # -- where things are --------------------------------------------------------------------
    data_dir: Path = Field(PROJECT_ROOT / "data", description="a folder path")
    market_db: Path | None = Field(None, description="a file path")
    predictions_db: Path | None = Field(None, description="a file path")
    output_dir: Path | None = Field(None, description="a folder path")
    bentoml_home: Path | None = Field(None, validation_alias="BENTOML_HOME",
                                      description="a folder path")

    # -- the HTTP service --------------------------------------------------------------------
    api_keys: CsvList = Field((), description="comma-separated keys")
    admin_keys: CsvList = Field((), description="comma-separated keys")
    cors_origins: CsvList = Field((), description="comma-separated origins")
    api_workers: int = Field(1, ge=1, description=WHOLE_AT_LEAST_1)
    runner_workers: int = Field(1, ge=1, description=WHOLE_AT_LEAST_1)
    max_batch_size: int = Field(DEFAULT_BATCH_ROWS, ge=1, description=WHOLE_AT_LEAST_1)
    max_latency_ms: int = Field(1000, ge=1, description=WHOLE_AT_LEAST_1)
    refresh_seconds: float = Field(60.0, gt=0, allow_inf_nan=False,
                                   description="a number of seconds > 0")
    warm_sessions: int = Field(5, ge=0, description="a whole number >= 0")
    stale_after_sessions: int = Field(
        3, ge=0, description="a whole number >= 0 (weekdays without a session)")
    rate_limit: float = Field(100.0, ge=0, allow_inf_nan=False,
                              description="requests/s >= 0 (0 turns the limit off)")
    rate_burst: float | None = Field(None, ge=0, allow_inf_nan=False,
                                     description="requests >= 0 (default 2 x VCP_RATE_LIMIT)")
    drain_min_seconds: float = Field(2.0, ge=0, allow_inf_nan=False, description=SECONDS)
    drain_max_seconds: float = Field(30.0, ge=0, allow_inf_nan=False, description=SECONDS)
    # A log line per request costs a noticeable share of a 2-core machine's CPU under load;
    # /metrics, /api/v1/health and X-Process-Time cover what it would tell.
    access_log: bool = Field(False, description="true/false, yes/no, on/off or 1/0")

    # -- limits and trust (serving/http.py, inference/snapshot.py) ----------------------------
    max_body_bytes: int = Field(2 * 2**20, ge=1024, description="a whole number of bytes >= 1024")
    metrics_key: str | None = Field(
        None, description="a key Prometheus sends as `Authorization: Bearer KEY` (or X-API-Key)")
    trusted_proxies: CsvList = Field(
        (), description="comma-separated addresses or networks (e.g. 10.0.0.0/8)")
    auth_failures_per_minute: float = Field(
        30.0, ge=0, allow_inf_nan=False,
        description="wrong keys per minute per address >= 0 (0 turns the limit off)")
    header_timeout_seconds: float = Field(10.0, gt=0, allow_inf_nan=False,
                                          description="a number of seconds > 0")
    date_concurrency: int = Field(1, ge=1, description=WHOLE_AT_LEAST_1)
    date_wait_seconds: float = Field(2.0, ge=0, allow_inf_nan=False, description=SECONDS)
    date_cache_mb: float = Field(512.0, ge=0, allow_inf_nan=False,
                                 description="megabytes >= 0 (0 keeps only the latest date)")

    # -- the tradeable universe (training, API and batch) --------------------------------------
    min_traded_value: float = Field(
        1e7, ge=0, allow_inf_nan=False,
        description="rupees >= 0: median daily traded value over 50 sessions (default 1 crore)")
    min_price: float = Field(20.0, ge=0, allow_inf_nan=False, description="rupees >= 0")

    # -- the batch ---------------------------------------------------------------------------
    api_key: str | None = Field(None, description="the X-API-Key for `batch run --url`")
    batch_fail_at: Literal["write", "write-kill", "publish-kill", "db-full"] | None = Field(
        None, description="'write', 'write-kill', 'publish-kill' or 'db-full' (a test hook)")

    @field_validator("api_keys", "admin_keys", "cors_origins", "trusted_proxies", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value

    @model_validator(mode="after")
    def _drain_bounds(self) -> Settings:
        if self.drain_min_seconds > self.drain_max_seconds:
            raise ValueError(
                f"VCP_DRAIN_MIN_SECONDS ({self.drain_min_seconds:g}) must not exceed "
                f"VCP_DRAIN_MAX_SECONDS ({self.drain_max_seconds:g})")
        return self

    # -- derived values ----------------------------------------------------------------------
    @property
    def market_db_path(self) -> Path:
        return self.market_db or self.data_dir / "market.duckdb"

    @property
    def predictions_db_path(self) -> Path:
        return self.predictions_db or self.data_dir / "predictions.db"

    @property
    def outputs_dir(self) -> Path:
        return self.output_dir or self.data_dir / "outputs"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def model_store_dir(self) -> Path:
        """BentoML's home (models, bentos) and the active-model pointer beside it."""
        return self.bentoml_home or self.data_dir / "bentoml"

    @property
    def floors(self) -> Floors:
        return Floors(self.min_traded_value, self.min_price)

    @property
    def rate_burst_total(self) -> float:
        return 2 * self.rate_limit if self.rate_burst is None else self.rate_burst


def env_name(field: str) -> str:
    info = Settings.model_fields[field]
    alias = info.validation_alias
    return alias if isinstance(alias, str) else f"VCP_{field.upper()}"


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        field = next((str(p) for p in err["loc"]), None)
        if field is None or field not in Settings.model_fields:  # a check across fields
            problems.append(err["msg"].removeprefix("Value error, "))
            continue
        accepted = Settings.model_fields[field].description
        problems.append(f"{env_name(field)}={err['input']!r}: {err['msg']} "
                        f"(accepted: {accepted})")
    return "invalid settings: " + "; ".join(problems)


def load_settings(**overrides: Any) -> Settings:
    """The environment's settings (plus `overrides` by field name); SettingsError if invalid."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def prepare_process(settings: Settings) -> None:
    """Entry-point set-up, before BentoML first reads its environment (it reads BENTOML_HOME
    once, lazily): the CLI, `bentoml serve` and the tests then share one model store."""
    os.environ["BENTOML_HOME"] = str(settings.model_store_dir)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")


def startup_settings() -> Settings:
    """For entry points: the settings, validated, with the process prepared. A bad value
    ends the process (exit status 2) with the message, before anything starts."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    prepare_process(settings)
    return settings
