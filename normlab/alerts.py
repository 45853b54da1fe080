"""Drift alerts through Apprise (Slack, e-mail, webhooks, ... from one URL each).

Alert URLs are secrets: a webhook URL is all it takes to post into a channel.
They come from ``alerts.urls`` (a pydantic ``SecretStr``, masked wherever the
config is dumped: MLflow params, ``config.yaml``, Prefect parameters) and from
the ``NORMLAB_ALERT_URLS`` environment variable. They never reach a log line:
Apprise's own logger (which prints hosts and paths) is silenced while sending,
and results name services by type only.

`send` returns a `Delivery`; the messages read the monitoring stages' typed
results (`normlab.monitoring.contracts`, `normlab.drift`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from normlab.config import AlertsConfig
from normlab.errors import ConfigError

if TYPE_CHECKING:  # the monitoring stages send alerts through this module: their types are only named here
    from normlab.drift import PredictionDrift
    from normlab.monitoring.contracts import DriftSummary, Performance, Quality

ENV_VAR = "NORMLAB_ALERT_URLS"
# What a SecretStr becomes when a config is dumped; a config read back from a
# logged config.yaml carries this instead of the URL.
_MASKED = "**********"
_SPLIT = re.compile(r"[\s,]+")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


class ServiceResult(BaseModel):
    """One target's outcome: its service type (never its URL) and whether it took the notification."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str
    ok: bool


