"""Thin Prefect tasks of drift monitoring: policy in the decorator, one library call in the body.

The tasks hold the `PipelineConfig`; each library call gets the sections it
reads (``cfg.monitor``, ``cfg.alerts``, ...) and the values derived from the
whole config: the work folder, the store URI's redacted form (for messages),
the registered model's name. The tasks that talk to MLflow get the flow's
`TrackingStore`.

No task caches: a batch is processed exactly once through the monitoring
state on disk, not through Prefect's result cache.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from normlab import alerts, monitoring
from normlab.config import PipelineConfig
from normlab.gate.scope import GateScope
from normlab.monitoring.contracts import (
    AlertOutcome,
    Analysis,
    BatchEntry,
    Decision,
    EvidentlyReport,
    GateOutcome,
    LandedBatch,
    Reference,
    RetrainedRun,
    RetrainingData,
    RetrainingRecord,
    Triage,
)
from normlab.registry import registry_name
from normlab.tasks.policy import LOCAL, TRANSIENT
from normlab.tracking import TrackingStore


@task(name="check-alert-urls", **LOCAL)
def check_alert_urls(cfg: PipelineConfig) -> int:
    """Fail early on an alert URL Apprise cannot use; returns how many targets are configured."""
    urls = alerts.alert_urls(cfg.alerts)
    alerts.check_urls(urls)
    return len(urls)


@task(name="discover-batches", **LOCAL)
def discover_batches(data: str, reference: Reference | None = None) -> list[str]:
    """The batch file or image folder, or a landing folder's batches, oldest first.

    With a ``reference``, a folder whose image subfolders are all its model's classes is one labelled batch.
    """
    classes = monitoring.reference_classes(reference) if reference is not None else None
    paths = monitoring.discover_batches(data, classes)
    get_run_logger().info("%d batch file(s) at %s", len(paths), data)
    return paths


@task(name="resolve-reference", **TRANSIENT)
def resolve_reference(cfg: PipelineConfig, store: TrackingStore) -> Reference:
    """The champion's (else the latest run's) training data, model and encoders."""
    reference = monitoring.resolve_reference(store, experiment=cfg.tracking.experiment,
                                             model=registry_name(cfg), workdir=cfg.workdir_path())
    get_run_logger().info("reference: %s (%s) from run %s", reference.model,
                          f"v{reference.version}" if reference.version else reference.selected_by,
                          reference.run_id)
    return reference


@task(name="triage-batches", **LOCAL)
def triage_batches(cfg: PipelineConfig, paths: list[str]) -> Triage:
    """Files processed before, or recorded as unreadable or refused (same size and time), are not read again."""
    triage = monitoring.triage_batches(cfg.workdir_path(), paths)
    if triage.skipped:
        get_run_logger().info("%d file(s) known (processed, unreadable or refused), %d to open",
                              len(triage.skipped), len(triage.new))
    return triage


@task(name="open-batch", **LOCAL)
def open_batch(cfg: PipelineConfig, path: str) -> LandedBatch:
    """Fingerprint and claim the batch, or say why it is not processed now (seen, pending, unreadable, refused)."""
    opened = monitoring.open_landed_batch(cfg.workdir_path(), registry_name(cfg), path, cfg.data)
    if opened.status in ("unreadable", "refused"):
        get_run_logger().warning("%s %s: %s", opened.status, path, opened.reason)
    elif opened.skip:
        get_run_logger().info("%s %s: %s", opened.status, path, opened.reason)
    return opened


@task(name="skip-batch", **LOCAL)
def skip_batch(opened: LandedBatch) -> BatchEntry:
    """The summary entry of a file not processed this time (seen before, pending, unreadable, refused)."""
    return monitoring.skipped_entry(opened)


@task(name="gate-batch", **LOCAL)
def gate_batch(cfg: PipelineConfig, batch: LandedBatch, reference: Reference) -> GateOutcome:
    """The data gate in its monitoring context: rejected rows to quarantine, every typed row on to the drift."""
    gated = monitoring.gate_batch(GateScope.from_config(cfg), batch, batch.batch_dir, reference)
    get_run_logger().info("gate: %d in, %d accepted, %d quarantined, %d unreadable%s", gated.rows_in,
                          gated.rows_accepted, gated.rows_quarantined, gated.rows_untyped,
                          " (blocked)" if gated.blocked else "")
    return gated


@task(name="analyze-drift", **LOCAL)
def analyze_batch(cfg: PipelineConfig, store: TrackingStore, reference: Reference, gated: GateOutcome,
                  batch: LandedBatch) -> Analysis:
    """Data drift, prediction drift and performance of the accepted rows."""
    analysis = monitoring.analyze_batch(cfg.monitor, cfg.eval, cfg.data, cfg.seed, store,
                                        reference, gated, batch)
    get_run_logger().info("drift: %d of %d columns (share %.2f), prediction drift %s",
                          analysis.drift.n_drifted, analysis.drift.n_columns,
                          analysis.drift.share, analysis.prediction.drifted)
    return analysis


@task(name="evidently-report", **LOCAL)
def build_report(cfg: PipelineConfig, reference: Reference, batch: LandedBatch,
                 analysis: Analysis) -> EvidentlyReport:
    """The Evidently report on sampled rows, saved and added to the workspace."""
    report = monitoring.build_report(cfg.monitor, monitoring.workspace_dir(cfg.monitor, cfg.workdir_path()),
                                     reference, batch, analysis)
    get_run_logger().info("report: %s (%.1fs)", report.html, report.seconds)
    return report


@task(name="decide", **LOCAL)
def decide_batch(cfg: PipelineConfig, batch: LandedBatch, reference: Reference,
                 analysis: Analysis | None, gated: GateOutcome, retrain: bool | None) -> Decision:
    """Drift and data-quality levels, which alerts are due (cooldown, de-duplication), committed in landing order."""
    decision = monitoring.decide_batch(cfg.monitor, cfg.alerts, cfg.workdir_path(), batch, reference, analysis, gated)
    decision = decision.model_copy(update={"retrain": monitoring.wants_retraining(cfg.monitor, decision, retrain)})
    get_run_logger().info("decision: %s; data quality: %s", decision.reason, decision.quality.reason)
    return decision


@task(name="log-monitoring-run", **TRANSIENT)
def log_monitoring_run(cfg: PipelineConfig, store: TrackingStore, batch: LandedBatch, gated: GateOutcome,
                       reference: Reference, analysis: Analysis | None,
                       report: EvidentlyReport | None, decision: Decision) -> str:
    """One MLflow run per batch with drift metrics and the reports."""
    return monitoring.log_monitoring_run(
        cfg.monitor, batch, gated, reference, analysis, report, decision, store=store,
        experiment=monitoring.monitoring_experiment(cfg.monitor, cfg.tracking),
        artifact_location=cfg.artifact_location(),
    )


# Apprise retries per service itself; a failed delivery is reported, never raised.
@task(name="send-alert", **LOCAL)
def send_alert(cfg: PipelineConfig, batch: LandedBatch, reference: Reference,
               analysis: Analysis | None, report: EvidentlyReport | None, decision: Decision,
               monitor_run_id: str, config_hint: str) -> AlertOutcome:
    """Send the drift alert when the decision calls for one."""
    alert = monitoring.alert_batch(cfg.alerts, cfg.redacted().tracking_uri(), batch, reference, analysis, report,
                                   decision, monitor_run_id,
                                   retrain=decision.retrain, config_hint=config_hint)
    if decision.alert:
        get_run_logger().info("alert: %s to %d of %d target(s)", "sent" if alert.sent else "NOT sent",
                              alert.delivered, alert.targets)
    return alert


@task(name="send-quality-alert", **LOCAL)
def send_quality_alert(cfg: PipelineConfig, batch: LandedBatch, reference: Reference,
                       gated: GateOutcome, decision: Decision, monitor_run_id: str) -> AlertOutcome:
    """Send the data-quality alert when the batch was blocked or lost too many rows to quarantine."""
    alert = monitoring.quality_alert_batch(cfg.alerts, cfg.redacted().tracking_uri(), batch, reference, gated,
                                           decision, monitor_run_id)
    if alert.due:
        get_run_logger().warning("data-quality alert (%s): %s to %d of %d target(s)", decision.quality.level,
                                 "sent" if alert.sent else "NOT sent", alert.delivered, alert.targets)
    return alert


@task(name="emit-quality-event", **LOCAL)
def emit_quality_event(reference: Reference, batch: LandedBatch, gated: GateOutcome,
                       decision: Decision, monitor_run_id: str) -> str | None:
    """Emit ``normlab.data.<level>`` (``blocked`` or ``quarantined``) about the model."""
    quality = decision.quality
    event = emit_event(
        event=f"normlab.data.{quality.level}",
        resource=_model_resource(reference),
        related=[{"prefect.resource.id": f"normlab.batch.{batch.fingerprint}", "prefect.resource.role": "batch"}],
        payload={"fingerprint": batch.fingerprint, "source": batch.source, "level": quality.level,
                 "checks": quality.checks[:20], "columns": quality.columns, "rows_in": gated.rows_in,
                 "rows_quarantined": gated.rows_quarantined, "quarantine_path": gated.quarantine_path,
                 "drift_level": decision.level, "monitor_run_id": monitor_run_id},
    )
    return str(event.id) if event is not None else None


def _model_resource(reference: Reference) -> dict[str, str]:
    return {"prefect.resource.id": f"normlab.model.{reference.model}",
            "prefect.resource.name": reference.model,
            "normlab.model.version": reference.version or "",
            "normlab.reference_run_id": reference.run_id}


@task(name="emit-drift-event", **LOCAL)
def emit_drift_event(reference: Reference, batch: LandedBatch, decision: Decision,
                     analysis: Analysis, monitor_run_id: str) -> str | None:
    """Emit ``normlab.drift.<level>`` about the model, so Prefect automations can react."""
    event = emit_event(
        event=f"normlab.drift.{decision.level}",
        resource=_model_resource(reference),
        related=[{"prefect.resource.id": f"normlab.batch.{batch.fingerprint}", "prefect.resource.role": "batch"}],
        payload={"fingerprint": batch.fingerprint, "source": batch.source, "level": decision.level,
                 "share": analysis.drift.share, "columns": analysis.drifted_columns[:20],
                 "monitor_run_id": monitor_run_id},
    )
    return str(event.id) if event is not None else None


@task(name="finish-batch", **TRANSIENT)
def finish_batch(cfg: PipelineConfig, store: TrackingStore, batch: LandedBatch, gated: GateOutcome,
                 reference: Reference, analysis: Analysis | None, report: EvidentlyReport | None,
                 decision: Decision, alert: AlertOutcome, quality_alert: AlertOutcome,
                 monitor_run_id: str) -> BatchEntry:
    """Mark the batch done; settle its alerts in the model's history (the streak was committed by the decision)."""
    return monitoring.finish_batch(store, cfg.workdir_path(), batch, gated, reference, analysis, report,
                                   decision, alert, quality_alert, monitor_run_id)


