"""What the commands share: the process environment, one-line errors, summaries, the metric table, config loading."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.table import Table

from normlab.cli.app import console, err_console
from normlab.errors import UNREACHABLE, ConfigError, NormlabError, TrackingError

_Result = TypeVar("_Result")


def prepare_environment() -> None:
    """Defaults for a local, offline-friendly run; the user's environment wins."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Prefect's own log lines are the progress display; keep them terse.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "")
    # Tracking tasks retry with backoff themselves (tasks/training.py); MLflow's own
    # default (7 retries, factor 2: minutes per call) would hide an unreachable server.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    # Prefect's temporary server gets 20 s to start by default: too little on a busy machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    # Last, once the variables above are set (it imports Prefect): no traceback on the console for a
    # user error, and what a killed normlab process left behind is cleaned up (normlab/cli/runtime.py).
    from normlab.cli.runtime import prepare_process

    for note in prepare_process(as_user_error):
        console.print(f"[yellow]note[/]: {note}", highlight=False, soft_wrap=True)


def fail(exc: BaseException, code: int) -> typer.Exit:
    """Print ``exc`` as one ``error:`` line (no password in it, however it got there); the exit to raise."""
    from normlab.credentials import scrub

    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    message = scrub(message)
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def as_user_error(exc: BaseException) -> NormlabError | None:
    """Map errors a user can act on (unreachable store, ...) to `NormlabError`."""
    if isinstance(exc, NormlabError):
        return exc
    text = str(exc)
    name = type(exc).__name__
    if name in {"ConnectionError", "MaxRetryError"} or any(s in text for s in UNREACHABLE):
        first = text.strip().splitlines()[0] if text.strip() else name
        return TrackingError(f"tracking store unreachable or refused the request: {first}")
    return None


def write_summary(path: Path | None, summary: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(summary), indent=2, sort_keys=False) + "\n", encoding="utf-8")


def json_safe(value: Any) -> Any:
    """Replace NaN/inf (not valid JSON) with None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def metrics_table(metrics: dict[str, float], title: str = "Per-split metrics") -> Table:
    """Rows: splits; columns: the standard metrics and the ID-to-OOD drop."""
    columns = ["accuracy", "f1_macro", "precision_macro", "recall_macro", "ece", "nll", "accuracy_drop"]
    splits: list[str] = []
    for key in metrics:
        # Configured splits and aggregates only; severities, adapted variants and slices stay in MLflow.
        if key.startswith(("id/test/", "ood/")) and key.endswith("/accuracy") and key.count("/") == 2:
            split = key[: -len("/accuracy")]
            if split not in splits:
                splits.append(split)
    short = {"accuracy": "acc", "f1_macro": "f1", "precision_macro": "prec", "recall_macro": "recall",
             "ece": "ece", "nll": "nll", "accuracy_drop": "drop"}
    table = Table(title=title)
    table.add_column("split", no_wrap=True)
    table.add_column("rows", justify="right", no_wrap=True)
    for col in columns:
        table.add_column(short[col], justify="right", no_wrap=True, min_width=6)
    for split in splits:
        rows = metrics.get(f"{split}/rows")
        cells = [f"{metrics[f'{split}/{c}']:.3f}" if f"{split}/{c}" in metrics else "" for c in columns]
        table.add_row(split, "" if rows is None else str(int(rows)), *cells)
    return table


def ui_command(tracking_uri: str) -> str:
    """The command that opens the MLflow UI on this store."""
    if tracking_uri.lower().startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"


def load_or_fail(config: Path | None, overrides: list[str] | None, *, writes: bool = True):
    """Load the config, or exit with its one-line error.

    A password in the tracking URI is moved out of the config by `load_config`,
    so the config that is passed on, logged and recorded never holds it. A
    command that ``writes`` also checks, before any flow starts, that the work
    folder and the tracking store are usable (`normlab.preflight`).
    """
    from normlab.config import load_config

    try:
        cfg = load_config(config, overrides or [])
        if writes:
            from normlab.preflight import check_all

            check_all(cfg)
    except NormlabError as exc:
        raise fail(exc, exc.exit_code) from None
    return cfg


def check_data_or_fail(path: str | None) -> None:
    """Stop at once, in one line and exit 2, on a data path that cannot be read (before any flow starts)."""
    if not path:
        return
    from normlab.data.sources import check_readable

    try:
        check_readable(path)
    except NormlabError as exc:
        raise fail(exc, exc.exit_code) from None


def prepare() -> None:
    """The shared environment defaults, and Dask's own log lines at warnings only."""
    prepare_environment()
    # Read by dask when it is first imported, in this process and in its workers.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


def run_flow(call: Callable[[], _Result], summary_path: Path | None) -> _Result:
    """Run a flow; a user-fixable error becomes one line, a partial summary is still written."""
    try:
        return call()
    except Exception as exc:
        user_error = as_user_error(exc)
        if user_error is None and isinstance(exc, OSError) and "trying to connect" in str(exc):
            # distributed's own wording when sweep.address does not answer.
            user_error = ConfigError(f"Dask scheduler unreachable: {str(exc).splitlines()[0]}")
        if user_error is None:
            raise
        write_summary(summary_path, {"status": "failed", "parent_run_id": getattr(exc, "run_id", None),
                                     "error": str(user_error).splitlines()[0]})
        raise fail(user_error, user_error.exit_code) from None
