"""The product's command line: `python -m vcp --help`.

`main()` validates the settings once (vcp.settings) and hands them to every command as the
click context's `obj`; a command reads them with `settings_of(ctx)`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from vcp.settings import Settings, startup_settings

app = typer.Typer(help="VCP breakout scoring for NSE/BSE equities.", no_args_is_help=True)
data_app = typer.Typer(help="The market store: build the demo, ingest files, inspect.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")
models_app = typer.Typer(help="Model versions in the BentoML store.", no_args_is_help=True)
app.add_typer(models_app, name="models")
batch_app = typer.Typer(help="The daily batch over the whole universe.", no_args_is_help=True)
app.add_typer(batch_app, name="batch")
console = Console(stderr=True)

DbOption = Annotated[
    Path | None,
    typer.Option("--db", help="Market store path (default $VCP_MARKET_DB or data/market.duckdb)."),
]


def settings_of(ctx: typer.Context) -> Settings:
    if not isinstance(ctx.obj, Settings):  # app() called without main(): tests, embedding
        ctx.obj = startup_settings()
    return ctx.obj


def fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


Update = Callable[..., None]


@contextmanager
def progress_bar(total: int | None = None) -> Iterator[Update]:
    """A rich progress bar; yields a callback taking a message and an optional advance.
    Transient: the bar is gone before anything after it is printed (an error, a summary), and
    a log file (no terminal) gets no spinner frames at all."""
    if not console.is_terminal:  # a log: no display (rich would still print a blank line)
        yield lambda *_a, **_k: None
        return
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("starting", total=total)

        def update(message: str | None = None, advance: float = 0) -> None:
            if message is not None:
                progress.update(task, description=message)
            if advance:
                progress.advance(task, advance)

        yield update


def _store_path(ctx: typer.Context, db: Path | None) -> Path:
    return db if db is not None else settings_of(ctx).market_db_path


@data_app.command("demo")
def data_demo(
    ctx: typer.Context,
    stocks: Annotated[int, typer.Option(help="Number of simulated stocks.")] = 11_000,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same market.")] = 42,
    force: Annotated[bool, typer.Option(help="Rebuild even if the store matches.")] = False,
    db: DbOption = None,
) -> None:
    """Build the deterministic SIMULATED demo market (not real companies) into the store."""
    from market.simulator import SIMULATOR_VERSION, SimConfig, build_demo_store
    from market.store import MarketStore

    path = _store_path(ctx, db)
    store = MarketStore(path)
    if store.exists() and not force:
        meta = store.get_meta()
        if meta.get("source") == "real":
            raise fail(f"{path} holds real ingested data; refusing to overwrite it with the "
                       "simulated demo (use another --db)")
        if (meta.get("seed") == str(seed) and meta.get("n_stocks") == str(stocks)
                and meta.get("simulator") == SIMULATOR_VERSION):
            console.print(f"demo store {path} already built (seed {seed}, {stocks} stocks)")
            return
    cfg = SimConfig(n_stocks=stocks, seed=seed, n_dual=min(2_000, stocks // 5))
    with progress_bar(total=2) as update:
        def step(message: str) -> None:
            update(message, advance=0 if message.startswith("simulating") else 1)

        result = build_demo_store(path, cfg, progress=step)
    console.print(
        f"built SIMULATED market {path}: {result['stocks']:,} stocks, {result['bars']:,} bars, "
        f"{result['sessions']} sessions, {result['episodes']:,} planted VCP episodes"
    )


@data_app.command("ingest")
def data_ingest(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Files or folders of bhavcopy/OHLCV CSVs.")],
    corporate_actions: Annotated[
        Path | None,
        typer.Option(help="CSV isin,ex_date,ratio of splits/bonuses (ratio = after/before)."),
    ] = None,
    rejects_dir: Annotated[
        Path | None, typer.Option(help="Where rejected rows go (default: beside the store).")
    ] = None,
    unlisted: Annotated[
        bool,
        typer.Option(help="Register per-stock CSVs whose symbol the master does not know under "
                     "a local key LOCAL:NSE:<symbol> (not an ISIN) instead of rejecting them."),
    ] = False,
    db: DbOption = None,
) -> None:
    """Ingest NSE/BSE bhavcopies (legacy or UDiFF) or per-stock CSVs into the store."""
    from market.ingest import IngestError, ingest_paths
    from market.store import MarketStore

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise fail(f"no such file or folder: {', '.join(missing)}")
    store = MarketStore(_store_path(ctx, db))
    try:
        with progress_bar() as update:
            report = ingest_paths(
                store, list(paths), rejects_dir=rejects_dir,
                corporate_actions=corporate_actions, progress=update, unlisted=unlisted,
            )
    except IngestError as exc:
        raise fail(str(exc), code=2) from None
    console.print(report.summary(), markup=False, highlight=False)
    if report.nothing_accepted:
        raise fail(f"nothing was ingested: all {report.rows_read:,} rows were rejected or are "
                   "not equity; the reasons are above and in the rejects files", code=2)


@data_app.command("master")
def data_master(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(
        help="NSE EQUITY_L.csv / SME_EQUITY_L.csv and/or BSE's list of scrips (CSV).")],
    rejects_dir: Annotated[
        Path | None, typer.Option(help="Where rejected rows go (default: beside the store).")
    ] = None,
    db: DbOption = None,
) -> None:
    """Load the exchanges' lists of securities into the stock master: names, sectors and
    industries, listing/delisting/suspension dates; NSE and BSE rows merge by ISIN."""
    from market.ingest import IngestError
    from market.master_files import import_master
    from market.store import MarketStore

    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise fail(f"no such file: {', '.join(missing)}", code=2)
    try:
        report = import_master(MarketStore(_store_path(ctx, db)), list(paths), rejects_dir)
    except IngestError as exc:
        raise fail(str(exc), code=2) from None
    console.print(report.summary(), markup=False, highlight=False)


@data_app.command("info")
def data_info(
    ctx: typer.Context,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Stocks, date range and source (simulated or real) of the store."""
    from market.store import MarketStore, StoreError

    try:
        store = MarketStore(_store_path(ctx, db))
        info = store.info()
        if info["source"] == "real":  # the calendar check is for NSE/BSE sessions
            info.update(store.health())
    except StoreError as exc:
        raise fail(str(exc)) from None
    if as_json:
        print(json.dumps(info, default=str, indent=2))
        return
    label = "SIMULATED demo data" if info["source"] == "simulated" else info["source"]
    print(f"store:    {info['path']}")
    print(f"source:   {label}" + (f" (seed {info['seed']})" if info.get("seed") else ""))
    print(f"stocks:   {info['stocks']:,} ({info['active_stocks']:,} active)")
    print(f"bars:     {info['bars']:,}")
    print(f"sessions: {info['sessions']:,} from {info['first_date']} to {info['last_date']}")
    print(f"updated:  {info['updated_at']}")
    _print_store_health(info)


