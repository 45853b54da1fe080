"""The data gate: run every check on a batch, quarantine what fails, block what must stop.

Reports (tables, HTML, MLflow) live in `normlab.gate_reports` and are
re-exported here. One entry point, `run_gate`, serves the training flow, the monitoring flow and
``normlab validate``. Checks run in stages; rows a stage rejects are not seen
by the later stages (a text value coerced away must not also count as a
missing value)::

    1 structure    columns (table), types (rows)
    2 rows         the suite's expectations, non_finite, duplicates, contamination
    3 labels       label_noise, on the rows still accepted
    4 batch        class_balance, row_count, rejected_share, on the accepted rows

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from normlab import checks as ck
from normlab.config import GateConfig, PipelineConfig, TimeSplit
from normlab.data.fingerprint import fingerprint_frame
from normlab.errors import DataValidationError
from normlab.gate_reports import (
    check_table,
    log_gate,
    markdown_summary,
    render_html,
    summary,
)
from normlab.gate_splits import (
    check_splits,
    evaluation_index_dir,
    read_evaluation_index,
)
from normlab.governance import (
    CheckResult,
    Evaluated,
    ValidationReport,
    evaluate_suite,
    load_suite,
    positional,
    take_rows,
)
from normlab.label_noise import check_label_noise
from normlab.quarantine import Rejection, annotate, verify_accounting, write_parquet

OUTCOMES = ("passed", "warned", "quarantined", "blocked", "off")
CONTEXTS = ("train", "monitor")
_STRICTNESS = ("off", "warn", "quarantine", "block")
# Severities when watching production data (normlab monitor): what protects a training set
# only (contamination, label noise, class balance, duplicates, row count) is reported, never
# blocking; what makes a batch unusable (columns, unparseable values, a batch that loses too
# many rows) still acts. A check's monitoring severity is never stricter than its training one.
MONITOR_DEFAULTS: dict[str, str] = {
    "columns": "block", "types": "quarantine", "non_finite": "quarantine", "duplicates": "warn",
    "contamination": "warn", "label_noise": "warn", "class_balance": "warn", "row_count": "warn",
    "rejected_share": "block",
}


def severity_of(gate: GateConfig, name: str, context: str) -> str:
    """The severity of a built-in check in a context (``train`` or ``monitor``).

    Training uses ``gate.<check>.severity``. Monitoring uses
    ``gate.<check>.monitor_severity`` when set, else the check's monitoring
    default (`MONITOR_DEFAULTS`), capped at its training severity (a check
    turned off or down for training is not stricter in monitoring).
    """
    check = getattr(gate, name)
    if context == "train":
        return check.severity
    if context != "monitor":
        raise ValueError(f"gate context is one of {CONTEXTS}; got {context!r}")
    if check.monitor_severity is not None:
        return check.monitor_severity
    default = MONITOR_DEFAULTS[name]
    return min(default, check.severity, key=_STRICTNESS.index)
_COLUMN_SET_TYPES = ("expect_table_columns_to_match_set", "expect_table_columns_to_match_ordered_list")


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


# 1. Assess (pure) -----------------------------------------------------------------------


def feature_names(cfg: PipelineConfig, columns: list[str]) -> list[str]:
    """The configured features as named (present or not), else every column but the label and time columns."""
    if cfg.data.features:
        return list(cfg.data.features)
    excluded = {cfg.data.label} | {s.column for s in cfg.splits.ood if isinstance(s, TimeSplit)}
    return [c for c in columns if c not in excluded]


def suite_columns(suite: dict[str, Any] | None) -> tuple[list[str], list[str] | None]:
    """Columns the suite's expectations refer to, and the column set it declares (if any)."""
    referenced: list[str] = []
    declared: list[str] | None = None
    for exp in (suite or {}).get("expectations", []):
        kwargs = exp.get("kwargs", {})
        if isinstance(kwargs.get("column"), str) and kwargs["column"] not in referenced:
            referenced.append(kwargs["column"])
        if exp["type"] in _COLUMN_SET_TYPES and kwargs.get("exact_match", True):
            listed = kwargs.get("column_set") or kwargs.get("column_list")
            if isinstance(listed, list):
                declared = [str(c) for c in listed]
    return referenced, declared


