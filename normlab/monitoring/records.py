"""What a processed batch leaves behind: its MLflow run, the committed state, its summary entries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from normlab import tracking
from normlab.config import MonitorConfig, flatten
from normlab.monitoring.contracts import (
    NO_ALERT,
    AlertOutcome,
    Analysis,
    BatchEntry,
    Decision,
    DriftRecord,
    EntryDrift,
    EntryPrediction,
    EntryQuality,
    EntryReport,
    EvidentlyReport,
    GateOutcome,
    LandedBatch,
    Reference,
)
from normlab.monitoring.ledger import locked_state, model_history, now_utc
from normlab.monitoring.state import BatchRecord, ModelHistory
from normlab.tracking import TrackingStore

_LEVEL_CODE = {"none": 0, "suspected": 1, "detected": 2}
_QUALITY_CODE = {"ok": 0, "quarantined": 1, "blocked": 2}

# 8. MLflow -----------------------------------------------------------------------------


def log_monitoring_run(
    monitor: MonitorConfig,
    batch: LandedBatch,
    gated: GateOutcome,
    reference: Reference,
    analysis: Analysis | None,
    report: EvidentlyReport | None,
    decision: Decision,
    *,
    store: TrackingStore,
    experiment: str,
    artifact_location: str | None,
) -> str:
    """One MLflow run per batch in the monitoring experiment: drift metrics, the reports, the gate's result.

    The run goes to ``experiment`` (`normlab.monitoring.ledger.monitoring_experiment`) in ``store``,
    created with ``artifact_location`` when missing (`PipelineConfig.artifact_location`);
    its params are ``monitor``'s settings.
    """
    tags = {
        "normlab.data.fingerprint": batch.fingerprint,
        "normlab.data.source": batch.source,
        "normlab.model": reference.model,
        "normlab.model.version": reference.version or "",
        "normlab.reference_run_id": reference.run_id,
        "normlab.drift.level": decision.level,
        "normlab.data.quality": decision.quality.level,
    }
    run_id = tracking.start_run(store, experiment, artifact_location=artifact_location,
                                run_name=f"batch-{batch.fingerprint[:12]}", tags=tags)
    try:
        tracking.log_params(store, run_id, {**flatten(monitor, "monitor."), "reference.selected_by":
                                          reference.selected_by, "data.fingerprint": batch.fingerprint})
        metrics: dict[str, float] = {
            "rows/in": gated.rows_in, "rows/accepted": gated.rows_accepted,
            "rows/quarantined": gated.rows_quarantined, "rows/typed": gated.rows_typed,
            "rows/untyped": gated.rows_untyped, "drift/streak": decision.streak,
            "quality/level": _QUALITY_CODE[decision.quality.level],
            "quality/quarantined_share": decision.quality.share,
        }
        if decision.level in _LEVEL_CODE:
            metrics["drift/level"] = _LEVEL_CODE[decision.level]
        if analysis is not None:
            full = DriftRecord.model_validate(json.loads(Path(analysis.drift_json).read_text(encoding="utf-8")))
            metrics.update({
                "drift/share": analysis.drift.share,
                "drift/n_drifted": analysis.drift.n_drifted,
                "drift/n_columns": analysis.drift.n_columns,
                "prediction/class_shift": analysis.prediction.class_.score,
                "prediction/confidence_shift": analysis.prediction.confidence.score,
                "prediction/mean_confidence": analysis.prediction.confidence.current_mean,
            })
            metrics.update({f"drift/column/{c.column}": c.score for c in full.columns})
            if analysis.performance is not None:
                for key, value in analysis.performance.model_dump(exclude_none=True).items():
                    metrics[f"performance/{key}"] = value
            tracking.log_artifact(store, run_id, analysis.drift_json)
        tracking.log_metrics(store, run_id, metrics)
        tracking.log_artifact(store, run_id, gated.report_path, "gate")
        tracking.log_dict(store, run_id, decision.model_dump(), "decision.json")
        if report is not None:
            tracking.log_artifact(store, run_id, report.html, "evidently")
            tracking.log_artifact(store, run_id, report.json_, "evidently")
    except BaseException:
        tracking.end_run(store, run_id, "FAILED")
        raise
    tracking.end_run(store, run_id, "FINISHED")
    return run_id


# 9. Commit -----------------------------------------------------------------------------


def finish_batch(
    store: TrackingStore,
    workdir: Path,
    batch: LandedBatch,
    gated: GateOutcome,
    reference: Reference,
    analysis: Analysis | None,
    report: EvidentlyReport | None,
    decision: Decision,
    alert: AlertOutcome,
    quality_alert: AlertOutcome,
    monitor_run_id: str,
) -> BatchEntry:
    """Mark the batch done and settle its alerts in the model's history, in one atomic write.

    The monitoring run's tags go to ``store`` first, then
    the state of ``workdir`` is committed.

    The streak and the alerts it made due were committed with the decision
    (`decide_batch`); here a pending alert is kept (with how many targets it
    reached) when it was sent or when no target is configured (it still
    starts the cooldown and gates retraining), and dropped when it failed to
    reach any configured target.

    Returns:
        The batch's entry in the monitor summary.
    """
    # The store first: a commit that follows it cannot be left half done by an unreachable server.
    tracking.set_tags(store, monitor_run_id, {
        "normlab.alert.sent": alert.sent, "normlab.alert.delivered": alert.delivered,
        "normlab.quality_alert.sent": quality_alert.sent,
    })
    entry = batch_entry(batch, gated, analysis, report, decision, alert, monitor_run_id, quality_alert)
    with locked_state(workdir) as state:
        done = state.batches.get(batch.fingerprint)
        if done is not None and done.status == "done" and done.entry is not None:
            return done.entry  # a retried commit counts the batch once
        history = model_history(state, reference)
        if decision.alert:
            history = _settle_alert(history, "alerts", batch.fingerprint, alert)
        if decision.quality.alert:
            history = _settle_alert(history, "quality_alerts", batch.fingerprint, quality_alert)
        state.models[reference.model] = history
        state.batches[batch.fingerprint] = BatchRecord(
            status="done", source=batch.source, processed_at=now_utc().isoformat(),
            monitor_run_id=monitor_run_id, reference_run_id=reference.run_id, entry=entry,
        )
    return entry


def _settle_alert(history: ModelHistory, kind: Literal["alerts", "quality_alerts"], fingerprint: str,
                  alert: AlertOutcome) -> ModelHistory:
    """Keep the batch's pending alert of ``kind`` with its delivery count, or drop it when no configured target got it."""
    kept = []
    for past in getattr(history, kind):
        if past.fingerprint == fingerprint and past.delivered is None:
            if not (alert.sent or alert.targets == 0):
                continue
            past = past.model_copy(update={"delivered": alert.delivered})
        kept.append(past)
    return history.model_copy(update={kind: kept})


