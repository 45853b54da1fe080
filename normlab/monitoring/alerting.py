"""The alerts a batch can raise: drift, data quality, a failed retraining; and whether to retrain."""

from __future__ import annotations

from normlab.config import AlertsConfig, MonitorConfig
from normlab.monitoring.contracts import (
    NO_ALERT,
    AlertOutcome,
    Analysis,
    Decision,
    EvidentlyReport,
    GateOutcome,
    LandedBatch,
    Reference,
    RetrainingRecord,
)

# 10. Alerts ----------------------------------------------------------------------------


def alert_batch(
    alerts: AlertsConfig,
    public_uri: str,
    batch: LandedBatch,
    reference: Reference,
    analysis: Analysis | None,
    report: EvidentlyReport | None,
    decision: Decision,
    monitor_run_id: str,
    retrain: bool,
    config_hint: str = "",
) -> AlertOutcome:
    """Send the drift alert when the decision calls for one.

    It goes to ``alerts``'s targets (`normlab.alerts.alert_urls`) and names
    the store as ``public_uri``, its redacted form (``PipelineConfig.redacted().tracking_uri()``).

    Returns:
        The `AlertOutcome`: ``sent``, ``targets``, ``delivered`` and, when nothing was sent, ``reason``.
    """
    from normlab.alerts import alert_urls, drift_message, send

    if not decision.alert or analysis is None:
        return NO_ALERT.model_copy(update={"reason": decision.reason})
    title, body = drift_message(
        model=reference.model, version=reference.version, reference_run_id=reference.run_id,
        fingerprint=batch.fingerprint, source=batch.source, level=decision.level,
        drift=analysis.drift, prediction=analysis.prediction, performance=analysis.performance,
        rows=analysis.rows, report_html=report.html if report else None, monitor_run_id=monitor_run_id,
        tracking_uri=public_uri, retrain=retrain, config_hint=config_hint,
    )
    return AlertOutcome.of(send(alert_urls(alerts), title, body))


def quality_alert_batch(
    alerts: AlertsConfig,
    public_uri: str,
    batch: LandedBatch,
    reference: Reference,
    gated: GateOutcome,
    decision: Decision,
    monitor_run_id: str,
) -> AlertOutcome:
    """Send the data-quality alert (a blocked batch, or too many rows quarantined) when one is due.

    Targets and ``public_uri`` as in `alert_batch`.
    """
    from normlab.alerts import alert_urls, quality_message, send

    quality = decision.quality
    if not quality.alert:
        return NO_ALERT.model_copy(update={"reason": quality.reason})
    title, body = quality_message(
        model=reference.model, version=reference.version, fingerprint=batch.fingerprint,
        source=batch.source, quality=quality, drift_level=decision.level, rows_in=gated.rows_in,
        rows_quarantined=gated.rows_quarantined, rows_untyped=gated.rows_untyped, failed=gated.failed,
        quarantine_path=gated.quarantine_path, monitor_run_id=monitor_run_id,
        tracking_uri=public_uri,
    )
    return AlertOutcome.of(send(alert_urls(alerts), title, body))


def retraining_failed_alert(alerts: AlertsConfig, public_uri: str, reference: Reference,
                            retrained: RetrainingRecord) -> AlertOutcome:
    """Tell the alert targets that a retraining started by monitoring failed.

    Targets and ``public_uri`` as in `alert_batch`.
    """
    from normlab.alerts import alert_urls, retraining_failed_message, send

    title, body = retraining_failed_message(
        model=reference.model, version=reference.version, error=retrained.error or "unknown error",
        data=retrained.data, rows_reference=retrained.rows_reference, rows_new=retrained.rows_new,
        tracking_uri=public_uri,
    )
    return AlertOutcome.of(send(alert_urls(alerts), title, body))


def wants_retraining(monitor: MonitorConfig, decision: Decision, retrain: bool | None) -> bool:
    """Retrain on a new (not held back) `detected` drift when ``monitor.retrain_on_drift`` or the caller enables it."""
    enabled = monitor.retrain_on_drift if retrain is None else retrain
    return bool(enabled and decision.level == "detected" and decision.alert)
