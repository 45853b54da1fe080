"""What a processed batch leaves behind: its MLflow run, the committed state, its summary entries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from normlab.config import PipelineConfig, flatten
from normlab.monitoring.contracts import Analysis, Decision, GateOutcome, LandedBatch, Reference
from normlab.monitoring.ledger import (
    NO_ALERT,
    locked_state,
    model_history,
    monitoring_experiment,
    now_utc,
)

_LEVEL_CODE = {"none": 0, "suspected": 1, "detected": 2}
_QUALITY_CODE = {"ok": 0, "quarantined": 1, "blocked": 2}

# 8. MLflow -----------------------------------------------------------------------------


def log_monitoring_run(
    cfg: PipelineConfig,
    batch: LandedBatch,
    gated: GateOutcome,
    reference: Reference,
    analysis: Analysis | None,
    report: dict[str, Any] | None,
    decision: Decision,
) -> str:
    """One MLflow run per batch in the monitoring experiment: drift metrics, the reports, the gate's result."""
    from normlab import tracking

    uri = cfg.tracking_uri()
    tags = {
        "normlab.data.fingerprint": batch.fingerprint,
        "normlab.data.source": batch.source,
        "normlab.model": reference.model,
        "normlab.model.version": reference.version or "",
        "normlab.reference_run_id": reference.run_id,
        "normlab.drift.level": decision.level,
        "normlab.data.quality": decision.quality.level,
    }
    run_id = tracking.start_run(uri, monitoring_experiment(cfg), artifact_location=cfg.artifact_location(),
                                run_name=f"batch-{batch.fingerprint[:12]}", tags=tags)
    try:
        tracking.log_params(uri, run_id, {**flatten(cfg.monitor, "monitor."), "reference.selected_by":
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
            full = json.loads(Path(analysis.drift_json).read_text(encoding="utf-8"))
            metrics.update({
                "drift/share": analysis.drift.share,
                "drift/n_drifted": analysis.drift.n_drifted,
                "drift/n_columns": analysis.drift.n_columns,
                "prediction/class_shift": analysis.prediction["class"]["score"],
                "prediction/confidence_shift": analysis.prediction["confidence"]["score"],
                "prediction/mean_confidence": analysis.prediction["confidence"]["current_mean"],
            })
            metrics.update({f"drift/column/{c['column']}": c["score"] for c in full["columns"]})
            for key, value in (analysis.performance or {}).items():
                metrics[f"performance/{key}"] = value
            tracking.log_artifact(uri, run_id, analysis.drift_json)
        tracking.log_metrics(uri, run_id, metrics)
        tracking.log_artifact(uri, run_id, gated.report_path, "gate")
        tracking.log_dict(uri, run_id, decision.model_dump(), "decision.json")
        if report is not None:
            tracking.log_artifact(uri, run_id, report["html"], "evidently")
            tracking.log_artifact(uri, run_id, report["json"], "evidently")
    except BaseException:
        tracking.end_run(uri, run_id, "FAILED")
        raise
    tracking.end_run(uri, run_id, "FINISHED")
    return run_id


# 9. Commit -----------------------------------------------------------------------------


def finish_batch(
    cfg: PipelineConfig,
    batch: LandedBatch,
    gated: GateOutcome,
    reference: Reference,
    analysis: Analysis | None,
    report: dict[str, Any] | None,
    decision: Decision,
    alert: dict[str, Any],
    quality_alert: dict[str, Any],
    monitor_run_id: str,
) -> dict[str, Any]:
    """Mark the batch done and settle its alerts in the model's history, in one atomic write.

    The streak and the alerts it made due were committed with the decision
    (`decide_batch`); here a pending alert is kept (with how many targets it
    reached) when it was sent or when no target is configured (it still
    starts the cooldown and gates retraining), and dropped when it failed to
    reach any configured target.

    Returns:
        The batch's entry in the monitor summary.
    """
    from normlab import tracking

    # The store first: a commit that follows it cannot be left half done by an unreachable server.
    tracking.set_tags(cfg.tracking_uri(), monitor_run_id, {
        "normlab.alert.sent": alert["sent"], "normlab.alert.delivered": alert["delivered"],
        "normlab.quality_alert.sent": quality_alert["sent"],
    })
    entry = batch_entry(batch, gated, analysis, report, decision, alert, monitor_run_id, quality_alert)
    with locked_state(cfg) as state:
        if state["batches"].get(batch.fingerprint, {}).get("status") == "done":
            return state["batches"][batch.fingerprint]["entry"]  # a retried commit counts the batch once
        history = model_history(state, reference)
        if decision.alert:
            _settle_alert(history, "alerts", batch.fingerprint, alert)
        if decision.quality.alert:
            _settle_alert(history, "quality_alerts", batch.fingerprint, quality_alert)
        state["models"][reference.model] = history
        state["batches"][batch.fingerprint] = {
            "status": "done", "source": batch.source, "processed_at": now_utc().isoformat(),
            "monitor_run_id": monitor_run_id, "reference_run_id": reference.run_id, "entry": entry,
        }
    return entry


def _settle_alert(history: dict[str, Any], kind: str, fingerprint: str, alert: dict[str, Any]) -> None:
    """Keep the batch's pending alert of ``kind`` with its delivery count, or drop it when no configured target got it."""
    kept = []
    for past in history.get(kind, []):
        if past["fingerprint"] == fingerprint and past.get("delivered") is None:
            if not (alert["sent"] or alert["targets"] == 0):
                continue
            past = {**past, "delivered": alert["delivered"]}
        kept.append(past)
    history[kind] = kept


def batch_entry(
    batch: LandedBatch,
    gated: GateOutcome,
    analysis: Analysis | None,
    report: dict[str, Any] | None,
    decision: Decision,
    alert: dict[str, Any],
    monitor_run_id: str,
    quality_alert: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One batch in the summary JSON."""
    entry: dict[str, Any] = {
        "fingerprint": batch.fingerprint,
        "source": batch.source,
        "status": "processed",
        "rows_in": gated.rows_in,
        "rows_accepted": gated.rows_accepted,
        "rows_quarantined": gated.rows_quarantined,
        "rows_typed": gated.rows_typed,
        "rows_untyped": gated.rows_untyped,
        "quarantine_path": gated.quarantine_path,
        "gate_report": gated.report_path,
        "quality": {**decision.quality.model_dump(),
                    "alert_sent": bool((quality_alert or {}).get("sent")),
                    "alert_reason": (quality_alert or {}).get("reason")},
        "drift": {"level": decision.level, "reason": decision.reason, "streak": decision.streak,
                  "share": None, "n_drifted": None, "n_columns": None, "columns": []},
        "prediction": None,
        "performance": None,
        "alert": {k: alert[k] for k in ("due", "sent", "targets", "delivered", "reason") if k in alert},
        "quality_alert": {k: v for k, v in (quality_alert or NO_ALERT).items()
                          if k in ("due", "sent", "targets", "delivered", "reason")},
        "report": {k: report[k] for k in ("html", "json", "snapshot_id")} if report else None,
        "monitor_run_id": monitor_run_id,
        "change": batch.change,
    }
    if analysis is not None:
        entry["drift"].update(analysis.drift.model_dump(include={"share", "n_drifted", "n_columns", "columns"}))
        pred = analysis.prediction
        entry["prediction"] = {"drifted": pred["drifted"], "class_shift": pred["class"]["score"],
                               "confidence_shift": pred["confidence"]["score"]}
        entry["performance"] = analysis.performance
    return entry

def batch_markdown(entry: dict[str, Any], reference: Reference) -> str:
    """A short Markdown summary of one batch (the Prefect artifact)."""
    d = entry["drift"]
    which = f"{reference.model} v{reference.version}" if reference.version else reference.model
    lines = [
        f"### Batch `{entry['fingerprint'][:12]}`: drift **{d['level']}**",
        "",
        f"- source: `{entry['source']}`" + (f" ({entry['change']})" if entry.get("change") else ""),
        f"- model: {which} (reference run `{reference.run_id}`)",
        (f"- rows: {entry['rows_in']} in, {entry['rows_accepted']} accepted, {entry['rows_quarantined']} "
         f"quarantined, {entry['rows_untyped']} unreadable (left out of the drift)"),
        f"- data quality: **{entry['quality']['level']}** ({entry['quality']['reason']})",
        f"- decision: {d['reason']}",
    ]
    if d["share"] is not None:
        lines.append(f"- drifted columns: {d['n_drifted']} of {d['n_columns']} (share {d['share']:.2f})")
        lines += ["", "| column | test | score | p-value | drifted |", "|---|---|---|---|---|"]
        lines += [f"| {c['column']} | {c['test']} | {c['score']:.3f} | {c['p_value']:.2g} | {c['drifted']} |"
                  for c in d["columns"]]
    if entry.get("performance"):
        lines.append(f"\n- accuracy on the batch: {entry['performance']['accuracy']:.3f}")
    alert = entry["alert"]
    lines.append(f"- alert: {'sent' if alert['sent'] else 'not sent'}"
                 + (f" ({alert['reason']})" if alert.get("reason") else ""))
    if entry.get("report"):
        lines.append(f"- report: `{entry['report']['html']}`")
    return "\n".join(lines)
