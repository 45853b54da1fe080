"""The ``normlab`` command line: one Typer app.

Exit codes: 0 success, 1 unexpected error, 2 bad config or input, 3 data
blocked by the gate, 4 tracking store unreachable, 5 drift found (only with
``normlab monitor --fail-on-drift``), 6 a reproduction differs from its run,
7 a retraining started by ``normlab monitor`` failed (every batch is still recorded).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from normlab.errors import UNREACHABLE, NormlabError, TrackingError

app = typer.Typer(
    name="normlab",
    help="Governed, reproducible training pipelines with the normalization layer as an experiment axis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Off a terminal (CI logs, pipes) Rich assumes 80 columns; the metric table needs more.
console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

ConfigArg = Annotated[
    Path | None, typer.Argument(help="Pipeline YAML (default: configs/digits.yaml, else built-in defaults).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a setting, e.g. --set model.norm=group (repeatable)."),
]
DataOpt = Annotated[str | None, typer.Option("--data", help="CSV or Parquet file to use instead of data.path.")]
SummaryOpt = Annotated[Path | None, typer.Option("--summary", help="Write a JSON summary of the run here.")]


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
    # user error, and what a killed normlab process left behind is cleaned up (normlab/runtime.py).
    from normlab.runtime import prepare_process

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


@app.command()
def run(
    config: ConfigArg = None,
    set_: SetOpt = None,
    data: DataOpt = None,
    summary: SummaryOpt = None,
    resume: Annotated[bool, typer.Option(
        "--resume/--no-resume",
        help="Continue an interrupted run with the same config and data from its last checkpoint "
             "(--no-resume: start a new run and mark the interrupted one killed).",
    )] = True,
) -> None:
    """Validate the data, train with the configured norm, evaluate ID and OOD splits, log to MLflow."""
    prepare_environment()
    cfg = load_or_fail(config, set_)
    check_data_or_fail(data or cfg.data.path)

    from normlab.flows.training import training_flow

    console.print(f"normlab run: {cfg.name}, {cfg.model.family} + [bold]{cfg.model.norm}[/] norm, "
                  f"{cfg.train.epochs} epochs, batch {cfg.train.batch_size}, store {cfg.redacted().tracking_uri()}")
    try:
        result = training_flow(cfg, data_path=data, resume=resume)
    except Exception as exc:
        user_error = as_user_error(exc)
        if user_error is None:
            raise
        report = getattr(user_error, "report", None)
        if isinstance(report, dict) and "checks" in report:
            from normlab.commands.gate import print_gate_report

            print_gate_report(report)
        if isinstance(report, dict):
            write_summary(summary, {
                "status": "blocked", "run_id": getattr(user_error, "run_id", None),
                "tracking_uri": cfg.tracking_uri(),
                "data": {"fingerprint": report.get("fingerprint"), "rows": report.get("rows_in")},
                "validation": {"success": False, "failed": report.get("failed", []),
                               **{k: report.get(k) for k in ("rows_in", "rows_accepted", "rows_quarantined",
                                                             "quarantine_path") if k in report}},
                "metrics": {},
            })
        raise fail(user_error, user_error.exit_code) from None

    from normlab.commands.gate import gate_table

    console.print(gate_table(result["validation"]["checks"]))
    console.print(metrics_table(result["metrics"]))
    resumed = " (resumed after an interruption)" if result.get("resumed") else ""
    console.print(f"run {result['run_id']}{resumed}  data {result['data']['fingerprint'][:12]}  "
                  f"model {result['model_uri']}")
    from normlab.commands.registry import print_promotion

    print_promotion(result.get("registry") or {})
    console.print(f"open the MLflow UI:  [bold]{ui_command(result['tracking_uri'])}[/]", soft_wrap=True)
    write_summary(summary, {"status": "finished", **result})


@app.command()
def ui(
    config: ConfigArg = None,
    set_: SetOpt = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Open the MLflow UI on the configured store (bound to 127.0.0.1)."""
    cfg = load_or_fail(config, set_, writes=False)
    uri = cfg.tracking_uri()
    if uri.startswith(("http://", "https://")):
        console.print(f"the store is a server: open {uri}")
        return
    os.execvp(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                               "--host", "127.0.0.1", "--port", str(port)])


def main() -> None:
    """Console-script entry point."""
    app()


# Feature commands live in normlab/commands/<feature>.py and register themselves
# on `app` when imported (they only define functions; nothing runs).
COMMAND_MODULES: list[str] = ["normlab.commands.sweep", "normlab.commands.monitor", "normlab.commands.gate",
                              "normlab.commands.registry"]
for _module in COMMAND_MODULES:
    importlib.import_module(_module)