@task(name="batch-artifact", **LOCAL)
def publish_batch_summary(entry: BatchEntry, reference: Reference) -> None:
    """A Markdown artifact that summarises the batch in the Prefect UI."""
    create_markdown_artifact(markdown=monitoring.batch_markdown(entry, reference),
                             key=f"drift-{entry.fingerprint[:16]}",
                             description=f"drift {entry.drift.level} for {reference.model}")


@task(name="release-batch", **LOCAL)
def release_batch(cfg: PipelineConfig, batch: LandedBatch) -> None:
    """Give up the claim on a batch that failed, so the next run retries it."""
    monitoring.release_batch(cfg.workdir_path(), batch)


@task(name="retraining-data", **LOCAL)
def retraining_data(cfg: PipelineConfig, reference: Reference) -> RetrainingData:
    """Reference rows plus the drifted batches' accepted, labelled rows, as one file."""
    data = monitoring.retraining_data(cfg.data, cfg.workdir_path(), reference)
    get_run_logger().info("retraining data: %d reference + %d new rows (%d unlabelled batch(es) left out)",
                          data.rows_reference, data.rows_new, data.batches_unlabelled)
    return data


@task(name="retraining-failed-alert", **LOCAL)
def retraining_failed_alert(cfg: PipelineConfig, reference: Reference, retrained: RetrainingRecord) -> AlertOutcome:
    """Alert that the retraining failed (the batches stay recorded)."""
    alert = monitoring.retraining_failed_alert(cfg.alerts, cfg.redacted().tracking_uri(), reference, retrained)
    get_run_logger().error("retraining failed: %s; alert %s to %d of %d target(s)", retrained.error,
                           "sent" if alert.sent else "NOT sent", alert.delivered, alert.targets)
    return alert


@task(name="record-retraining", **LOCAL)
def record_retraining(cfg: PipelineConfig, reference: Reference, data: RetrainingData,
                      result: RetrainedRun | None, error: str | None) -> RetrainingRecord:
    """Note the retraining in the model's history."""
    return monitoring.record_retraining(cfg.workdir_path(), reference, data, result, error)