def _print_store_health(info: dict) -> None:
    """The master's coverage and the calendar check (real stores; see market.calendar)."""
    master, cal = info.get("master"), info.get("calendar")
    if master:
        print(f"master:   {master['with_sector']:,} with a sector, {master['local_keys']:,} "
              f"under local keys (not ISINs), {master['delisted']:,} with a delisting date")
    if cal:
        for line in cal["lines"]:
            print(f"calendar: {line}")


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    quick: Annotated[bool, typer.Option(help="Small universe, fewer trees (about a minute).")]
    = False,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    promote: Annotated[
        bool | None,
        typer.Option(help="Make the new model active (default: only if none is active)."),
    ] = None,
    if_missing: Annotated[
        bool, typer.Option(help="Do nothing when the model store already holds a model "
                           "built for this code's features.")
    ] = False,
    db: DbOption = None,
) -> None:
    """Walk-forward train, calibrate and save a `vcp_breakout` model with its report."""
    from market.store import MarketStore, StoreError
    from training_artifacts import model_store
    from training_artifacts.train import DatasetError, TrainConfig, save, train

    current = [m for m in model_store.list_models()
               if model_store.summary(m)["features_match_code"]]
    if if_missing and current:
        console.print("the model store already holds a vcp_breakout model for these features; "
                      "not training")
        return
    settings = settings_of(ctx)
    cfg = TrainConfig.for_mode(quick, seed, floors=settings.floors)
    store = MarketStore(_store_path(ctx, db))
    try:
        with progress_bar(total=None) as update:
            result = train(store, cfg, progress=update)
            update("saving to the model store")
            version, report = save(result, reports_dir=settings.reports_dir)
    except (StoreError, DatasetError) as exc:
        raise fail(str(exc)) from None
    active = model_store.read_active()
    stale_active = active is not None and active not in {model_store.version_of(m)
                                                          for m in current}
    if promote or (promote is None and (active is None or stale_active)):
        model_store.promote(version)
        console.print(f"promoted {version} to active")
    print(f"saved vcp_breakout:{version} in {result.seconds:.0f} s; report: {report}")
    for line in training_summary(result.metadata):
        print(line)


def _ci(value: float, ci: list[float] | tuple[float, float] | None, spec: str = ".3f") -> str:
    if value is None or value != value:  # NaN: no day had k setups, or one class only
        return "n/a"
    if ci is None or len(ci) != 2:
        return format(value, spec)
    return f"{value:{spec}} [{ci[0]:{spec}}, {ci[1]:{spec}}]"