def unlabelled_suite(suite: dict[str, Any] | None, label: str) -> dict[str, Any] | None:
    """The suite as it applies to a batch without its label column (new data awaiting labels).

    Expectations on the label are dropped and the label leaves any declared column set.
    """
    if suite is None:
        return None
    kept = []
    for exp in suite["expectations"]:
        kwargs = exp.get("kwargs", {})
        if kwargs.get("column") == label:
            continue
        for key in ("column_set", "column_list"):
            if isinstance(kwargs.get(key), list) and label in kwargs[key]:
                exp = {**exp, "kwargs": {**kwargs, key: [c for c in kwargs[key] if c != label]}}
        kept.append(exp)
    return {**suite, "expectations": kept}


def known_labels(suite: dict[str, Any] | None, label: str) -> list[Any] | None:
    """The label set a suite declares (``expect_column_values_to_be_in_set`` on the label), if any."""
    for exp in (suite or {}).get("expectations", []):
        kwargs = exp.get("kwargs", {})
        if exp["type"] == "expect_column_values_to_be_in_set" and kwargs.get("column") == label:
            values = kwargs.get("value_set")
            if isinstance(values, list):
                return values
    return None


def assess(
    frame: pd.DataFrame,
    cfg: PipelineConfig,
    suite: dict[str, Any] | None,
    *,
    evaluation_index: pd.DataFrame | None = None,
    context: str = "train",
    reference: pd.DataFrame | None = None,
) -> Assessment:
    """Run every check on a batch and decide, row by row, what is accepted.

    Args:
        frame: The batch as it arrived.
        cfg: The pipeline config (``gate`` section, label, features, split salt).
        suite: The expectation suite, or None.
        evaluation_index: Earlier runs' evaluation rows, for the contamination check.
        context: ``train`` (protect a training set) or ``monitor`` (watch production
            data); it picks each check's severity (`severity_of`).
        reference: The model's training rows; in monitoring the label-noise check
            scores the batch's rows against them.

    Returns:
        The checks in stage order, with outcomes, and the accepted rows.
    """
    gate = cfg.gate

    def sev(name: str) -> str:
        return severity_of(gate, name, context)

    frame = positional(frame)
    n = len(frame)
    label = cfg.data.label
    columns = [str(c) for c in frame.columns]
    labelled = label in columns
    if not labelled:
        suite = unlabelled_suite(suite, label)
    features = feature_names(cfg, columns)
    referenced, declared = suite_columns(suite)
    results: list[tuple[Evaluated, str]] = []
    work = frame

    # Stage 1: structure.
    required = list(dict.fromkeys([*([label] if labelled else []), *(cfg.data.features or []), *referenced]))
    results.append(_run(sev("columns"), "columns",
                        lambda: ck.check_columns(frame, required=required, expected=declared)))
    converted: list[str] = []
    typed, numbers = ck.check_types(frame, ck.numeric_columns_of_suite(suite))
    typed_rows = np.setdiff1d(np.arange(n), typed.rows if typed.rows is not None else [])
    typed_frame = frame.assign(**numbers) if numbers else frame
    if sev("types") == "off":
        results.append((ck.off_result("types"), "off"))
    else:
        results.append((typed, sev("types")))
        if numbers and sev("types") != "warn":
            # Repair the columns for the rows that stay; the rejected rows keep their text in quarantine.
            work = typed_frame
            converted = list(numbers)
    keep = _remaining(n, results)

    # Stage 2: rows (on the rows stage 1 kept; positions are mapped back to the batch).
    view = work if keep.size == n else take_rows(work, keep)
    stage: list[tuple[Evaluated, str]] = []
    if suite is not None:
        evaluated = evaluate_suite(view, suite, engine=gate.engine, overrides=gate.expectations)
        stage += [(e, e.result.severity) for e in evaluated]
    numeric_inputs = [c for c in [*features, label] if c in view.columns]
    nullable = ck.nullable_columns_of_suite(suite)
    stage.append(_run(sev("non_finite"), "non_finite",
                      lambda: ck.check_non_finite(view, numeric_inputs, nullable=nullable)))
    present = [c for c in features if c in view.columns]
    contamination = sev("contamination") != "off" and evaluation_index is not None
    hashed = sev("duplicates") != "off" or contamination
    feature_hashes = ck.content_hashes(view, present) if hashed else None  # shared by the two checks below
    stage.append(_run(sev("duplicates"), "duplicates",
                      lambda: ck.check_duplicates(view, features=present, feature_hashes=feature_hashes)))
    stage.append(_run(sev("contamination"), "contamination",
                      lambda: ck.check_contamination(view, feature_hashes, evaluation_index, salt=cfg.splits.salt)))
    results += [(_map_back(e, keep, n), s) for e, s in stage]
    keep = _remaining(n, results)

    # Stage 3: labels, on the rows still accepted.
    view = work if keep.size == n else take_rows(work, keep)
    noise = gate.label_noise
    scored, severity = _run(sev("label_noise"), "label_noise", lambda: check_label_noise(
        view, present, label, k=noise.k, max_share=noise.max_share, sample_rows=noise.sample_rows, seed=cfg.seed,
        confidence=noise.confidence, reference=reference))
    results.append((_map_back(scored, keep, n), severity))
    accepted = _remaining(n, results)

    # Stage 4: the batch as it would be accepted.
    if labelled:
        results.append(_run(sev("class_balance"), "class_balance", lambda: ck.check_class_balance(
            work[label].iloc[accepted], known=known_labels(suite, label), min_share=gate.class_balance.min_share)))
    else:
        results.append((ck.skipped("class_balance", "unlabelled batch"), sev("class_balance")))
    results.append(_run(sev("row_count"), "row_count", lambda: ck.check_row_count(
        int(accepted.size), min_rows=gate.row_count.min_rows, max_rows=gate.row_count.max_rows)))
    results.append(_run(sev("rejected_share"), "rejected_share", lambda: ck.check_rejected_share(
        n - int(accepted.size), n, max_share=gate.rejected_share.max_share)))

    checks: list[CheckResult] = []
    rejections: list[Rejection] = []
    blocked_by: list[Rejection] = []
    for evaluated, severity in results:
        result = evaluated.result
        result.severity = severity
        result.outcome = ck.outcome_of(result, severity)
        checks.append(result)
        reason = result.why or result.name
        if result.outcome in ("quarantined", "blocked") and evaluated.rows is not None and evaluated.rows.size:
            rejections.append(Rejection(result.label, reason, evaluated.rows))
        if result.outcome == "blocked":
            blocked_by.append(Rejection(f"blocked by {result.label}", reason, np.zeros(0, dtype=np.int64)))
    if blocked_by:
        accepted = np.zeros(0, dtype=np.int64)
    return Assessment(checks=checks, rejections=rejections, blocked_by=blocked_by, accepted=accepted,
                      repaired=work, converted=converted, typed=typed_rows, typed_frame=typed_frame)


