"""``normlab study``: known findings about normalization, tested on this data, in a one-page report."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from normlab.cli.app import ConfigArg, SetOpt, SummaryOpt, app, console
from normlab.cli.common import check_data_or_fail, fail, load_or_fail, prepare, run_flow, ui_command, write_summary
from normlab.errors import NormlabError


@app.command()
def study(
    config: ConfigArg = None,
    set_: SetOpt = None,
    quick: Annotated[bool, typer.Option("--quick", help="3 seeds, 5 epochs: about a third of the time.")] = False,
    seeds: Annotated[int | None, typer.Option("--seeds", min=2, help="Number of seeds (default 5; --quick 3).")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Training epochs per run.")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Worker processes of the local Dask cluster (default: sweep.workers).")] = None,
    summary: SummaryOpt = None,
) -> None:
    """Check known findings about normalization on this data and write a one-page report of which held.

    BatchNorm at small batches, BatchNorm folding, BatchNorm re-estimation on corrupted
    data, RMSNorm and Dynamic Tanh against LayerNorm: each with its test, 95 % intervals
    over seeds and a verdict. On the built-in digits and 2 cores: under 10 minutes
    (--quick: about 3).
    """
    prepare()
    cfg = load_or_fail(config, set_)
    check_data_or_fail(cfg.data.path)
    from normlab.study import study_config

    try:
        scfg = study_config(cfg, quick=quick, seeds=seeds, epochs=epochs, workers=workers)
    except NormlabError as exc:
        raise fail(exc, exc.exit_code) from None
    from normlab.flows.sweep import study_flow
    from normlab.sweep import expand_grid

    console.print(f"normlab study: {len(expand_grid(scfg.sweep))} runs ({', '.join(scfg.sweep.norms)} x batch "
                  f"{' and '.join(map(str, scfg.sweep.batch_sizes))} x {len(scfg.sweep.seeds)} seeds, "
                  f"{scfg.train.epochs} epochs) on {scfg.sweep.workers} worker(s), "
                  f"store {scfg.redacted().tracking_uri()}", soft_wrap=True)
    result = run_flow(lambda: study_flow(scfg), summary)
    table = Table(title=f"{result.held} of {len(result.findings)} findings held on this data")
    table.add_column("#", justify="right")
    table.add_column("finding")
    table.add_column("held", no_wrap=True)
    table.add_column("here")
    for i, finding in enumerate(result.findings, 1):
        mark = "[green]held[/]" if finding.held else "[red]not held[/]"
        table.add_row(str(i), finding.title, mark, finding.verdict)
    console.print(table)
    console.print(f"report {result.report['html']}  (parent run {result.parent_run_id})", soft_wrap=True)
    console.print(f"open the MLflow UI:  [bold]{ui_command(result.tracking_uri)}[/]", soft_wrap=True)
    write_summary(summary, result.record())
