"""Command: ``normlab monitor`` (drift of new batches, alerts, retraining)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from normlab.cli.app import ConfigArg, SetOpt, SummaryOpt, app, console
from normlab.cli.common import as_user_error, fail, load_or_fail, prepare_environment, ui_command, write_summary
from normlab.errors import NormlabError, RetrainingError

if TYPE_CHECKING:  # imported with the flow, when the command runs
    from normlab.config import PipelineConfig
    from normlab.monitoring.contracts import AlertOutcome, BatchEntry, MonitorSummary, Reference

# Exit codes of normlab monitor (see normlab.cli for all): 3 a batch was blocked by the data gate
# (every batch still processed and alerted), 5 a batch drifted (only with --fail-on-drift),
# 7 a retraining failed (batches recorded, failure alerted). The highest-priority one wins: 7, 3, 5.
BLOCKED_EXIT_CODE = 3
DRIFT_EXIT_CODE = 5
RETRAIN_EXIT_CODE = RetrainingError.exit_code


def batches_table(batches: list[BatchEntry]) -> Table:
    """One row per batch: rows, drift level and share, top columns, alert."""
    table = Table(title="Monitored batches")
    for head, justify in (("batch", "left"), ("status", "left"), ("rows in/ok", "right"), ("data", "left"),
                          ("drift", "left"), ("share", "right"), ("top columns (score)", "left"),
                          ("alert", "left")):
        table.add_column(head, justify=justify, no_wrap=head != "top columns (score)")
    for b in batches:
        drift = b.drift
        share = drift.share if drift else None
        top = ", ".join(f"{c.column} ({c.score:.2f})" for c in (drift.columns if drift else [])[:3] if c.drifted)
        alerts = [f"{kind} {_alert_text(alert)}" for kind, alert in (("drift", b.alert), ("data", b.quality_alert))
                  if alert.due]
        table.add_row(
            _label(b), b.status,
            f"{_blank(b.rows_in)}/{_blank(b.rows_accepted)}" if "rows_in" in b.model_fields_set else "",
            b.quality.level if b.quality else "",
            drift.level if drift else "", "" if share is None else f"{share:.2f}", top or "-",
            ", ".join(alerts) or "-",
        )
    return table


def _blank(value: int | None) -> str:
    return "" if value is None else str(value)


@app.command()
def monitor(
    config: ConfigArg = None,
    set_: SetOpt = None,
    data: Annotated[str, typer.Option("--data", help="A batch file (CSV/Parquet), an image folder, or a landing folder of them.")] = ...,
    summary: SummaryOpt = None,
    fail_on_drift: Annotated[bool, typer.Option(
        "--fail-on-drift", help=f"Exit with code {DRIFT_EXIT_CODE} when a batch drifted (suspected or detected).",
    )] = False,
    retrain: Annotated[bool | None, typer.Option(
        "--retrain/--no-retrain",
        help="Retrain on the reference plus the new rows when drift is detected (default: monitor.retrain_on_drift).",
    )] = None,
) -> None:
    """Check new batches for drift against the champion's training data; alert, report, and optionally retrain.

    Each batch is processed once (by content fingerprint; a batch seen before
    is skipped). Exit codes: 3 when a batch was blocked by the data gate, 7
    when a retraining failed, 5 on drift with --fail-on-drift (every batch is
    processed and alerted first). Alert URLs come from alerts.urls or the
    NORMLAB_ALERT_URLS environment variable.

    In a landing folder, names starting with _ or . are ignored (upload, then
    rename); a file changed in the last 2 s, or while it was read, is pending
    until the next run; a file that cannot be read is recorded as unreadable
    until it changes (touch it to retry), and symbolic links are refused.
    Either way the other files are processed. Rows appended to a processed
    file are a batch of their own.
    """
    prepare_environment()
    cfg = load_or_fail(config, set_)

    from normlab.flows.monitoring import monitoring_flow

    console.print(f"normlab monitor: {cfg.name}, data {data}, store {cfg.redacted().tracking_uri()}", soft_wrap=True)
    hint = command_hint(config, set_)
    retrain_error: RetrainingError | None = None
    try:
        result = monitoring_flow(cfg, data=data, retrain=retrain, config_hint=hint)
    except RetrainingError as exc:
        retrain_error, result = exc, exc.summary
    except Exception as exc:  # mapped to one line, or re-raised as a bug
        user_error = as_user_error(exc)
        if user_error is None:
            raise
        write_summary(summary, {"status": "failed", "data": data, "error": str(user_error).splitlines()[0],
                                "batches": []})
        raise fail(user_error, user_error.exit_code) from None

    _report(cfg, data, summary, result, retrain_error, fail_on_drift)


def _report(cfg: PipelineConfig, data: str, summary: Path | None, result: MonitorSummary, retrain_error: RetrainingError | None,
            fail_on_drift: bool) -> None:
    """Print the batches and retrainings, write the summary JSON, and exit with the command's code."""
    from normlab.monitoring import workspace_dir

    batches = result.batches
    if not batches:
        console.print(f"no batch files at {data}")
    else:
        console.print(batches_table(batches))
    for b in batches:
        _print_batch(b)
    for r in result.retrained:
        if r.error and r.data:
            console.print(f"[bold red]retraining failed[/]: {r.error}", soft_wrap=True)
        elif r.error:
            console.print(f"[yellow]retraining skipped[/]: {r.error}", soft_wrap=True)
        else:
            registry = r.registry
            outcome = (f"; {registry.name} v{registry.version} ({', '.join(registry.aliases)}): "
                       f"{registry.reason}" if registry is not None and registry.version else "")
            console.print(f"retrained: run {r.run_id} on {r.rows_reference} reference + {r.rows_new} "
                          f"new rows{outcome}", soft_wrap=True)
    reports = [b.report.html for b in batches if b.status == "processed" and b.report]
    if reports:
        console.print(f"latest report: {reports[-1]}", soft_wrap=True)
        workspace = workspace_dir(cfg.monitor, cfg.workdir_path())
        console.print(f"drift over time:  [bold]evidently ui --workspace {workspace}[/]", soft_wrap=True)
        console.print(f"monitoring runs:  [bold]{ui_command(cfg.redacted().tracking_uri())}[/]", soft_wrap=True)

    processed = [b for b in batches if b.status == "processed"]
    drifted = [b for b in processed if b.drift.level in ("suspected", "detected")]
    blocked = [b for b in processed if b.quality is not None and b.quality.level == "blocked"]
    write_summary(summary, {
        "status": "retraining_failed" if retrain_error else ("blocked" if blocked else "finished"),
        "data": data,
        "tracking_uri": cfg.redacted().tracking_uri(),
        "reference": _public_reference(result.reference),
        "batches": [b.to_json() for b in batches],
        "retrained": [r.to_json() for r in result.retrained],
        "drift": {"processed": len(processed), "drifted": len(drifted),
                  "detected": sum(b.drift.level == "detected" for b in processed)},
        "quality": {"blocked": len(blocked),
                    "quarantined": sum(b.quality is not None and b.quality.level == "quarantined"
                                       for b in processed)},
    })
    if retrain_error is not None:
        raise fail(retrain_error, RETRAIN_EXIT_CODE)
    if blocked:
        raise fail(NormlabError(f"{len(blocked)} batch(es) blocked by the data gate (every row kept in the "
                                "quarantine; drift measured on them, see the lines above)"),
                   BLOCKED_EXIT_CODE)
    if fail_on_drift and drifted:
        raise typer.Exit(DRIFT_EXIT_CODE)


