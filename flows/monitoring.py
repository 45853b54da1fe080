"""The monitoring flow: wiring only.

One run of `monitoring_flow` looks at a batch file or a landing folder,
processes every batch it has not seen before (one `batch_flow` subflow run per
batch), and retrains when drift is detected and retraining is on. A file that
is still being written, cannot be read, or is a symbolic link is reported in
the summary (``pending``, ``unreadable``, ``refused``) and the run goes on
with the next one (`normlab.monitoring.ledger`).
"""

from __future__ import annotations

from prefect import flow

from normlab.config import PipelineConfig
from normlab.deployments import resolve_config
from normlab.errors import RetrainingError
from normlab.flows.training import training_flow
from normlab.monitoring.contracts import BatchEntry, BatchOutcome, MonitorSummary, Reference, RetrainingRecord
from normlab.monitoring.landing import image_layout
from normlab.monitoring.retraining import retrained_run
from normlab.tasks import monitoring as m
from normlab.tracking import TrackingStore


@flow(name="normlab-monitor-batch", flow_run_name="batch-{path}")
def batch_flow(config: PipelineConfig, path: str, reference: Reference, retrain: bool | None = None,
               config_hint: str = "") -> BatchOutcome:
    """Gate one batch, measure its drift, report, decide, alert, and commit it as processed."""
    store = TrackingStore(config.tracking_uri())  # one client for the batch's MLflow calls
    # 1. Fingerprint and claim the batch; one seen before, still being written, unreadable or a link is not processed
    batch = m.open_batch(config, path)
    if batch.skip:
        return BatchOutcome(entry=m.skip_batch(batch), retrain=False)
    try:
        # 2. Data gate, monitoring context: rejected rows to quarantine, never a silent stop
        gated = m.gate_batch(config, batch, reference)
        analysis = report = None
        if gated.rows_typed and not gated.missing_features:
            # 3. Data drift, prediction drift, performance when labelled (every typed row, quarantined ones too)
            analysis = m.analyze_batch(config, store, reference, gated, batch)
            # 4. Evidently report on a sample, showing the decision's verdict, added to the workspace
            report = m.build_report(config, reference, batch, analysis)
        # 5. Decision, committed under the state lock in landing order: streak, data quality, cooldowns
        decision = m.decide_batch(config, batch, reference, analysis, gated, retrain)
        # 6. One MLflow run in the monitoring experiment: metrics, reports, gate result
        monitor_run_id = m.log_monitoring_run(config, store, batch, gated, reference, analysis, report, decision)
        # 7. Alerts through Apprise (drift; data quality), and Prefect events for automations
        alert = m.send_alert(config, batch, reference, analysis, report, decision, monitor_run_id, config_hint)
        quality_alert = m.send_quality_alert(config, batch, reference, gated, decision, monitor_run_id)
        if decision.alert and config.alerts.prefect_event:
            m.emit_drift_event(reference, batch, decision, analysis, monitor_run_id)
        if decision.quality.alert and config.alerts.prefect_event:
            m.emit_quality_event(reference, batch, gated, decision, monitor_run_id)
        # 8. Commit: batch done, streak and alert histories; a Markdown summary in Prefect
        entry = m.finish_batch(config, store, batch, gated, reference, analysis, report, decision, alert, quality_alert,
                               monitor_run_id)
        m.publish_batch_summary(entry, reference)
    except BaseException:
        m.release_batch(config, batch)
        raise
    return BatchOutcome(entry=entry, retrain=decision.retrain)


@flow(name="normlab-monitor", log_prints=True)
def monitoring_flow(config: PipelineConfig | str, data: str, retrain: bool | None = None,
                    config_hint: str = "") -> MonitorSummary:
    """Monitor every new batch at ``data`` (a file or a landing folder) against the champion's training data.

    ``retrain`` overrides ``monitor.retrain_on_drift``; ``config_hint`` is the
    config argument alert messages repeat in the commands they suggest.

    Raises:
        RetrainingError: A retraining failed; every batch is recorded and the
            failure alerted before the flow run fails (its ``summary`` is the `MonitorSummary`).
    """
    config = resolve_config(config)  # a config file path: plain `prefect deploy` of deploy/prefect.yaml
    store = TrackingStore(config.tracking_uri())
    # 1. Alert URLs usable? Which batch files are there, and which are new?
    m.check_alert_urls(config)
    # A folder of image subfolders is one labelled batch when they are its model's classes: the reference says.
    reference = m.resolve_reference(config, store) if image_layout(data) == "labelled" else None
    triage = m.triage_batches(config, m.discover_batches(data, reference))
    # 2. The drift reference: the champion's training data, else the latest run's
    if reference is None and triage.new:
        reference = m.resolve_reference(config, store)
    batches: list[BatchEntry] = list(triage.skipped)
    retrained: list[RetrainingRecord] = []
    for path in triage.new:
        # 3. One subflow run per batch
        result = batch_flow(config, path, reference, retrain, config_hint)
        batches.append(result.entry)
        if result.retrain:
            # 4. Retrain on the reference plus the drifted batches' accepted rows (same gate as any run)
            data_set = m.retraining_data(config, reference)
            run, error = None, None
            if data_set.path:
                try:
                    run = training_flow(config, data_path=data_set.path)
                except Exception as exc:  # noqa: BLE001 - any failure is recorded, alerted, then fails this run
                    error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            else:
                error = "no labelled new rows to train on"
            trained = retrained_run(run) if run is not None else None
            record = m.record_retraining(config, reference, data_set, trained, error)
            if error is not None and data_set.path:
                record = record.model_copy(update={"alert": m.retraining_failed_alert(config, reference, record)})
            retrained.append(record)
            # 5. Later batches compare against whatever the retraining made the reference
            reference = m.resolve_reference(config, store)
    summary = MonitorSummary(data=data, reference=reference, batches=batches, retrained=retrained)
    failed = [r for r in retrained if r.error and r.data]
    if failed:
        raise RetrainingError(f"retraining failed after batch monitoring: {failed[0].error}", summary=summary)
    return summary
