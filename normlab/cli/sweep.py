"""``normlab sweep``: every norm x batch size x seed as nested MLflow runs on Dask."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from normlab.cli.app import ConfigArg, DataOpt, SetOpt, SummaryOpt, app, console
from normlab.cli.common import check_data_or_fail, fail, load_or_fail, prepare, run_flow, ui_command, write_summary
from normlab.errors import ConfigError, NormlabError
from normlab.sweep_contracts import SweepSummary


def _list_override(key: str, value: str | None) -> list[str]:
    """``--norms batch,layer`` as the override ``sweep.norms=[batch,layer]``."""
    if value is None:
        return []
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ConfigError(f"--{key.split('.')[-1].replace('_', '-')}: give at least one value, comma-separated")
    return [f"{key}=[{','.join(items)}]"]


def aggregate_table(summary: SweepSummary, key: str, title: str) -> Table:
    """Norms by batch sizes: mean and 95 % interval over seeds of ``key``."""
    from normlab.report import metric_table

    cells = metric_table(summary.aggregate, key)
    table = Table(title=title)
    for i, head in enumerate(cells.header):
        table.add_column(head, justify="left" if i == 0 else "right", no_wrap=True)
    for row in cells.rows:
        table.add_row(*row)
    return table


def print_sweep(summary: SweepSummary) -> None:
    """The ID and OOD accuracy tables, the failed points, where the report and runs are."""
    console.print(aggregate_table(summary, "id/test/accuracy", "ID test accuracy: mean [95 % interval] over seeds"))
    console.print(aggregate_table(summary, "ood/mean/accuracy", "OOD accuracy: mean [95 % interval] over seeds"))
    for point in summary.points:
        if not point.finished:
            console.print(f"[red]failed[/] {point.norm} batch {point.batch_size} seed {point.seed}: "
                          f"{point.error} (run {point.run_id})", soft_wrap=True)
    console.print(f"parent run {summary.parent_run_id}  report {(summary.report or {}).get('html')}", soft_wrap=True)
    console.print(f"open the MLflow UI:  [bold]{ui_command(summary.tracking_uri)}[/]", soft_wrap=True)


@app.command()
def sweep(
    config: ConfigArg = None,
    set_: SetOpt = None,
    data: DataOpt = None,
    norms: Annotated[str | None, typer.Option(
        "--norms", help="Comma-separated norms, e.g. batch,layer,group (default: sweep.norms, all seven).")] = None,
    batch_sizes: Annotated[str | None, typer.Option(
        "--batch-sizes", help="Comma-separated training batch sizes, e.g. 2,8,64.")] = None,
    seeds: Annotated[str | None, typer.Option("--seeds", help="Comma-separated seeds, e.g. 0,1,2.")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Worker processes of the local Dask cluster (one thread each).")] = None,
    dask_address: Annotated[str | None, typer.Option(
        "--dask-address", help="Run on an existing Dask scheduler, e.g. tcp://10.0.0.5:8786.")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", help="Report folder (default: <workdir>/sweeps/<parent run id>).")] = None,
    summary: SummaryOpt = None,
) -> None:
    """Train every norm x batch size x seed as nested MLflow runs on Dask; write a comparison report.

    Each point's learning rate is train.lr scaled by batch_size / train.batch_size
    (sweep.lr_scaling: linear, sqrt or none). Exit code 1 when a grid point failed.
    """
    prepare()
    if workers is not None and dask_address is not None:
        raise fail(ConfigError("--workers and --dask-address exclude each other: a scheduler has its own workers"), 2)
    try:
        overrides = [*(set_ or []), *_list_override("sweep.norms", norms),
                     *_list_override("sweep.batch_sizes", batch_sizes), *_list_override("sweep.seeds", seeds)]
    except NormlabError as exc:
        raise fail(exc, exc.exit_code) from None
    if workers is not None:
        overrides += [f"sweep.workers={workers}", "sweep.address=null"]
    if dask_address is not None:
        overrides.append(f"sweep.address={dask_address}")
    if output is not None:
        overrides.append(f"sweep.output={output.resolve()}")
    cfg = load_or_fail(config, overrides)
    check_data_or_fail(data or cfg.data.path)

    from normlab.flows.sweep import sweep_flow
    from normlab.sweep import expand_grid

    where = cfg.sweep.address or f"a local Dask cluster of {cfg.sweep.workers} worker(s)"
    console.print(f"normlab sweep: {len(expand_grid(cfg.sweep))} grid points ({len(cfg.sweep.norms)} norms x "
                  f"{len(cfg.sweep.batch_sizes)} batch sizes x {len(cfg.sweep.seeds)} seeds) on {where}, "
                  f"store {cfg.redacted().tracking_uri()}", soft_wrap=True)
    result = run_flow(lambda: sweep_flow(cfg, data_path=data), summary)
    print_sweep(result)
    write_summary(summary, result.record())
    if result.status != "finished":
        failed = sum(not p.finished for p in result.points)
        raise fail(RuntimeError(f"{failed} of {len(result.points)} grid points failed; see the report"), 1)