def _print_batch(b: BatchEntry) -> None:
    """The lines about one batch under the table: why it was not processed, its drift, quality and alerts."""
    level = b.drift.level if b.drift else None
    if b.status in ("unreadable", "refused"):
        console.print(f"[yellow]{_label(b)} {b.status}[/]: {b.reason}", soft_wrap=True)
    elif b.status in ("skipped", "pending"):
        console.print(f"{_label(b)} {b.status}: {b.reason}", soft_wrap=True)
    elif level in ("suspected", "detected", "blocked", "too_small"):
        console.print(f"{b.fingerprint[:12]} drift {level}: {b.drift.reason}", soft_wrap=True)
    if b.status == "processed" and b.change:
        console.print(f"{b.fingerprint[:12]} ({Path(b.source).name}): {b.change}", soft_wrap=True)
    quality = b.quality
    if b.status == "processed" and quality is not None and quality.level != "ok":
        console.print(f"[bold red]{b.fingerprint[:12]} data {quality.level}[/]: {quality.reason}", soft_wrap=True)
    if b.rows_untyped:
        console.print(f"{b.fingerprint[:12]}: {b.rows_untyped} row(s) could not be read and typed; "
                      "left out of the drift analysis (kept in the quarantine)", soft_wrap=True)
    if b.quality_alert.due and b.quality_alert.targets and not b.quality_alert.sent:
        console.print(f"[yellow]data-quality alert not delivered[/]: {b.quality_alert.reason}", soft_wrap=True)
    if b.alert.due and b.alert.targets and not b.alert.sent:
        console.print(f"[yellow]alert not delivered[/]: {b.alert.reason}", soft_wrap=True)
    if b.rows_quarantined:
        console.print(f"{b.fingerprint[:12]}: {b.rows_quarantined} row(s) quarantined in {b.quarantine_path}",
                      soft_wrap=True)


def _alert_text(alert: AlertOutcome) -> str:
    return "sent" if alert.sent else ("failed" if alert.targets else "no URL set")


def _label(batch: BatchEntry) -> str:
    """The batch's short fingerprint, or its file name when it could not be read."""
    return batch.fingerprint[:12] if batch.fingerprint else Path(batch.source).name


def command_hint(config: Path | None, overrides: list[str] | None) -> str:
    """The config argument and overrides a suggested ``normlab run`` should repeat.

    Alert and monitor settings do not matter to training, and a value with a
    URI may hold credentials: those are left out.
    """
    parts = [shlex.quote(str(config))] if config else []
    for item in overrides or []:
        if not item.strip().startswith(("alerts.", "monitor.")) and "://" not in item:
            parts.append(f"--set {shlex.quote(item)}")
    return " ".join(parts) + " " if parts else ""


def _public_reference(reference: Reference | None) -> dict[str, str | None] | None:
    """What the summary says about the reference (run, model, version; no local model paths)."""
    if reference is None:
        return None
    return {k: getattr(reference, k) for k in ("run_id", "model", "version", "selected_by", "reference")}
