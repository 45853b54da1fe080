"""Per-batch judgement: the gate in its monitoring context, data quality, drift, the report, the decision."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from normlab import drift
from normlab.config import AlertsConfig, DataConfig, EvalConfig, MonitorConfig
from normlab.errors import DataSourceError
from normlab.images.stats import image_statistics, model_mode, pixel_channels
from normlab.monitoring.contracts import (
    Analysis,
    Decision,
    DriftRecord,
    DriftSummary,
    EvidentlyReport,
    GateOutcome,
    GateProblem,
    LandedBatch,
    Performance,
    Quality,
    Reference,
    ReportInputs,
)
from normlab.monitoring.image_batches import typed_pixels
from normlab.monitoring.ledger import (
    earlier_claims,
    locked_state,
    model_history,
    now_utc,
    read_state,
    workspace_lock,
)
from normlab.monitoring.reference import load_reference_model
from normlab.monitoring.state import BatchRecord, ModelHistory
from normlab.tracking import TrackingStore

if TYPE_CHECKING:
    from normlab.gate.scope import GateScope

_INFERENCE_ROWS = 8192
# A batch's decision waits for earlier-landed batches of the same model that another monitor is
# still processing (so the streak counts batches in landing order), polling this often, at most this long.
_ORDER_POLL_S = 0.2
_ORDER_WAIT_S = 900.0
# Drift levels that move the streak (a blocked or too-small batch leaves it alone).
_STREAK_LEVELS = ("none", "suspected", "detected")

# 3. The data gate ----------------------------------------------------------------------


def gate_batch(scope: GateScope, batch: LandedBatch, out_dir: str | Path,
               reference: Reference | None = None) -> GateOutcome:
    """The data gate in its monitoring context: report what changed, never hide the drift.

    Checks that protect a training set only (contamination, label noise, class
    balance, duplicates, row count) warn here (`normlab.gate.MONITOR_DEFAULTS`);
    rows quarantined for their values stay in the drift analysis
    (``typed_path``); only rows that cannot be read and typed are left out.
    ``scope`` is what the gate reads of the config (`normlab.gate.GateScope`).

    Returns:
        The `GateOutcome`: counts, paths, failed checks (``problems``, with
        their columns and row counts) and the model features the batch lacks.
    """
    from normlab.gate import run_gate

    features = _reference_features(reference) if reference is not None else None
    if batch.images is not None:
        # Image files are decoded as the model reads them: its mode, whatever the batch's files are.
        mode = model_mode(features, scope.image_shape) if features else None
        scope = replace(scope, image_mode=mode or scope.image_mode)
    # The gate takes what a training run loads: the snapshot's path, source, fingerprint, rows and columns.
    landed = {"path": batch.path, "source": batch.source, "fingerprint": batch.fingerprint, "rows": batch.rows,
              "columns": list(batch.columns), "images": batch.images}
    gated = run_gate(scope, landed, out_dir, context="monitor",
                     reference_path=reference.reference if reference is not None else None)
    problems = [GateProblem(check=c.name, column=c.column, outcome=c.outcome, rows=c.rows_flagged,
                            label=c.name + (f":{c.column}" if c.column else ""))
                for c in gated.report.checks if c.outcome in ("blocked", "quarantined")]
    # The full report stays in its file; tasks pass on the counts and paths.
    kept = {k: getattr(gated, k) for k in ("accepted_path", "quarantine_path", "typed_path", "rows_in",
                                           "rows_accepted", "rows_quarantined", "rows_typed", "rows_untyped",
                                           "blocked", "failed", "report_path")}
    missing: list[str] = []
    if batch.images is not None:
        # Drift is measured on every file that decodes; its pixels are the model's features.
        typed, rows = typed_pixels(pd.read_parquet(batch.path), batch.images.root, Path(out_dir), label=scope.label,
                                   image_shape=scope.image_shape, mode=scope.image_mode or "RGB")
        kept.update(typed_path=str(typed), rows_typed=rows, rows_untyped=gated.rows_in - rows)
    elif features is not None:
        missing = [c for c in features if c not in batch.columns]
    return GateOutcome(**kept, problems=problems, missing_features=missing)


def _reference_features(reference: Reference) -> list[str]:
    from normlab.data.encoding import FeatureEncoder

    encoders = json.loads(Path(reference.encoder).read_text(encoding="utf-8"))
    return list(FeatureEncoder.from_dict(encoders["features"]).features)


def quality_of(monitor: MonitorConfig, gated: GateOutcome) -> Quality:
    """The batch's data-quality verdict: ``blocked``, ``quarantined`` (share above monitor.quality_share) or ``ok``.

    Returns:
        The `Quality` (its ``alert`` is set by the decision).
    """
    share = gated.rows_quarantined / gated.rows_in if gated.rows_in else 0.0
    problems = gated.problems
    per_column: dict[str, int] = {}
    for p in problems:
        if p.column:
            per_column[p.column] = per_column.get(p.column, 0) + int(p.rows or 0)
    columns = sorted(per_column, key=lambda c: per_column[c], reverse=True)[: monitor.top_columns]
    checks = sorted({p.label for p in problems})
    if gated.blocked:
        level = "blocked"
        reason = f"blocked by the data gate: {'; '.join(gated.failed[:3]) or 'a blocking check failed'}"
    elif problems and share > monitor.quality_share:
        level = "quarantined"
        reason = (f"{gated.rows_quarantined} of {gated.rows_in} rows quarantined (share {share:.2f} > "
                  f"monitor.quality_share {monitor.quality_share:g})")
    else:
        level, reason = "ok", "data quality ok"
    if gated.missing_features:
        level = "blocked"
        reason = f"batch lacks the model's feature columns: {gated.missing_features[:10]}"
    return Quality(level=level, share=round(share, 6), checks=checks, columns=columns, reason=reason,
                   column_rows={c: per_column[c] for c in columns})

# 5. Drift analysis (the decision path) -------------------------------------------------


def analyze_batch(
    monitor: MonitorConfig, evaluation: EvalConfig, data: DataConfig, seed: int, store: TrackingStore,
    reference: Reference, gated: GateOutcome, batch: LandedBatch,
) -> Analysis:
    """Score data drift, prediction drift and (with labels) performance of every typed row.

    The thresholds and samples are ``monitor``'s, the inference chunk and
    calibration bins ``evaluation``'s; ``seed`` draws the reference sample,
    ``data.label`` is the label column when the reference does not name its
    own, and a model logged to MLflow only is loaded from ``store``.

    Drift is measured on every row that could be read and typed, quarantined
    rows included (rows out of range are the drift); rows with unparseable
    values are left out and counted by the gate (``rows_untyped``).

    Writes ``drift.json`` (every column's score) and the row samples the
    Evidently report draws from into the batch folder.

    Returns:
        The `Analysis` (``drifted`` None when not decidable, ``performance``
        None without labels), with the samples the report draws.
    """
    from normlab.evaluation import classification_metrics, predict_proba

    out = Path(batch.batch_dir)
    current = pd.read_parquet(gated.typed_path)
    ref = drift.sample_rows(pd.read_parquet(reference.reference), monitor.reference_rows, seed)
    model, encoder, labels, label_column = load_reference_model(store, data, reference)
    features = encoder.features
    missing = [c for c in features if c not in current.columns]
    if missing:
        raise DataSourceError(f"batch {batch.fingerprint[:12]} lacks the model's feature columns: {missing[:10]}")

    # Image files are read into pixels: their drift is judged on per-image statistics instead.
    image_shape = data.image_shape if batch.images is not None else None
    ref_view, cur_view, measured = _drift_view(ref, current, features, image_shape)
    scores = drift.score_columns(ref_view, cur_view, measured, alpha=monitor.alpha, effect_floor=monitor.effect_floor)
    data_drift = drift.summarize_columns(scores, drift_share=monitor.drift_share, top=monitor.top_columns)
    # Eval mode makes outputs independent of the chunking: large chunks, fewer Python round trips.
    chunk = max(evaluation.batch_size, _INFERENCE_ROWS)
    ref_proba = predict_proba(model, encoder.transform(ref), batch_size=chunk)
    cur_proba = predict_proba(model, encoder.transform(current), batch_size=chunk)
    prediction = drift.prediction_drift(ref_proba, cur_proba, classes=labels.classes, alpha=monitor.alpha,
                                        effect_floor=monitor.effect_floor)
    performance = None
    if label_column in current.columns and current[label_column].notna().all():
        try:
            y = labels.transform(current[label_column])
        except DataSourceError:
            y = None  # labels the model never saw: accuracy is undefined, the drift is not
        if y is not None:
            m = classification_metrics(y, cur_proba, n_classes=labels.n_classes, ece_bins=evaluation.ece_bins)
            performance = Performance(accuracy=m["accuracy"], f1_macro=m["f1_macro"], ece=m["ece"])
            if reference.reference_accuracy is not None:
                performance = performance.model_copy(update={
                    "reference_accuracy": reference.reference_accuracy,
                    "accuracy_drop": reference.reference_accuracy - m["accuracy"]})

    decidable = len(current) >= monitor.min_rows
    drifted = bool(data_drift.drifted or (monitor.prediction and prediction.drifted)) if decidable else None
    drifted_columns = data_drift.drifted_columns + ([drift.PREDICTION_COLUMN] if prediction.drifted else [])

    # Samples for the report, with the model's outputs as two more columns.
    # Seeded by the batch content: the same batch always gets the same sample.
    sample_seed = int(batch.fingerprint[:8], 16)
    for frame, proba, name in ((ref_view, ref_proba, "reference"), (cur_view, cur_proba, "current")):
        outputs = {drift.PREDICTION_COLUMN: proba.argmax(axis=1).astype(str),
                   drift.CONFIDENCE_COLUMN: proba.max(axis=1)}
        picked = drift.sample_rows(frame[measured].assign(**outputs), monitor.report_rows, sample_seed)
        picked.to_parquet(out / f"report_{name}.parquet", index=False)

    full = DriftRecord(fingerprint=batch.fingerprint, reference_run_id=reference.run_id, rows=len(current),
                       decidable=decidable, drifted=drifted, drifted_columns=drifted_columns, data=data_drift,
                       prediction=prediction, performance=performance, columns=scores)
    (out / "drift.json").write_text(json.dumps(full.to_json(), indent=1, default=float), encoding="utf-8")
    return Analysis(
        rows=len(current),
        decidable=decidable,
        drifted=drifted,
        drifted_columns=drifted_columns,
        drift=DriftSummary(share=data_drift.share, n_columns=data_drift.n_columns, n_drifted=data_drift.n_drifted,
                           drifted=data_drift.drifted, columns=data_drift.columns),
        prediction=prediction,
        performance=performance,
        drift_json=str(out / "drift.json"),
        report_inputs=ReportInputs(reference=str(out / "report_reference.parquet"),
                                   current=str(out / "report_current.parquet")),
        report_columns=[s.column for s in sorted(scores, key=lambda s: s.score, reverse=True)][
            : monitor.report_columns],
    )


def _drift_view(ref: pd.DataFrame, current: pd.DataFrame, features: list[str],
                image_shape: tuple[int, int] | None) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The rows and columns drift is measured on: the features, or (``image_shape`` given) per-image statistics."""
    channels = pixel_channels(features, image_shape)
    if channels is None:
        return ref, current, list(features)
    shape = (int(image_shape[0]), int(image_shape[1]))
    ref_stats = image_statistics(ref[features].to_numpy(), channels=channels, image_shape=shape)
    cur_stats = image_statistics(current[features].to_numpy(), channels=channels, image_shape=shape)
    return ref_stats, cur_stats, list(ref_stats.columns)


# 6. The Evidently report ---------------------------------------------------------------


def build_report(
    monitor: MonitorConfig, workspace: Path, reference: Reference, batch: LandedBatch, analysis: Analysis
) -> EvidentlyReport:
    """Evidently report (HTML + JSON) on the sampled rows, added to the Evidently ``workspace`` (`workspace_dir`).

    The report covers ``monitor.report_rows`` sampled rows of batch and
    reference, counts drifted columns over every feature, and draws the
    ``monitor.report_columns`` top-scoring features plus the predicted class
    and confidence.
    """
    started = time.perf_counter()
    ref = pd.read_parquet(analysis.report_inputs.reference)
    cur = pd.read_parquet(analysis.report_inputs.current)
    # The samples hold the model's features and its two outputs, nothing else.
    features = [c for c in ref.columns if c not in (drift.PREDICTION_COLUMN, drift.CONFIDENCE_COLUMN)]
    numeric = [c for c in features if drift.is_numeric(ref[c]) and drift.is_numeric(cur[c])]
    categorical = [c for c in features if c not in numeric]
    drawn = analysis.report_columns
    version = reference.version or "none"
    # The report shows the decision's own verdict (every row, normlab's thresholds) first;
    # Evidently's tests on the sample follow as a labelled secondary view.
    full = DriftRecord.model_validate(json.loads(Path(analysis.drift_json).read_text(encoding="utf-8")))
    verdict = full.verdict(alpha=monitor.alpha, effect_floor=monitor.effect_floor, drift_share=monitor.drift_share,
                           prediction_decides=monitor.prediction)
    snapshot = drift.evidently_report(
        ref, cur,
        numeric=[*numeric, drift.CONFIDENCE_COLUMN],
        categorical=[*categorical, drift.PREDICTION_COLUMN],
        drawn=[*drawn, drift.PREDICTION_COLUMN, drift.CONFIDENCE_COLUMN],
        name=f"batch {batch.fingerprint[:12]}",
        metadata={"fingerprint": batch.fingerprint, "source": batch.source, "model": reference.model,
                  "model_version": version, "reference_run_id": reference.run_id},
        tags=[reference.model, f"version-{version}"],
        verdict=verdict,
    )
    paths = drift.save_report(snapshot, Path(batch.batch_dir) / "evidently")
    with workspace_lock(workspace) as folder:
        ws = drift.add_to_workspace(snapshot, folder, project=reference.model)
    return EvidentlyReport(html=paths["html"], json_=paths["json"], workspace=ws["workspace"],
                           project_id=ws["project_id"], snapshot_id=ws["snapshot_id"],
                           rows_sampled={"reference": len(ref), "current": len(cur)},
                           seconds=round(time.perf_counter() - started, 3))

def decide_batch(
    monitor: MonitorConfig, alerts: AlertsConfig, workdir: Path, batch: LandedBatch, reference: Reference,
    analysis: Analysis | None, gated: GateOutcome, now: datetime | None = None,
) -> Decision:
    """The batch's drift level and data-quality level, and which alerts are due; committed at once.

    ``monitor`` holds the streak, cooldown and quality thresholds, ``alerts``
    the lowest level that alerts; the state is ``workdir``'s.

    The decision reads the model's streak, cooldowns and alert history and
    writes the new streak, the batch's place in it and the alerts it makes
    due in one critical section under the state lock, so concurrent monitors
    never lose an update. Batches are decided in landing order: an earlier
    batch of the same model that another live monitor has claimed is waited
    for (at most ``_ORDER_WAIT_S``; the reason says when that ran out). A due
    alert is recorded as pending (it starts the cooldown at once);
    `finish_batch` settles it once the delivery is known. A batch the gate
    blocked is still judged for drift and counts towards the streak when its
    drift test fires. A batch decided before (a retried task, a claim taken
    over) gets its recorded decision back, counted once.
    """
    model = reference.model
    deadline = time.monotonic() + _ORDER_WAIT_S
    while True:
        if earlier_claims(read_state(workdir), batch, model) and time.monotonic() < deadline:
            time.sleep(_ORDER_POLL_S)
            continue
        with locked_state(workdir) as state:
            waiting = earlier_claims(state, batch, model)
            if waiting and time.monotonic() < deadline:
                continue  # claimed since the look above: wait for it too
            record = state.batches.get(batch.fingerprint) or BatchRecord()
            prior = record.decision
            if prior is not None and prior.reference_run_id == reference.run_id:
                return prior
            history = model_history(state, reference)
            decision = _judge(monitor, alerts, history, analysis, gated, now or now_utc(), reference.run_id)
            if waiting:
                names = ", ".join(Path(r.source).name for r in waiting[:3])
                decision = decision.model_copy(update={"reason": decision.reason + (
                    f"; decided before earlier batch(es) {names}, still being processed after {_ORDER_WAIT_S:g} s")})
            state.models[model] = _commit_decision(history, decision, batch, analysis, gated)
            state.batches[batch.fingerprint] = record.model_copy(update={"decision": decision.committed()})
            return decision


def _judge(monitor: MonitorConfig, alerts: AlertsConfig, history: ModelHistory, analysis: Analysis | None,
           gated: GateOutcome, when: datetime, reference_run_id: str) -> Decision:
    """The decision over the model's history as it is now (nothing written)."""
    quality = quality_of(monitor, gated)
    if analysis is None:
        why = quality.reason if quality.level == "blocked" else "no row could be read and typed"
        level = drift.LevelDecision(level=drift.BLOCKED, streak=history.streak, alert=False,
                                    reason=f"no drift decision: {why}")
    else:
        level = drift.decide(
            analysis.drifted, analysis.drifted_columns, history.streak, history.alerts,
            consecutive=monitor.consecutive, cooldown_minutes=monitor.cooldown_minutes,
            dedup_overlap=monitor.dedup_overlap, min_level=alerts.min_level, now=when,
        )
    quality_alert, quality_reason = False, quality.reason
    if quality.level != "ok":
        repeat = drift.repeated_alert(quality.checks, history.quality_alerts,
                                      cooldown_minutes=monitor.cooldown_minutes, dedup_overlap=monitor.dedup_overlap,
                                      now=when)
        quality_alert = repeat is None
        if repeat is not None:
            quality_reason += (f"; repeats the data-quality alert of {repeat.at} (same checks, "
                               f"cooldown {monitor.cooldown_minutes:g} min)")
    quality = quality.model_copy(update={"alert": quality_alert, "reason": quality_reason})
    return Decision(**level.model_dump(), quality=quality, decided_at=when.isoformat(),
                    reference_run_id=reference_run_id)


def _commit_decision(history: ModelHistory, decision: Decision, batch: LandedBatch,
                     analysis: Analysis | None, gated: GateOutcome) -> ModelHistory:
    """The model's history with the decision written in: the streak, the batch in it, the alerts it makes due.

    A due alert is recorded with ``delivered`` None (pending): it holds back
    repeats from now on, and `finish_batch` drops it if it reached none of the
    configured targets.
    """
    if decision.level in _STREAK_LEVELS:
        history = history.model_copy(update={"streak": decision.streak, "streak_batches": [] if decision.level == "none"
                                              else [*history.streak_batches, gated.accepted_path][-50:]})
    if decision.alert:
        history = history.model_copy(update={"alerts": [*history.alerts, drift.AlertRecord(
            at=decision.decided_at, level=decision.level, columns=analysis.drifted_columns if analysis else [],
            fingerprint=batch.fingerprint, delivered=None)][-100:]})
    quality = decision.quality
    if quality.alert:
        history = history.model_copy(update={"quality_alerts": [*history.quality_alerts, drift.AlertRecord(
            at=decision.decided_at, level=quality.level, columns=list(quality.checks),
            fingerprint=batch.fingerprint, delivered=None)][-100:]})
    return history
