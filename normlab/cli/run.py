"""``normlab run`` (the training flow) and ``normlab ui`` (MLflow's UI on the configured store)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from normlab.cli.app import ConfigArg, DataOpt, SetOpt, SummaryOpt, app, console
from normlab.cli.common import (
    as_user_error,
    check_data_or_fail,
    fail,
    load_or_fail,
    metrics_table,
    prepare_environment,
    ui_command,
    write_summary,
)


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
            from normlab.cli.gate import print_gate_report

            print_gate_report(report)
        if isinstance(report, dict):
            write_summary(summary, {
                "status": "blocked", "run_id": getattr(user_error, "run_id", None),
                "tracking_uri": cfg.redacted().tracking_uri(),
                "data": {"fingerprint": report.get("fingerprint"), "rows": report.get("rows_in")},
                "validation": {"success": False, "failed": report.get("failed", []),
                               **{k: report.get(k) for k in ("rows_in", "rows_accepted", "rows_quarantined",
                                                             "quarantine_path") if k in report}},
                "metrics": {},
            })
        raise fail(user_error, user_error.exit_code) from None

    from normlab.cli.gate import gate_table

    console.print(gate_table(result.validation.checks))
    console.print(metrics_table(result.metrics))
    resumed = " (resumed after an interruption)" if result.resumed else ""
    console.print(f"run {result.run_id}{resumed}  data {result.data.fingerprint[:12]}  model {result.model_uri}")
    from normlab.cli.registry import print_promotion

    print_promotion(result.registry)
    console.print(f"open the MLflow UI:  [bold]{ui_command(result.tracking_uri)}[/]", soft_wrap=True)
    write_summary(summary, {"status": "finished", **result.record()})


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