def batch_entry(
    batch: LandedBatch,
    gated: GateOutcome,
    analysis: Analysis | None,
    report: EvidentlyReport | None,
    decision: Decision,
    alert: AlertOutcome,
    monitor_run_id: str,
    quality_alert: AlertOutcome | None = None,
) -> BatchEntry:
    """One batch in the summary."""
    drift, pred = (analysis.drift, analysis.prediction) if analysis is not None else (None, None)
    return BatchEntry(
        fingerprint=batch.fingerprint,
        source=batch.source,
        status="processed",
        rows_in=gated.rows_in,
        rows_accepted=gated.rows_accepted,
        rows_quarantined=gated.rows_quarantined,
        rows_typed=gated.rows_typed,
        rows_untyped=gated.rows_untyped,
        quarantine_path=gated.quarantine_path,
        gate_report=gated.report_path,
        quality=EntryQuality(**decision.quality.model_dump(),
                             alert_sent=bool(quality_alert is not None and quality_alert.sent),
                             alert_reason=quality_alert.reason if quality_alert is not None else None),
        drift=EntryDrift(level=decision.level, reason=decision.reason, streak=decision.streak,
                         share=drift.share if drift else None, n_drifted=drift.n_drifted if drift else None,
                         n_columns=drift.n_columns if drift else None, columns=drift.columns if drift else []),
        prediction=EntryPrediction(drifted=pred.drifted, class_shift=pred.class_.score,
                                   confidence_shift=pred.confidence.score) if pred is not None else None,
        performance=analysis.performance if analysis is not None else None,
        alert=alert.in_entry(),
        quality_alert=(quality_alert or NO_ALERT).in_entry(),
        report=EntryReport(html=report.html, json_=report.json_, snapshot_id=report.snapshot_id) if report else None,
        monitor_run_id=monitor_run_id,
        change=batch.change,
    )


def batch_markdown(entry: BatchEntry, reference: Reference) -> str:
    """A short Markdown summary of one processed batch (the Prefect artifact)."""
    d, quality = entry.drift, entry.quality
    which = f"{reference.model} v{reference.version}" if reference.version else reference.model
    lines = [
        f"### Batch `{entry.fingerprint[:12]}`: drift **{d.level}**",
        "",
        f"- source: `{entry.source}`" + (f" ({entry.change})" if entry.change else ""),
        f"- model: {which} (reference run `{reference.run_id}`)",
        (f"- rows: {entry.rows_in} in, {entry.rows_accepted} accepted, {entry.rows_quarantined} "
         f"quarantined, {entry.rows_untyped} unreadable (left out of the drift)"),
        f"- data quality: **{quality.level}** ({quality.reason})",
        f"- decision: {d.reason}",
    ]
    if d.share is not None:
        lines.append(f"- drifted columns: {d.n_drifted} of {d.n_columns} (share {d.share:.2f})")
        lines += ["", "| column | test | score | p-value | drifted |", "|---|---|---|---|---|"]
        lines += [f"| {c.column} | {c.test} | {c.score:.3f} | {c.p_value:.2g} | {c.drifted} |" for c in d.columns]
    if entry.performance:
        lines.append(f"\n- accuracy on the batch: {entry.performance.accuracy:.3f}")
    alert = entry.alert
    lines.append(f"- alert: {'sent' if alert.sent else 'not sent'}" + (f" ({alert.reason})" if alert.reason else ""))
    if entry.report:
        lines.append(f"- report: `{entry.report.html}`")
    return "\n".join(lines)
