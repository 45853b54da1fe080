"""The data gate's assessment: run every check on a batch, settle what it decided, block what must stop.

One entry point, `run_gate`, serves the training flow, the monitoring flow and
``normlab validate``: `assess` decides (pure), `settle` writes the accepted
rows, the quarantine and the reports and proves the accounting, `enforce`
raises on a blocked batch. The checks and their stages are the registry
(`normlab.gate.check_registry`); rows a stage rejects are not seen by the later
stages.

Severities: ``block`` stops the batch; ``quarantine`` takes the flagged rows
out and keeps them (a table-level check cannot single out rows, so its
quarantine rejects the whole batch); ``warn`` only reports; ``off`` skips.
A blocked batch is quarantined whole. Every run checks, from the files it
wrote, that rows_in = rows_accepted + rows_quarantined.

A batch without the label column (new data awaiting labels, in monitoring) is
judged as the labelled batch minus its label: expectations on the label and
the label checks are skipped. Training never gets here without a label
(`normlab.pipeline.load_batch` requires it).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import normlab.gate.checks as ck
from normlab.contracts import Batch, ImageSource, as_batch
from normlab.data.fingerprint import fingerprint_frame
from normlab.errors import ConfigError, DataValidationError
from normlab.gate.check_registry import BATCH_STAGES, CheckContext, CheckEntry, checks_in, severity_of
from normlab.gate.contracts import GateResult, Suite
from normlab.gate.expectations import evaluate_suite, load_suite, unlabelled_suite
from normlab.gate.quarantine import Rejection, annotate, verify_accounting, write_parquet
from normlab.gate.reports import check_table, render_html
from normlab.gate.results import CheckResult, Evaluated, ValidationReport, positional, take_rows
from normlab.gate.scope import GateScope
from normlab.gate.split_audit import read_evaluation_index
from normlab.images.decode import write_pixel_parquet

OUTCOMES = ("passed", "warned", "quarantined", "blocked", "off")


@dataclass
class Assessment:
    """Everything the gate decided about one batch, before anything is written."""

    checks: list[CheckResult]
    rejections: list[Rejection]
    blocked_by: list[Rejection]
    accepted: np.ndarray  # sorted positions of the accepted rows
    repaired: pd.DataFrame  # the batch with text-in-numeric columns converted (what training reads)
    converted: list[str] = field(default_factory=list)
    # Rows that can be read and typed (no text in a numeric column), whatever later checks say:
    # in monitoring, the rows drift is measured on. ``typed_frame`` has those columns converted.
    typed: np.ndarray | None = None
    typed_frame: pd.DataFrame | None = None

    @property
    def blocked(self) -> bool:
        """Whether a blocking check failed."""
        return bool(self.blocked_by)


# 1. Assess (pure) ---------------------------------------------------------------------


def assess(
    frame: pd.DataFrame,
    scope: GateScope,
    suite: Suite | None,
    *,
    evaluation_index: pd.DataFrame | None = None,
    context: str = "train",
    reference: pd.DataFrame | None = None,
    images: ImageSource | None = None,
) -> Assessment:
    """Run every check on a batch and decide, row by row, what is accepted.

    The checks run stage by stage, as the registry orders them
    (`normlab.gate.check_registry`); each stage sees the rows the earlier ones
    kept, and the positions it flags are mapped back to the batch.

    Args:
        frame: The batch as it arrived.
        scope: The config the gate reads (`GateScope`: ``gate`` section, label, features, split salt, seed).
        suite: The expectation suite, or None.
        evaluation_index: Earlier runs' evaluation rows, for the contamination check.
        context: ``train`` (protect a training set) or ``monitor`` (watch production
            data); it picks each check's severity (`severity_of`).
        reference: The model's training rows; in monitoring the label-noise check
            scores the batch's rows against them.
        images: For a batch of image files (its rows are the files found), what
            the scan found; the checks that apply to image files run instead of
            those for tables of values.

    Returns:
        The checks in stage order, with outcomes, and the accepted rows.
    """
    gate = scope.gate
    severity = {entry.name: severity_of(gate, entry.name, context)
                for stage in BATCH_STAGES for entry in checks_in(stage)}
    frame = positional(frame)
    n = len(frame)
    if scope.label not in [str(c) for c in frame.columns]:
        suite = unlabelled_suite(suite, scope.label)
    # Typing runs whatever the types check's severity: monitoring measures drift on the typed rows.
    typed, numbers = ck.check_types(frame, ck.numeric_columns_of_suite(suite))
    typed_rows = np.setdiff1d(np.arange(n), typed.rows if typed.rows is not None else [])
    typed_frame = frame.assign(**numbers) if numbers else frame
    ctx = CheckContext(frame=frame, work=frame, scope=scope, suite=suite, types_result=typed, keep=np.arange(n),
                       evaluation_index=evaluation_index, reference=reference, images=images)
    converted: list[str] = []
    results: list[tuple[Evaluated, str]] = []
    for stage in BATCH_STAGES:
        ctx = replace(ctx, keep=_remaining(n, results))
        done: list[tuple[Evaluated, str]] = []
        if stage == "rows" and suite is not None:
            # The suite's expectations open the rows stage, each at its own severity.
            evaluated = evaluate_suite(ctx.view, suite, engine=gate.engine, overrides=gate.expectations)
            done += [(e, e.result.severity) for e in evaluated]
        done += [_run(entry, ctx, severity[entry.name]) for entry in checks_in(stage, images=images is not None)]
        results += [(_map_back(e, ctx.keep, n), s) for e, s in done]
        if stage == "structure" and numbers and severity["types"] not in ("off", "warn"):
            # Repair the columns for the rows that stay; the rejected rows keep their text in quarantine.
            ctx = replace(ctx, work=typed_frame)
            converted = list(numbers)
    accepted = _remaining(n, results)

    checks: list[CheckResult] = []
    rejections: list[Rejection] = []
    blocked_by: list[Rejection] = []
    for evaluated, sev in results:
        result = evaluated.result
        result.severity = sev
        result.outcome = ck.outcome_of(result, sev)
        checks.append(result)
        reason = result.why or result.name
        if result.outcome in ("quarantined", "blocked") and evaluated.rows is not None and evaluated.rows.size:
            rejections.append(Rejection(result.label, reason, evaluated.rows))
        if result.outcome == "blocked":
            blocked_by.append(Rejection(f"blocked by {result.label}", reason, np.zeros(0, dtype=np.int64)))
    if blocked_by:
        accepted = np.zeros(0, dtype=np.int64)
    return Assessment(checks=checks, rejections=rejections, blocked_by=blocked_by, accepted=accepted,
                      repaired=ctx.work, converted=converted, typed=typed_rows, typed_frame=typed_frame)


def _run(entry: CheckEntry, ctx: CheckContext, severity: str) -> tuple[Evaluated, str]:
    """Run a registered check at its severity: skipped when it cannot run on this batch, else not at all when off."""
    reason = entry.unavailable(ctx) if entry.unavailable is not None else None
    if reason is not None:
        return ck.skipped(entry.name, reason), severity
    if severity == "off":
        return ck.off_result(entry.name), "off"
    return entry.evaluate(ctx, entry.settings(ctx.scope.gate)), severity


def _remaining(n: int, results: list[tuple[Evaluated, str]]) -> np.ndarray:
    """Positions not yet taken out by a failed quarantine-severity row check."""
    keep = np.ones(n, dtype=bool)
    for evaluated, severity in results:
        if severity == "quarantine" and not evaluated.result.success and evaluated.rows is not None:
            keep[evaluated.rows] = False
    return np.flatnonzero(keep)


def _map_back(evaluated: Evaluated, keep: np.ndarray, n: int) -> Evaluated:
    """Turn positions within a stage's view (the rows in ``keep``) into positions within the batch."""
    if evaluated.rows is None or keep.size == n or evaluated.rows.size == 0:
        return evaluated
    rows = keep[evaluated.rows]
    result = evaluated.result
    if result.kind == "check" and result.scope == "rows":
        result.unexpected_sample = [int(r) for r in rows[: len(result.unexpected_sample)]]
    return Evaluated(result, rows)


