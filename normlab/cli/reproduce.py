"""``normlab reproduce``: rerun a logged run from its logged config and data, and compare metric by metric."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from normlab.cli.app import SetOpt, SummaryOpt, app, console
from normlab.cli.common import as_user_error, fail, load_or_fail, prepare, run_flow, write_summary
from normlab.errors import NormlabError
from normlab.tracking import TrackingStore


@app.command()
def reproduce(
    run_id: Annotated[str, typer.Argument(help="The MLflow run id to rerun (32 hex digits).")],
    config: Annotated[Path | None, typer.Option(
        "--config", help="Config naming the tracking store that holds the run (default: configs/digits.yaml).",
    )] = None,
    set_: SetOpt = None,
    tracking_uri: Annotated[str | None, typer.Option(
        "--tracking-uri", help="Read the run from this MLflow store instead of the config's.")] = None,
    summary: SummaryOpt = None,
) -> None:
    """Rerun a logged run from its logged config and data; say metric by metric whether the results are identical.

    Refuses, with the reason, when the data no longer has the logged fingerprint.
    Wall-clock metrics (time/...) are listed apart: they are not expected to repeat.
    Exit code 6 when a metric differs.
    """
    prepare()
    from normlab import reproduce as rep

    try:
        rep.check_run_id(run_id)
    except NormlabError as exc:
        raise fail(exc, exc.exit_code) from None
    store = TrackingStore(tracking_uri or load_or_fail(config, set_).tracking_uri())
    try:
        plan = rep.prepare(store, run_id)
    except Exception as exc:
        user_error = as_user_error(exc)
        if user_error is None:
            raise
        raise fail(user_error, user_error.exit_code) from None
    cfg = plan.config
    console.print(f"reproducing run {run_id}: {cfg.model.family} + [bold]{cfg.model.norm}[/] norm, seed {cfg.seed}, "
                  f"data {plan.source} (fingerprint {plan.fingerprint[:12]}, unchanged)", soft_wrap=True)

    from normlab.flows.training import training_flow

    result = run_flow(lambda: training_flow(cfg, data_path=plan.data_path, resume=False), summary)
    comparison = rep.compare(store, run_id, result.run_id)
    rep.mark_reproduction(store, run_id, result.run_id, comparison.identical)

    if comparison.differ:
        table = Table(title="Metrics that differ (last logged value)")
        for head in ("metric", "original", "reproduced"):
            table.add_column(head, justify="left" if head == "metric" else "right")
        for row in comparison.metrics:
            if row.key in comparison.differ:
                table.add_row(row.key, _num(row.original), _num(row.reproduced))
        console.print(table)
    if comparison.unrepeatable:
        console.print(f"not compared (wall-clock or registry state, not expected to repeat): "
                      f"{', '.join(comparison.unrepeatable)}", soft_wrap=True)
    if comparison.extra:
        console.print(f"only in the reproduction (stages the original did not run): "
                      f"{', '.join(comparison.extra)}", soft_wrap=True)
    if comparison.rounding:
        console.print(f"equal to float64 rounding (relative difference <= {rep.ROUNDING_RTOL:g}), not bit for bit: "
                      f"{', '.join(comparison.rounding)}", soft_wrap=True)
    same = comparison.compared - len(comparison.differ)
    verdict = "[green]identical[/]" if comparison.identical else "[red]different[/]"
    console.print(f"{same} of {comparison.compared} metrics equal at every step "
                  f"({same - len(comparison.rounding)} bit for bit): {verdict}  "
                  f"(original {run_id}, reproduction {result.run_id})", soft_wrap=True)
    write_summary(summary, {"status": "identical" if comparison.identical else "different",
                            "tracking_uri": cfg.redacted().tracking_uri(), "data": result.data.model_dump(),
                            **comparison.model_dump()})
    if not comparison.identical:
        raise typer.Exit(6)


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.6g}"