class Delivery(BaseModel):
    """What `send` did: ``sent`` (every target accepted it), ``targets``, ``delivered``, ``services``.

    ``reason`` says why not every target got it (set only then).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sent: bool
    targets: int
    delivered: int
    services: list[ServiceResult]
    reason: str | None = None


def alert_urls(alerts: AlertsConfig, environ: dict[str, str] | None = None) -> list[str]:
    """The configured Apprise URLs: ``alerts.urls`` then ``NORMLAB_ALERT_URLS`` (comma or space separated)."""
    env = os.environ if environ is None else environ
    urls = [u.get_secret_value().strip() for u in alerts.urls]
    urls += [u for u in _SPLIT.split(env.get(ENV_VAR, "")) if u]
    return [u for u in dict.fromkeys(urls) if u and u != _MASKED]


def redact(text: str) -> str:
    """Replace anything that looks like a URL with its scheme only (``json://***``)."""
    return _URL.sub(lambda m: m.group(0).split("://", 1)[0] + "://***", text)


def check_urls(urls: Sequence[str]) -> None:
    """Raise `ConfigError` (without the URL) for a URL Apprise does not understand."""
    import apprise

    with _quiet_apprise():
        for i, url in enumerate(urls, 1):
            if apprise.Apprise.instantiate(url) is None:
                scheme = url.split("://", 1)[0] if "://" in url else "?"
                raise ConfigError(
                    f"alert URL #{i} (scheme '{scheme}://') is not a valid Apprise URL; "
                    "see https://github.com/caronc/apprise/wiki for the URL of each service"
                )


def drift_message(
    *,
    model: str,
    version: str | None,
    reference_run_id: str,
    fingerprint: str,
    source: str,
    level: str,
    drift: DriftSummary,
    prediction: PredictionDrift | None,
    performance: Performance | None,
    rows: int,
    report_html: str | None,
    monitor_run_id: str | None,
    tracking_uri: str,
    retrain: bool,
    config_hint: str,
) -> tuple[str, str]:
    """The alert's title and Markdown body: what drifted, where, which model, where the report is, what next.

    Args:
        model: Registered model name.
        version: Model version behind the champion alias, or None (latest run, no registry).
        reference_run_id: The training run whose data is the reference.
        fingerprint: The batch's content fingerprint.
        source: The batch file.
        level: `suspected` or `detected`.
        drift: The batch's data drift (share, top columns...).
        prediction: `normlab.drift.prediction_drift`'s result, or None.
        performance: Accuracy on the batch when it had labels, or None.
        rows: Accepted rows the decision used.
        report_html: Local path of the Evidently HTML report.
        monitor_run_id: The MLflow run that holds the report.
        tracking_uri: The MLflow store.
        retrain: Whether retraining was started.
        config_hint: The config argument to repeat in suggested commands.

    Returns:
        (title, body).
    """
    which = f"{model} v{version}" if version else f"{model} (run {reference_run_id[:12]})"
    title = f"normlab: drift {level} for {which}: {drift.n_drifted}/{drift.n_columns} columns"
    lines = [
        f"**Drift {level}** on batch `{fingerprint[:12]}` ({rows} rows accepted) from `{source}`.",
        f"Model: **{which}**; reference: training data of run `{reference_run_id}`.",
        "",
        f"Drifted columns: {drift.n_drifted} of {drift.n_columns} (share {drift.share:.2f}). Top columns:",
    ]
    for col in drift.columns:
        mark = "drifted" if col.drifted else "below threshold"
        lines.append(f"- `{col.column}`: {col.test} score {col.score:.3f}, p={col.p_value:.2g} ({mark})")
    if prediction is not None:
        cls, conf = prediction.class_, prediction.confidence
        lines.append(
            f"Predictions: class distribution shift {cls.score:.3f} (p={cls.p_value:.2g}); mean confidence "
            f"{conf.reference_mean:.3f} -> {conf.current_mean:.3f}."
        )
    if performance is not None:
        reference = performance.reference_accuracy
        lines.append(
            f"Accuracy on this labelled batch: {performance.accuracy:.3f} "
            f"(reference test accuracy {float('nan') if reference is None else reference:.3f})."
        )
    lines += ["", "Report:"]
    if report_html:
        lines.append(f"- Evidently HTML: {report_html}")
    if monitor_run_id:
        lines.append(f"- MLflow run `{monitor_run_id}` in {tracking_uri} (artifacts `evidently/`)")
    lines += ["", "Next:"]
    if retrain:
        lines.append("- Retraining on the reference plus the accepted new rows has started; check the new run's gate.")
    else:
        lines.append("- Look at the top columns in the report: a pipeline bug upstream, or a real change in the data?")
        lines.append(f"- If the data really changed: `normlab run {config_hint}--data <new labelled data>` "
                     "or rerun the monitor with `--retrain`.")
    return title, "\n".join(lines)


def quality_message(
    *,
    model: str,
    version: str | None,
    fingerprint: str,
    source: str,
    quality: Quality,
    drift_level: str,
    rows_in: int,
    rows_quarantined: int,
    rows_untyped: int,
    failed: Sequence[str],
    quarantine_path: str | None,
    monitor_run_id: str | None,
    tracking_uri: str,
) -> tuple[str, str]:
    """The data-quality alert: which checks failed, how many rows, the worst columns, where the rows are kept."""
    which = f"{model} v{version}" if version else model
    title = f"normlab: data {quality.level} for {which}: {rows_quarantined}/{rows_in} rows quarantined"
    lines = [
        f"**Data {quality.level}** on batch `{fingerprint[:12]}` from `{source}`: {quality.reason}.",
        f"Model: **{which}**. Rows: {rows_in} in, {rows_quarantined} quarantined "
        f"(share {quality.share:.2f}), {rows_untyped} unreadable.",
        f"Drift on the readable rows (quarantined ones included): **{drift_level}**.",
        "",
        "Failed checks:",
    ]
    lines += [f"- {line}" for line in list(failed)[:10]]
    if quality.columns:
        worst = ", ".join(f"`{c}` ({quality.column_rows[c]} rows)" for c in quality.columns)
        lines.append(f"Top offending columns: {worst}.")
    lines += ["", f"Rejected rows are kept, with reasons, in `{quarantine_path}`." if quarantine_path
              else "No row was quarantined."]
    if monitor_run_id:
        lines.append(f"MLflow run `{monitor_run_id}` in {tracking_uri} (artifact `gate/validation.json`).")
    lines += ["", "Next: fix the source, or, if the data really changed, re-profile it (`normlab init`) and retrain."]
    return title, "\n".join(lines)


def retraining_failed_message(
    *,
    model: str,
    version: str | None,
    error: str,
    data: str | None,
    rows_reference: int,
    rows_new: int,
    tracking_uri: str,
) -> tuple[str, str]:
    """The alert sent when a retraining started by monitoring failed."""
    which = f"{model} v{version}" if version else model
    title = f"normlab: retraining FAILED for {which}"
    lines = [
        f"**Retraining failed** for **{which}**: {redact(error)}",
        f"Training data: `{data}` ({rows_reference} reference + {rows_new} new rows)." if data
        else "No training data was written.",
        f"The champion is unchanged; the drifted batches stay recorded in {tracking_uri}.",
        "",
        "Next: read the failed flow run's log, fix the cause, and rerun `normlab run --data <that file>`.",
    ]
    return title, "\n".join(lines)


def send(urls: Sequence[str], title: str, body: str, *, timeout: float = 10.0) -> Delivery:
    """Send one notification to every URL.

    Returns:
        The `Delivery`: ``sent`` (every target accepted it), ``targets``,
        ``delivered`` and ``services`` (service type and outcome; never a URL).
    """
    if not urls:
        return Delivery(sent=False, targets=0, delivered=0, services=[], reason="no alert URLs configured")
    import apprise

    with _quiet_apprise():
        notifier = apprise.Apprise()
        accepted = [url for url in urls if notifier.add(url)]
        result = notifier.notify(body=body, title=title, body_format=apprise.NotifyFormat.MARKDOWN, timeout=timeout)
        services = [ServiceResult(service=str(s.name), ok=bool(s)) for s in result]
    delivered = sum(s.ok for s in services)
    out = Delivery(sent=delivered == len(urls), targets=len(urls), delivered=delivered, services=services)
    if len(accepted) < len(urls):
        return out.model_copy(update={"reason": f"{len(urls) - len(accepted)} URL(s) not understood by Apprise"})
    if delivered < len(urls):
        return out.model_copy(update={"reason": f"{len(urls) - delivered} of {len(urls)} target(s) refused or "
                                                "unreachable"})
    return out


@contextmanager
def _quiet_apprise() -> Iterator[None]:
    """Silence the loggers that print notification hosts and paths."""
    loggers = [logging.getLogger(name) for name in ("apprise", "urllib3.connectionpool")]
    saved = [lg.disabled for lg in loggers]
    for lg in loggers:
        lg.disabled = True
    try:
        yield
    finally:
        for lg, was in zip(loggers, saved, strict=True):
            lg.disabled = was
