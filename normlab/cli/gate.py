"""``normlab validate`` (the data gate alone) and ``normlab init`` (profile a trusted file)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from normlab.cli.app import ConfigArg, DataOpt, SetOpt, SummaryOpt, app, console
from normlab.cli.common import fail, load_or_fail, prepare_environment, write_summary
from normlab.errors import ConfigError, NormlabError

if TYPE_CHECKING:
    from normlab.contracts import CheckRow
    from normlab.gate.contracts import GateReport

_STYLE = {"blocked": "bold red", "quarantined": "yellow", "warned": "yellow", "passed": "green", "off": "dim"}


def gate_table(rows: Sequence[CheckRow]) -> Table:
    """The per-check table, as `normlab.gate.check_table` lays it out."""
    table = Table(title="Data gate")
    for name, justify in (("check", "left"), ("column", "left"), ("severity", "left"), ("outcome", "left"),
                          ("rows", "right"), ("detail", "left")):
        table.add_column(name, justify=justify, overflow="fold", no_wrap=name == "check")
    for row in rows:
        style = _STYLE.get(row.outcome, "")
        table.add_row(row.check, row.column, row.severity, f"[{style}]{row.outcome}[/]", str(row.rows), row.detail)
    return table


def print_gate_report(report: GateReport | Mapping[str, Any]) -> None:
    """Print a validation report's per-check table and its row accounting (the report as JSON too: an error's)."""
    from normlab.gate import check_table
    from normlab.gate.contracts import GateReport

    report = report if isinstance(report, GateReport) else GateReport.model_validate(report)
    console.print(gate_table(check_table(report)))
    console.print(f"rows in {report.rows_in} = accepted {report.rows_accepted} "
                  f"+ quarantined {report.rows_quarantined}", highlight=False)
    if report.quarantine_path:
        console.print(f"rejected rows, with reasons: {report.quarantine_path}", soft_wrap=True, highlight=False)


@app.command()
def validate(
    config: ConfigArg = None,
    set_: SetOpt = None,
    data: DataOpt = None,
    summary: SummaryOpt = None,
) -> None:
    """Run only the data gate on a batch: print the per-check table, keep rejected rows in quarantine.

    Exit codes: 0 the batch passed (rejected rows, if any, are in quarantine),
    3 the batch is blocked, 2 the data or config cannot be used.
    """
    prepare_environment()
    cfg = load_or_fail(config, set_)
    from normlab import gate
    from normlab.pipeline import load_batch

    out_dir = cfg.workdir_path() / "validations" / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        batch = load_batch(cfg.data, out_dir, data)
        result = gate.run_gate(gate.GateScope.from_config(cfg), batch, out_dir)
    except NormlabError as exc:
        if not any(out_dir.iterdir()):
            out_dir.rmdir()  # an unreadable file leaves nothing behind
        raise fail(exc, exc.exit_code) from None

    print_gate_report(result.report)
    console.print(f"report: {result.html_path}", soft_wrap=True, highlight=False)
    write_summary(summary, gate.summary(result).model_dump())
    try:
        gate.enforce(result)
    except NormlabError as exc:
        raise fail(exc, exc.exit_code) from None
    console.print("[green]passed[/]: accepted rows in " + result.accepted_path, soft_wrap=True, highlight=False)


@app.command()
def init(
    data: Annotated[Path, typer.Option(
        "--data", help="A trusted CSV or Parquet file, or a folder of images in class subfolders (read only)."
    )],
    label: Annotated[str | None, typer.Option("--label", help="Its label column (a table: required).")] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Name of the suite and config (default: from the file).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing suite or config of that name.")] = False,
) -> None:
    """Profile a trusted file into expectations/NAME.json and configs/NAME.yaml, ready for `normlab run`.

    A folder of images gets profiles/NAME.json (classes, sizes, modes, channel
    statistics) and configs/NAME.yaml instead.
    """
    prepare_environment()
    from normlab.data.types import type_summary
    from normlab.profiling import init_project

    if data.is_dir():
        _init_images(data, label, name, force)
        return
    if label is None:
        raise fail(ConfigError(f"{data}: pass --label, the label column of the table"), 2)
    try:
        made = init_project(data, label, name=name, force=force)
    except NormlabError as exc:
        raise fail(exc, exc.exit_code) from None
    here = Path.cwd()
    suite = Path(made.suite_path).relative_to(here)
    config = Path(made.config_path).relative_to(here)
    console.print(f"profiled {made.rows} rows: {suite} ({made.expectations} expectations) and {config}",
                  highlight=False)
    for line in type_summary(made.types):
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    promotion = made.promotion
    (metric, at_least), = promotion.thresholds.items()
    console.print(f"promotion: {metric} >= {at_least} (always predicting {promotion.majority!r} scores about "
                  f"{promotion.majority_share})", soft_wrap=True, highlight=False, markup=False)
    if made.own_failures:
        console.print(f"[yellow]note[/]: the gate would reject {made.own_rows_rejected} rows of this file itself "
                      f"({', '.join(made.own_failures)}); see normlab validate {config}", highlight=False)
    console.print(f"next: [bold]normlab run {config}[/]   then check new batches with "
                  f"[bold]normlab validate {config} --data NEW.csv[/]", soft_wrap=True, highlight=False)


def _init_images(data: Path, label: str | None, name: str | None, force: bool) -> None:
    """`init` for a folder of images: the profile and a config, and what they found."""
    from normlab.images.profile import init_image_project
    from normlab.profiling import name_from_path, safe_name

    try:
        chosen = safe_name(name) if name is not None else name_from_path(data.resolve())
        made = init_image_project(data, name=chosen, force=force, label=label or "label")
    except NormlabError as exc:
        raise fail(exc, exc.exit_code) from None
    here = Path.cwd()
    profile = made.profile
    console.print(f"profiled {profile.images} images of {profile.files} files: "
                  f"{Path(made.profile_path).relative_to(here)} and {Path(made.config_path).relative_to(here)}",
                  highlight=False)
    for line in profile.lines():
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    config = Path(made.config_path).relative_to(here)
    console.print(f"next: [bold]normlab run {config}[/]   then check new folders with "
                  f"[bold]normlab validate {config} --data NEW_FOLDER[/]", soft_wrap=True, highlight=False)