# 2. Settle (files) ----------------------------------------------------------------------


def run_gate(
    scope: GateScope,
    batch: Batch | Mapping[str, Any],
    out_dir: str | Path,
    *,
    context: str = "train",
    reference_path: str | Path | None = None,
) -> GateResult:
    """Validate a batch, write the accepted rows and the quarantine, and check the accounting.

    In the ``monitor`` context the rows that can be read and typed are also
    written (``typed.parquet``, whatever later checks decided): drift is
    measured on them, quarantined rows included.

    Args:
        scope: The config the gate reads (`GateScope.from_config`): checks, suite, folders.
        batch: What `normlab.pipeline.load_batch` returns (a `Batch`), or a
            mapping with its keys (``path``, ``source``, ``fingerprint``,
            ``rows``, ``columns``).
        out_dir: A folder of this run (``validation.json``, ``validation.html``
            and, when rows were taken out or repaired, ``accepted.parquet``).
        context: ``train`` or ``monitor`` (see `severity_of`).
        reference_path: Parquet of the model's training rows (monitoring: label noise against them).

    Returns:
        The `GateResult`: the validation report (``report``, as in
        ``validation.json``), the `Batch` of the accepted rows (``accepted``;
        None when blocked), the quarantine, the row accounting, the per-check
        table and the report's files; in monitoring also ``typed_path``,
        ``rows_typed`` and ``rows_untyped``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    batch = as_batch(batch)
    frame = pd.read_parquet(batch.path)
    suite = load_suite(scope.expectations) if scope.expectations else None
    contamination = severity_of(scope.gate, "contamination", context) != "off"
    index = read_evaluation_index(scope.evaluation_index) if contamination else None
    reference = pd.read_parquet(reference_path) if reference_path is not None else None
    assessment = assess(frame, scope, suite, evaluation_index=index, context=context, reference=reference,
                        images=batch.images)
    settled = settle(scope.quarantine_dir, batch, frame, assessment, out_dir,
                     suite_name=suite.name if suite else None, context=context)
    if batch.images is not None and settled.accepted is not None:
        pixels = decoded(scope, settled.accepted, out_dir)
        settled = settled.model_copy(update={"accepted": pixels, "accepted_path": pixels.path})
    if context != "monitor":
        return settled
    typed = assessment.typed if assessment.typed is not None else np.arange(len(frame))
    path = write_parquet(take_rows(assessment.typed_frame, typed), out_dir / "typed.parquet")
    return settled.model_copy(update={"typed_path": str(path), "rows_typed": int(typed.size),
                                      "rows_untyped": int(len(frame) - typed.size)})


def decoded(scope: GateScope, accepted: Batch, out_dir: Path) -> Batch:
    """The accepted image files decoded into pixel rows (``pixels.parquet``): the batch every later stage reads.

    The files are decoded and written a chunk at a time, the chunks sized from
    ``data.memory_budget_mb`` (`write_pixel_parquet`). The returned `Batch` is
    fingerprinted as a table (the whole frame's `fingerprint_frame`) and records
    the mode the images were read in. The row accounting stands: one pixel row per accepted file.
    """
    if scope.image_shape is None:
        raise ConfigError("image files need data.image_shape, the (H, W) they are resized to, e.g. [32, 32]")
    images = accepted.images
    entries = pd.read_parquet(accepted.path)
    pixels = write_pixel_parquet(entries, Path(images.root), out_dir / "pixels.parquet", image_shape=scope.image_shape,
                                 mode=scope.image_mode, budget_mb=scope.memory_budget_mb)
    return Batch(path=str(pixels.path), source=accepted.source, fingerprint=pixels.fingerprint, rows=pixels.rows,
                 columns=pixels.columns, images=images.model_copy(update={"mode": pixels.mode}))


def settle(
    quarantine_root: Path,
    batch: Batch,
    frame: pd.DataFrame,
    assessment: Assessment,
    out_dir: Path,
    *,
    suite_name: str | None,
    context: str = "train",
) -> GateResult:
    """Write what an assessment decided and prove that every row is accounted for.

    Rejected rows go to ``quarantine_root / out_dir.name`` (``quarantine_root``:
    the pipeline's quarantine folder, `GateScope.quarantine_dir`).
    """
    n = len(frame)
    rejected = np.ones(n, dtype=bool)
    rejected[assessment.accepted] = False
    rows_quarantined = int(rejected.sum())
    quarantine_dir = quarantine_root / out_dir.name
    quarantine_path: str | None = None
    if rows_quarantined:
        rows = annotate(frame, np.flatnonzero(rejected), assessment.rejections, blocked_by=assessment.blocked_by,
                        fingerprint=batch.fingerprint, source=batch.source)
        quarantine_path = str(write_parquet(rows, quarantine_dir / "rows.parquet"))

    accepted: Batch | None = None
    if not assessment.blocked:
        if rows_quarantined == 0 and not assessment.converted:
            accepted = batch  # nothing removed or repaired: the snapshot is the accepted batch
        else:
            kept = take_rows(assessment.repaired, assessment.accepted)
            path = write_parquet(kept, out_dir / "accepted.parquet")
            accepted = Batch(path=str(path), source=batch.source, fingerprint=fingerprint_frame(kept),
                             rows=len(kept), columns=[str(c) for c in kept.columns], images=batch.images)
    counts = verify_accounting(n, accepted.path if accepted else None, quarantine_path)

    report = ValidationReport(
        suite=suite_name or "none", fingerprint=batch.fingerprint, rows_in=n, checks=assessment.checks,
        rows_accepted=counts.rows_accepted, rows_quarantined=counts.rows_quarantined, source=batch.source,
    ).record(quarantine_path)
    report_path = out_dir / "validation.json"
    report_path.write_text(json.dumps(report.model_dump(), indent=1, default=str), encoding="utf-8")
    html_path = out_dir / "validation.html"
    html_path.write_text(render_html(report), encoding="utf-8")
    if quarantine_path:
        # The validation result sits beside the rows it rejected.
        shutil.copy2(report_path, quarantine_dir / "validation.json")
        shutil.copy2(html_path, quarantine_dir / "validation.html")
    return GateResult(
        report=report,
        accepted=accepted,
        accepted_path=accepted.path if accepted else None,
        quarantine_path=quarantine_path,
        quarantine_dir=str(quarantine_dir),
        rows_in=counts.rows_in,
        rows_accepted=counts.rows_accepted,
        rows_quarantined=counts.rows_quarantined,
        blocked=assessment.blocked,
        success=not assessment.blocked,
        failed=report.failed,
        table=check_table(report),
        report_path=str(report_path),
        html_path=str(html_path),
        context=context,
    )


def enforce(gate: GateResult) -> None:
    """Raise `DataValidationError` (exit code 3) when the gate blocked the batch.

    The error's ``report`` is the validation report as ``validation.json`` holds it.
    """
    if not gate.blocked:
        return
    report = gate.report
    failures = [CheckResult.of(c) for c in report.checks if c.outcome == "blocked"]
    more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
    listed = "; ".join(c.describe() for c in failures[:5]) + more
    kept = f"; all {gate.rows_in} rows kept in {gate.quarantine_path}" if gate.quarantine_path else ""
    raise DataValidationError(
        f"batch {report.fingerprint[:12]} blocked by {len(failures)} check(s): {listed}{kept}",
        report=report.model_dump(),
    )