def training_summary(meta: dict) -> list[str]:
    """What `vcp train` prints: the holdout verdict with 95% intervals and the trade
    simulations (all in the report too)."""
    s, w = meta["setups"], meta["training_window"]
    lines = [f"  data: {meta['data_source']}; setups {s['all']:,} (development "
             f"{s['development']:,}, holdout {s['holdout']:,} from {w['holdout_from']}); "
             f"base rate {s['base_rate_holdout']:.3f} on the holdout"]
    hold = meta["metrics"]["holdout"]
    if not hold:
        return [*lines, "  holdout: too few setups to judge (quick mode on a small store?)"]
    lines.append("  holdout, among setups (95% date-block bootstrap intervals):")
    for name in ("model", "rule", "oracle"):
        if name not in hold:
            continue
        m, ci = hold[name], hold[name]["ci95"]
        lines.append(f"    {name:6s} P@10 {_ci(m['precision_at_10'], ci['precision_at_10'])}  "
                     f"P@5 {_ci(m['precision_at_5'], None)}  "
                     f"P@20 {_ci(m['precision_at_20'], None)}  "
                     f"ROC-AUC {_ci(m['roc_auc'], ci['roc_auc'])}")
    if hold["model"]["precision_at_5"] != hold["model"]["precision_at_5"]:
        lines.append("    (P@k counts days with at least k setups; this holdout has "
                     f"{s['holdout'] / max(hold['model']['days'], 1):.1f} setups a day)")
    if "model_minus_rule" in hold:
        d = hold["model_minus_rule"]
        diff = _ci(d["precision_at_10"], d["ci95"]["precision_at_10"], "+.3f")
        lines.append(f"    model - rule P@10 {diff}")
    if "model_share_of_oracle_at_10" in hold:
        lines.append(f"    model / oracle P@10 {hold['model_share_of_oracle_at_10']:.2f}")
    sims = meta.get("trade_simulation", {})
    for title, strategies in (("holdout", sims.get("strategies")),
                              ("out of sample from " + str(sims.get("out_of_sample", {})
                                                          .get("from")),
                               sims.get("out_of_sample", {}).get("strategies"))):
        if not strategies:
            continue
        lines.append(f"  trade simulation, {title} (net of costs):")
        for t in strategies:
            lines.append(f"    {t['strategy']:34s} final x{t['final_equity']:.2f}  "
                         f"CAGR {t['cagr']:+.1%}  max DD {t['max_drawdown']:.1%}  "
                         f"hit {t['hit_rate']:.2f}  avg R {t['avg_r']:+.2f}")
    th = meta.get("thresholds") or {}
    if th:
        lines.append(f"  confidence: HIGH p >= {th['HIGH']:.3f}, MEDIUM p >= {th['MEDIUM']:.3f}")
    return lines


def _model_failure(exc: Exception) -> typer.Exit:
    """A model store error as the exit: 2 for a version that cannot exist (bad input)."""
    from training_artifacts import model_store

    return fail(str(exc), code=2 if isinstance(exc, model_store.InvalidModelVersion) else 1)


def _active_problem(active: str | None) -> str | None:
    """Why the version the pointer names cannot be served (None: it can, or no pointer)."""
    from features import FEATURES
    from training_artifacts import model_store
    from training_artifacts.artifact import ArtifactError, read_artifact

    if active is None:
        return None
    try:
        model = model_store.get_model(active)
        read_artifact(Path(model.path), model_store.metadata_of(model), FEATURES)
    except model_store.ModelStoreError as exc:
        return str(exc)
    except ArtifactError as exc:
        return model_store.load_failure(exc)
    return None


@models_app.command("list")
def models_list() -> None:
    """Versions in the store, newest first; * marks the active one, ! a version folder that
    cannot be read (skipped by the service)."""
    from training_artifacts import model_store

    active = model_store.read_active()
    found = model_store.scan()
    if not found.models and not found.unreadable:
        print("no vcp_breakout models; run `python -m vcp train`")
        return
    for m in found.models:
        s = model_store.summary(m)
        mark = "*" if s["version"] == active else " "
        p10 = s["holdout_precision_at_10"]
        print(f"{mark} {s['version']}  {s['created']}  source={s['data_source']}  "
              f"quick={s['quick']}  holdout P@10={p10 if p10 is None else round(p10, 3)}"
              + ("" if s["features_match_code"] else "  (features differ from code)"))
    for version, error in found.unreadable.items():
        print(f"! {version}  unreadable, skipped: {error}")
    problem = _active_problem(active)
    if problem:
        console.print(f"warning: the active pointer names {active}, which cannot be served "
                      f"({problem}); the service serves the newest version that loads. "
                      "Promote a working version: `python -m vcp models promote VERSION`",
                      markup=False, highlight=False)


