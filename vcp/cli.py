"""The product's command line: `python -m vcp --help`."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from vcp import config

app = typer.Typer(help="VCP breakout scoring for NSE/BSE equities.", no_args_is_help=True)
data_app = typer.Typer(help="The market store: build the demo, ingest files, inspect.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(stderr=True)

DbOption = Annotated[
    Path | None,
    typer.Option("--db", help="Market store path (default $VCP_MARKET_DB or data/market.duckdb)."),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


@contextmanager
def progress_bar(total: int | None = None):
    """A rich progress bar; yields a callback taking a message and an optional advance."""
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("starting", total=total)

        def update(message: str | None = None, advance: float = 0) -> None:
            if message is not None:
                progress.update(task, description=message)
            if advance:
                progress.advance(task, advance)

        yield update
        progress.update(task, completed=total if total is not None else None)


def _store_path(db: Path | None) -> Path:
    return db if db is not None else config.market_db_path()


@data_app.command("demo")
def data_demo(
    stocks: Annotated[int, typer.Option(help="Number of simulated stocks.")] = 11_000,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same market.")] = 42,
    force: Annotated[bool, typer.Option(help="Rebuild even if the store matches.")] = False,
    db: DbOption = None,
) -> None:
    """Build the deterministic SIMULATED demo market (not real companies) into the store."""
    from market.simulator import SimConfig, build_demo_store
    from market.store import MarketStore

    path = _store_path(db)
    store = MarketStore(path)
    if store.exists() and not force:
        meta = store.get_meta()
        if meta.get("source") == "real":
            raise fail(f"{path} holds real ingested data; refusing to overwrite it with the "
                       "simulated demo (use another --db)")
        if meta.get("seed") == str(seed) and meta.get("n_stocks") == str(stocks):
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
    paths: Annotated[list[Path], typer.Argument(help="Files or folders of bhavcopy/OHLCV CSVs.")],
    corporate_actions: Annotated[
        Path | None,
        typer.Option(help="CSV isin,ex_date,ratio of splits/bonuses (ratio = after/before)."),
    ] = None,
    rejects_dir: Annotated[
        Path | None, typer.Option(help="Where rejected rows go (default: beside the store).")
    ] = None,
    db: DbOption = None,
) -> None:
    """Ingest NSE/BSE bhavcopies (legacy or UDiFF) or per-stock CSVs into the store."""
    from market.ingest import IngestError, ingest_paths
    from market.store import MarketStore

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise fail(f"no such file or folder: {', '.join(missing)}")
    store = MarketStore(_store_path(db))
    try:
        with progress_bar() as update:
            report = ingest_paths(
                store, list(paths), rejects_dir=rejects_dir,
                corporate_actions=corporate_actions, progress=update,
            )
    except IngestError as exc:
        raise fail(str(exc), code=2) from None
    console.print(report.summary() if hasattr(report, "summary") else str(report))


@data_app.command("info")
def data_info(
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Stocks, date range and source (simulated or real) of the store."""
    from market.store import MarketStore, StoreError

    try:
        info = MarketStore(_store_path(db)).info()
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