def _run(severity: str, name: str, check) -> tuple[Evaluated, str]:
    """Run a built-in check unless its severity is off."""
    if severity == "off":
        return ck.off_result(name), "off"
    return check(), severity


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
    cfg: PipelineConfig,
    batch: dict[str, Any],
    out_dir: str | Path,
    *,
    context: str = "train",
    reference_path: str | Path | None = None,
) -> dict[str, Any]:
    """Validate a batch, write the accepted rows and the quarantine, and check the accounting.

    In the ``monitor`` context the rows that can be read and typed are also
    written (``typed.parquet``, whatever later checks decided): drift is
    measured on them, quarantined rows included.

    Args:
        cfg: The pipeline config.
        batch: What `normlab.pipeline.load_batch` returns (``path``, ``source``,
            ``fingerprint``, ``rows``, ``columns``).
        out_dir: A folder of this run (``validation.json``, ``validation.html``
            and, when rows were taken out or repaired, ``accepted.parquet``).
        context: ``train`` or ``monitor`` (see `severity_of`).
        reference_path: Parquet of the model's training rows (monitoring: label noise against them).

    Returns:
        ``report`` (the validation report dict), ``accepted_path`` (Parquet of
        the accepted rows; None when blocked), ``accepted`` (a batch dict for
        the accepted rows; None when blocked), ``quarantine_path`` (Parquet of
        the rejected rows, or None), ``quarantine_dir``, ``rows_in``,
        ``rows_accepted``, ``rows_quarantined``, ``blocked`` (and its
        opposite ``success``), ``failed`` (a line per failed check),
        ``table`` (`check_table`), ``report_path`` and ``html_path``; in
        monitoring also ``typed_path``, ``rows_typed`` and ``rows_untyped``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = pd.read_parquet(batch["path"])
    suite = load_suite(cfg.data.expectations) if cfg.data.expectations else None
    contamination = severity_of(cfg.gate, "contamination", context) != "off"
    index = read_evaluation_index(evaluation_index_dir(cfg)) if contamination else None
    reference = pd.read_parquet(reference_path) if reference_path is not None else None
    assessment = assess(frame, cfg, suite, evaluation_index=index, context=context, reference=reference)
    settled = settle(cfg, batch, frame, assessment, out_dir, suite_name=(suite or {}).get("name"))
    settled["context"] = context
    if context == "monitor":
        typed = assessment.typed if assessment.typed is not None else np.arange(len(frame))
        path = write_parquet(take_rows(assessment.typed_frame, typed), out_dir / "typed.parquet")
        settled.update({"typed_path": str(path), "rows_typed": int(typed.size),
                        "rows_untyped": int(len(frame) - typed.size)})
    return settled


def settle(
    cfg: PipelineConfig,
    batch: dict[str, Any],
    frame: pd.DataFrame,
    assessment: Assessment,
    out_dir: Path,
    *,
    suite_name: str | None,
) -> dict[str, Any]:
    """Write what an assessment decided and prove that every row is accounted for."""
    n = len(frame)
    rejected = np.ones(n, dtype=bool)
    rejected[assessment.accepted] = False
    rows_quarantined = int(rejected.sum())
    quarantine_dir = cfg.gate.quarantine_path(cfg.workdir_path()) / cfg.name / out_dir.name
    quarantine_path: str | None = None
    if rows_quarantined:
        rows = annotate(frame, np.flatnonzero(rejected), assessment.rejections, blocked_by=assessment.blocked_by,
                        fingerprint=batch["fingerprint"], source=batch["source"])
        quarantine_path = str(write_parquet(rows, quarantine_dir / "rows.parquet"))

    accepted: dict[str, Any] | None = None
    if not assessment.blocked:
        if rows_quarantined == 0 and not assessment.converted:
            accepted = dict(batch)  # nothing removed or repaired: the snapshot is the accepted batch
        else:
            kept = take_rows(assessment.repaired, assessment.accepted)
            path = write_parquet(kept, out_dir / "accepted.parquet")
            accepted = {"path": str(path), "source": batch["source"], "fingerprint": fingerprint_frame(kept),
                        "rows": len(kept), "columns": [str(c) for c in kept.columns]}
    counts = verify_accounting(n, accepted["path"] if accepted else None, quarantine_path)

    report = ValidationReport(
        suite=suite_name or "none", fingerprint=batch["fingerprint"], rows_in=n, checks=assessment.checks,
        rows_accepted=counts["rows_accepted"], rows_quarantined=counts["rows_quarantined"], source=batch["source"],
    ).to_dict()
    report["quarantine_path"] = quarantine_path
    report_path = out_dir / "validation.json"
    report_path.write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    html_path = out_dir / "validation.html"
    html_path.write_text(render_html(report), encoding="utf-8")
    if quarantine_path:
        # The validation result sits beside the rows it rejected.
        shutil.copy2(report_path, quarantine_dir / "validation.json")
        shutil.copy2(html_path, quarantine_dir / "validation.html")
    return {
        "report": report,
        "accepted": accepted,
        "accepted_path": accepted["path"] if accepted else None,
        "quarantine_path": quarantine_path,
        "quarantine_dir": str(quarantine_dir),
        **counts,
        "blocked": assessment.blocked,
        "success": not assessment.blocked,
        "failed": report["failed"],
        "table": check_table(report),
        "report_path": str(report_path),
        "html_path": str(html_path),
    }


def enforce(gate: dict[str, Any]) -> None:
    """Raise `DataValidationError` (exit code 3) when the gate blocked the batch."""
    if not gate["blocked"]:
        return
    report = gate["report"]
    failures = [CheckResult(**c) for c in report["checks"] if c["outcome"] == "blocked"]
    more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
    listed = "; ".join(c.describe() for c in failures[:5]) + more
    kept = f"; all {gate['rows_in']} rows kept in {gate['quarantine_path']}" if gate["quarantine_path"] else ""
    raise DataValidationError(
        f"batch {report['fingerprint'][:12]} blocked by {len(failures)} check(s): {listed}{kept}", report=report
    )


__all__ = [
    "CONTEXTS",
    "MONITOR_DEFAULTS",
    "Assessment",
    "assess",
    "check_splits",
    "check_table",
    "enforce",
    "evaluation_index_dir",
    "log_gate",
    "markdown_summary",
    "read_evaluation_index",
    "render_html",
    "run_gate",
    "settle",
    "severity_of",
    "summary",
]