@models_app.command("show")
def models_show(
    version: Annotated[
        str | None,
        typer.Argument(help="Version or 'latest' (default: the active one, as the service "
                       "serves it; the newest when none was promoted)."),
    ] = None,
) -> None:
    """A model's metadata as JSON."""
    from training_artifacts import model_store

    try:
        model = (model_store.active_or_latest() if version is None
                 else model_store.get_model(version))
    except model_store.ModelStoreError as exc:
        raise _model_failure(exc) from None
    active = model_store.version_of(model) == model_store.read_active()
    print(json.dumps({"tag": str(model.tag), "active": active, "path": model.path,
                      **model_store.metadata_of(model)}, indent=2, default=str))


@models_app.command("promote")
def models_promote(version: Annotated[str, typer.Argument(help="Version to serve.")]) -> None:
    """Set the active version the service serves (workers switch within seconds). A version
    whose files do not load is refused; the active one is then unchanged."""
    from training_artifacts import model_store

    try:
        print(f"active: {model_store.promote(version)}")
    except model_store.ModelStoreError as exc:
        raise _model_failure(exc) from None


@models_app.command("delete")
def models_delete(version: Annotated[str, typer.Argument(help="Version to delete.")]) -> None:
    """Delete a version (not the active one)."""
    from training_artifacts import model_store

    try:
        model_store.delete(version)
    except model_store.ModelStoreError as exc:
        raise _model_failure(exc) from None
    print(f"deleted {version}")


@batch_app.command("run")
def batch_run(
    ctx: typer.Context,
    date: Annotated[
        str | None, typer.Option("--date", help="Session YYYY-MM-DD (default: the latest).")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option("--url", help="Score through a running deployment (e.g. "
                     "http://localhost:3000) instead of in process."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default $VCP_DATA_DIR/outputs).")
    ] = None,
    db: Annotated[
        Path | None,
        typer.Option("--db", help="Predictions SQLite (default $VCP_DATA_DIR/predictions.db)."),
    ] = None,
    market_db: Annotated[
        Path | None, typer.Option("--market-db", help="Market store (default $VCP_MARKET_DB).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model version (default: the active one; "
                                 "the run fails when the active one cannot be loaded).")
    ] = None,
    charts: Annotated[
        int, typer.Option(help="Setups (and as many near-setups) drawn in report_D.html; "
                          "0 for none.")
    ] = 25,
    chunk_size: Annotated[
        int | None,
        typer.Option(help="Rows per call in --url mode (default $VCP_MAX_BATCH_SIZE, the "
                     "runner's batch size)."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="X-API-Key for --url mode (default $VCP_API_KEY).")
    ] = None,
) -> None:
    """Score every stock listed on a date; write predictions.db, CSVs and a report."""
    import datetime as dt

    from batch import BatchConfig, BatchError, run_batch

    try:
        day = None if date is None else dt.date.fromisoformat(date)
    except ValueError:
        raise fail(f"--date {date!r} is not a date YYYY-MM-DD", code=2) from None
    if chunk_size is not None and chunk_size < 1:
        raise fail("--chunk-size must be at least 1", code=2)
    if charts < 0:
        raise fail("--charts must be 0 or more", code=2)
    if model is not None:
        from training_artifacts import model_store

        try:
            model_store.check_version(model)
        except model_store.InvalidModelVersion as exc:
            raise fail(f"--model: {exc}", code=2) from None
    settings = settings_of(ctx)
    cfg = BatchConfig(
        market_db=market_db or settings.market_db_path,
        predictions_db=db or settings.predictions_db_path,
        out_dir=out or settings.outputs_dir,
        date=day, url=url, model_version=model,
        chunk_size=chunk_size or settings.max_batch_size,
        api_key=api_key or settings.api_key, fail_at=settings.batch_fail_at,
        floors=settings.floors, charts=charts,
    )
    try:
        with progress_bar(total=5) as update:
            result = run_batch(cfg, progress=update)
    except BatchError as exc:
        raise fail(str(exc), code=exc.code) from None
    if result.note:
        console.print(f"note: {result.note}")
    conf = ", ".join(f"{k} {result.by_confidence.get(k, 0):,}" for k in ("HIGH", "MEDIUM", "LOW"))
    source = "SIMULATED data" if result.data_source == "simulated" else result.data_source
    print(f"batch {result.run_id}: {result.prediction_date} scored {result.n_scored:,} VCP "
          f"setups ({conf}), {result.n_skipped:,} stocks without a probability; model "
          f"{result.model_version}; {source}; {sum(result.timings.values()):.1f} s")
    for name, path in result.files.items():
        print(f"  {name:12s} {path}")
    print(f"  {'database':12s} {result.predictions_db}")


def main() -> None:
    settings = startup_settings()
    try:
        app(obj=settings)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
