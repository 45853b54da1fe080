"""The model registry: versions, the promotion gate, governance records and aliases.

Every run registers its serving model as a new version of ``model.registry_name``
(default ``normlab-<name>``). The gate then decides on evidence:

0. the model's health: its training and validation losses and its ID
   metrics are finite, and it was trained on at least two classes (a NaN model
   or a one-class "classifier" is registered but never promoted);
1. absolute thresholds from ``promotion.thresholds`` (``metric >= value``);
2. the current ``champion``, loaded from the registry and re-scored on this
   run's splits: on each metric of ``promotion.compare`` the paired bootstrap
   interval of (challenger - champion), both models resampled on the same rows,
   must not lie entirely below ``-promotion.tolerance``. The first model (no
   champion yet) is held to the thresholds only.

A governance record (JSON artifact ``governance/model_version_<v>.json`` of the
run, and tags on the version) is written before any alias moves. The version
then gets the alias ``challenger``, and ``champion`` when the gate passed. A
person can promote a version by hand (`promote`), which appends who and why to
the record before moving the alias. Registry stages are never used.
"""

from __future__ import annotations

import json
import math
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from normlab.config import PipelineConfig, PromotionConfig
from normlab.errors import NormlabError
from normlab.evaluation import (
    COUNT_METRICS,
    MEAN,
    aggregate,
    bootstrap,
    count_metric,
    interval,
    ood_groups,
)

CHAMPION = "champion"
CHALLENGER = "challenger"
RECORD_FORMAT = "normlab.governance_record"
RECORD_VERSION = 1
# MLflow limits a model version tag value to 5000 characters.
_TAG_MAX = 5000


class PromotionError(NormlabError):
    """A registry request cannot be carried out (no version for the run, no registered model)."""


def registry_name(cfg: PipelineConfig) -> str:
    """The registered model's name: ``model.registry_name`` or ``normlab-<name>``."""
    return cfg.model.registry_name or f"normlab-{cfg.name}"


def record_path(version: str | int) -> str:
    """Where a version's governance record lives among its run's artifacts."""
    return f"governance/model_version_{version}.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _is_missing(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


# Versions ---------------------------------------------------------------------------------


def register_version(uri: str, name: str, run_id: str, model_id: str) -> dict[str, Any]:
    """Register a logged model as a new version of ``name`` (the run's existing version if it has one).

    A retried or resumed run therefore never registers twice.

    Args:
        uri: Tracking (and registry) URI.
        name: Registered model name (created when missing).
        run_id: The run that logged the model.
        model_id: The logged model's id (``mlflow.pyfunc.log_model``'s ``model_id``).

    Returns:
        ``name``, ``version``, ``run_id``, ``model_id``, ``source`` and
        ``reused`` (True when the run already had a version).
    """
    from mlflow.exceptions import MlflowException

    from normlab.tracking import client_for

    client = client_for(uri)
    try:
        client.create_registered_model(name, description="Registered by normlab; aliases champion and challenger.")
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
    existing = version_for_run(uri, name, run_id)
    if existing is not None:
        return {**existing, "reused": True}
    # The store resolves a models:/ source through the global tracking URI; the
    # logged model's own artifact location keeps this explicit.
    source = client.get_logged_model(model_id).artifact_location
    mv = client.create_model_version(name, source=source, run_id=run_id, model_id=model_id)
    return {**_describe(mv), "model_id": model_id, "reused": False}


def _describe(mv: Any) -> dict[str, Any]:
    return {"name": mv.name, "version": str(mv.version), "run_id": mv.run_id,
            "model_id": getattr(mv, "model_id", None), "source": mv.source}


def version_for_run(uri: str, name: str, run_id: str) -> dict[str, Any] | None:
    """The version of ``name`` registered from ``run_id`` (the latest if several), or None."""
    from mlflow.exceptions import MlflowException

    from normlab.tracking import client_for

    try:
        found = client_for(uri).search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException as exc:
        if _is_missing(exc):
            return None
        raise
    if not found:
        return None
    return _describe(max(found, key=lambda mv: int(mv.version)))


def alias_version(uri: str, name: str, alias: str) -> dict[str, Any] | None:
    """The version that holds ``alias``, or None (no alias yet, or no registered model)."""
    from mlflow.exceptions import MlflowException

    from normlab.tracking import client_for

    try:
        return _describe(client_for(uri).get_model_version_by_alias(name, alias))
    except MlflowException as exc:
        if _is_missing(exc):
            return None
        raise


def set_alias(uri: str, name: str, alias: str, version: str | int) -> None:
    """Point ``alias`` of ``name`` at ``version``.

    MLflow sets an alias by reading it, then inserting or updating its row: two
    processes setting a new alias at once both insert, and one fails on the
    row's primary key. That one sets it again (the last one to set it wins, as
    when they take turns).
    """
    from normlab.tracking import client_for, retry_lost_race

    retry_lost_race(uri, client_for(uri).set_registered_model_alias, name, alias, str(version))


def load_classifier(uri: str, version: dict[str, Any]):
    """The version's serving model, loaded through ``mlflow.pyfunc`` (a `LoadedClassifier`)."""
    import mlflow.pyfunc

    from normlab.tracking import tracking_uri

    with tracking_uri(uri):
        model = mlflow.pyfunc.load_model(version["source"])
    return model.unwrap_python_model().classifier


def predict_indices(classifier: Any, frames: dict[str, pd.DataFrame], classes: list[str]) -> dict[str, np.ndarray]:
    """Predicted class indices in this run's class order (-1: a class this run does not have)."""
    index = {str(c): i for i, c in enumerate(classes)}
    out: dict[str, np.ndarray] = {}
    for key, frame in frames.items():
        labels = classifier.predict(frame)["label"]
        out[key] = np.array([index.get(str(v), -1) for v in labels], dtype=np.int64)
    return out


# The gate ---------------------------------------------------------------------------------


def _expand(key: str, groups: list[str]) -> list[str]:
    """``ood/*/m`` to one key per OOD split (a severity group once); other keys unchanged."""
    if key.startswith("ood/*/"):
        return [f"{g}/{key[len('ood/*/'):]}" for g in groups]
    return [key]


def _split_of(key: str) -> tuple[str, str]:
    split, metric = key.rsplit("/", 1)
    return split, metric


# What a model must have finite values of to be promoted (a NaN here means the weights are not usable).
HEALTH_METRICS = ("train/final_loss", "train/final_val_loss", "id/val/accuracy", "id/test/accuracy", "id/test/nll")


def check_health(metrics: dict[str, float]) -> list[dict[str, Any]]:
    """The model-health checks: finite losses and ID metrics; two or more classes seen in training."""
    bad = [k for k in HEALTH_METRICS if k in metrics and not math.isfinite(metrics[k])]
    checks = [{"kind": "health", "metric": "finite", "passed": not bad,
               "reason": (f"not finite: {', '.join(f'{k}={metrics[k]}' for k in bad)} (training diverged)" if bad
                          else "losses and ID metrics are finite")}]
    classes = metrics.get("train/classes")
    if classes is not None:
        checks.append({"kind": "health", "metric": "train/classes", "value": classes, "passed": classes >= 2,
                       "reason": (f"trained on {int(classes)} class(es); a classifier needs at least 2"
                                  if classes < 2 else f"trained on {int(classes)} classes")})
    return checks


def check_thresholds(thresholds: dict[str, float], metrics: dict[str, float], groups: list[str]) -> list[dict[str, Any]]:
    """One check per threshold (``ood/*`` expanded): passed when the metric is at least the value."""
    checks = []
    for pattern, floor in thresholds.items():
        for key in _expand(pattern, groups):
            value = metrics.get(key)
            if value is None:
                passed, reason = False, f"{key} was not produced by this run"
            else:
                passed = value >= floor
                reason = f"{key} {value:.4f} {'>=' if passed else '<'} {floor:g}"
            checks.append({"kind": "threshold", "metric": key, "value": value, "at_least": floor,
                           "passed": passed, "reason": reason})
    return checks


def compare_with_champion(
    promotion: PromotionConfig,
    labels: dict[str, np.ndarray],
    challenger: dict[str, np.ndarray],
    champion: dict[str, np.ndarray],
    *,
    n_classes: int,
    seed: int,
    populations: dict[str, str] | None = None,
    champion_name: str = "champion",
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Paired bootstrap of (challenger - champion) on every compared metric.

    Args:
        promotion: Which metrics, the tolerance, resamples and confidence.
        labels: Split key to true class indices (this run's splits).
        challenger: Split key to the challenger's predicted class indices.
        champion: Split key to the champion's predicted class indices (same rows).
        n_classes: Number of classes.
        seed: Fixes the resamples.
        populations: Splits made of the same rows (see `normlab.evaluation.bootstrap`).
        champion_name: How the champion is named in reasons (``champion v3``).

    Returns:
        The checks, and the champion's re-scored point metrics.
    """
    leaves = [k for k in labels if k in challenger and k in champion and len(labels[k])]
    groups = list(ood_groups(leaves))
    wanted: dict[str, list[str]] = {}
    for pattern in promotion.compare:
        for key in _expand(pattern, groups):
            split, metric = _split_of(key)
            wanted.setdefault(metric, [])
            if key not in wanted[metric]:
                wanted[metric].append(split)
    metrics = [m for m in COUNT_METRICS if m in wanted]
    samples = bootstrap(labels, {k: [challenger[k], champion[k]] for k in leaves}, n_classes=n_classes,
                        metrics=metrics, samples=promotion.bootstrap_samples, seed=seed, populations=populations)
    checks: list[dict[str, Any]] = []
    rescored: dict[str, float] = {}
    for metric in metrics:
        delta = aggregate({k: samples[k][metric][0] - samples[k][metric][1] for k in samples})
        point_a = aggregate({k: count_metric(labels[k], challenger[k], metric, n_classes=n_classes) for k in leaves})
        point_b = aggregate({k: count_metric(labels[k], champion[k], metric, n_classes=n_classes) for k in leaves})
        for split, value in point_b.items():
            rescored[f"{split}/{metric}"] = float(value)
        for split in wanted[metric]:
            key = f"{split}/{metric}"
            if split not in delta:
                checks.append({"kind": "champion", "metric": key, "passed": True, "skipped": True,
                               "reason": f"{key}: skipped, this run has no such split"})
                continue
            low, high = interval(np.asarray(delta[split]), promotion.confidence)
            a, b = float(point_a[split]), float(point_b[split])
            passed = high >= -promotion.tolerance
            verdict = "within" if passed else "below"
            reason = (f"{key}: {a:.4f} vs {champion_name} {b:.4f}, delta {a - b:+.4f}, "
                      f"{promotion.confidence:.0%} interval [{low:+.4f}, {high:+.4f}] "
                      f"{'not entirely below' if passed else 'entirely below'} -{promotion.tolerance:g}")
            checks.append({"kind": "champion", "metric": key, "challenger": a, "champion": b, "delta": a - b,
                           "ci_low": low, "ci_high": high, "tolerance": promotion.tolerance, "passed": passed,
                           "verdict": verdict, "reason": reason})
    return checks, rescored


def decide(
    promotion: PromotionConfig,
    metrics: dict[str, float],
    labels: dict[str, np.ndarray],
    challenger: dict[str, np.ndarray],
    *,
    n_classes: int,
    seed: int,
    champion: dict[str, Any] | None = None,
    champion_predictions: dict[str, np.ndarray] | None = None,
    champion_error: str | None = None,
    populations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The gate's decision, with a reason for each check and one for the whole.

    Args:
        promotion: The ``promotion`` config section.
        metrics: This run's metrics.
        labels: Split key to true class indices.
        challenger: Split key to this run's predicted class indices.
        n_classes: Number of classes.
        seed: Fixes the resamples.
        champion: The current champion version (None: there is none).
        champion_predictions: The champion's predictions on this run's splits.
        champion_error: Why the champion could not be re-scored (the gate then refuses).
        populations: Splits made of the same rows.

    Returns:
        ``passed``, ``reason``, ``checks``, ``champion`` (version, run and
        re-scored metrics, or None) and the settings used.
    """
    groups = list(ood_groups([k for k in labels if len(labels[k])]))
    checks = check_health(metrics) + check_thresholds(promotion.thresholds, metrics, groups)
    rescored: dict[str, float] = {}
    champion_name = f"champion v{champion['version']}" if champion else "champion"
    if champion is not None and champion_error is None and champion_predictions is not None:
        compared, rescored = compare_with_champion(
            promotion, labels, challenger, champion_predictions, n_classes=n_classes, seed=seed,
            populations=populations, champion_name=champion_name)
        checks += compared
    elif champion is not None:
        checks.append({"kind": "champion", "metric": None, "passed": False,
                       "reason": f"{champion_name} could not be re-scored on this run's splits: {champion_error}"})
    failed = [c for c in checks if not c["passed"]]
    thresholds = sum(c["kind"] == "threshold" for c in checks)
    compared_count = sum(c["kind"] == "champion" and not c.get("skipped") for c in checks)
    if failed:
        reason = "refused: " + "; ".join(c["reason"] for c in failed)
    elif champion is None:
        reason = f"passed: {thresholds} threshold(s) met; no champion yet, so thresholds alone decide"
    else:
        reason = (f"passed: {thresholds} threshold(s) met; none of {compared_count} compared metric(s) regressed "
                  f"beyond {promotion.tolerance:g} against {champion_name} re-scored on this run's splits")
    return {
        "passed": not failed,
        "reason": reason,
        "checks": checks,
        "champion": None if champion is None else {**champion, "metrics": rescored},
        "tolerance": promotion.tolerance,
        "confidence": promotion.confidence,
        "bootstrap_samples": promotion.bootstrap_samples,
        "decided_at": _now(),
    }


# Governance records and aliases -----------------------------------------------------------


def metrics_by_split(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """``{"id/test": {"accuracy": ..., "accuracy_ci_low": ...}, ...}`` for the ID and OOD splits."""
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key.startswith(("id/", "ood/")) and "/class/" not in key and "/slice/" not in key:
            split, metric = key.rsplit("/", 1)
            out.setdefault(split, {})[metric] = value
    return out


def validation_summary(validation: dict[str, Any]) -> dict[str, Any]:
    """What the data gate decided, without the row-level detail (that stays in the run's validation files)."""
    keys = ("success", "failed", "rows_in", "rows_accepted", "rows_quarantined", "quarantine_path")
    summary = {k: validation[k] for k in keys if k in validation}
    report = validation.get("report") or {}
    checks = report.get("checks", [])
    outcomes: dict[str, int] = {}
    for check in checks:
        outcome = str(check.get("outcome", "passed" if check.get("success") else "failed"))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    summary["suite"] = report.get("suite")
    summary["checks"] = {
        "total": len(checks),
        "by_outcome": outcomes,
        # Passing checks are counted only; the run's validation files hold every one.
        "not_passed": [{k: c.get(k) for k in ("name", "column", "severity", "outcome", "unexpected_count") if k in c}
                       for c in checks if not c.get("success", True)],
    }
    return summary


def governance_record(
    *,
    model: dict[str, Any],
    data: dict[str, Any],
    validation: dict[str, Any],
    metrics: dict[str, float],
    decision: dict[str, Any],
    drift_reference: dict[str, str],
    flow_run_id: str | None,
    promotion: PromotionConfig,
) -> dict[str, Any]:
    """The record of one model version: where it came from, how it scored, and each decision on it."""
    aliases = [CHALLENGER, CHAMPION] if decision["passed"] else [CHALLENGER]
    return {
        "format": RECORD_FORMAT,
        "format_version": RECORD_VERSION,
        "model": model,
        "data": data,
        "validation": validation_summary(validation),
        "metrics": metrics_by_split(metrics),
        "gate": decision,
        "promotion": promotion.model_dump(mode="json"),
        "drift_reference": drift_reference,
        "prefect": {"flow_run_id": flow_run_id},
        "decisions": [{
            "kind": "gate",
            "at": decision["decided_at"],
            "by": "normlab gate",
            "passed": decision["passed"],
            "reason": decision["reason"],
            "aliases": aliases,
            "previous_champion": decision["champion"]["version"] if decision["champion"] else None,
        }],
    }


def _record_tags(record: dict[str, Any]) -> dict[str, str]:
    last = record["decisions"][-1]
    model = record["model"]
    tags = {
        "normlab.governance_record": f"runs:/{model['run_id']}/{record_path(model['version'])}",
        "normlab.decision": last["kind"],
        "normlab.decision.reason": last["reason"],
        "normlab.decision.by": last["by"],
        "normlab.decision.at": last["at"],
        "normlab.gate.passed": str(record["gate"]["passed"]) if record.get("gate") else "unknown",
        "normlab.data.fingerprint": record["data"].get("fingerprint", ""),
        "normlab.validation.success": str(record["validation"].get("success", "")),
        "normlab.drift_reference": record["drift_reference"].get("artifact_uri", ""),
        "normlab.prefect.flow_run_id": record["prefect"].get("flow_run_id") or "",
    }
    for split in ("id/test", MEAN):
        values = record["metrics"].get(split, {})
        if "accuracy" in values:
            ci = ""
            if "accuracy_ci_low" in values:
                ci = f" [{values['accuracy_ci_low']:.4f}, {values['accuracy_ci_high']:.4f}]"
            tags[f"normlab.metric.{split}/accuracy"] = f"{values['accuracy']:.4f}{ci}"
    return {k: v[: _TAG_MAX - 3] + "..." if len(v) > _TAG_MAX else v for k, v in tags.items()}


def write_record(uri: str, record: dict[str, Any]) -> str:
    """Log the record as its run's artifact and as tags on the version; returns the artifact URI."""
    from normlab.tracking import client_for

    model = record["model"]
    client = client_for(uri)
    client.log_dict(model["run_id"], record, record_path(model["version"]))
    for key, value in _record_tags(record).items():
        client.set_model_version_tag(model["name"], model["version"], key, value)
    return f"runs:/{model['run_id']}/{record_path(model['version'])}"


def read_record(uri: str, version: dict[str, Any]) -> dict[str, Any] | None:
    """A version's governance record, or None when it has none."""
    from mlflow.exceptions import MlflowException

    from normlab.tracking import client_for

    with tempfile.TemporaryDirectory(prefix="normlab-record-") as tmp:
        try:
            path = client_for(uri).download_artifacts(version["run_id"], record_path(version["version"]), tmp)
        except (MlflowException, OSError):
            return None
        return json.loads(Path(path).read_text(encoding="utf-8"))


def publish(uri: str, record: dict[str, Any]) -> dict[str, Any]:
    """Write the record, then move the aliases its last decision names (never the other way round)."""
    artifact = write_record(uri, record)
    model = record["model"]
    aliases = record["decisions"][-1]["aliases"]
    for alias in aliases:
        set_alias(uri, model["name"], alias, model["version"])
    return {"name": model["name"], "version": model["version"], "aliases": aliases, "record": artifact,
            "passed": record["gate"]["passed"] if record.get("gate") else None,
            "reason": record["decisions"][-1]["reason"]}


def promote(uri: str, name: str, run_id: str, *, reason: str, by: str) -> dict[str, Any]:
    """Make the version registered from ``run_id`` the champion by hand, recording who and why.

    Args:
        uri: Tracking (and registry) URI.
        name: Registered model name.
        run_id: The run whose version is promoted.
        reason: Why (required, kept in the record and tags).
        by: Who.

    Returns:
        ``name``, ``version``, ``previous_champion``, ``record``, and
        ``already`` (True when it was the champion already; nothing changes then).

    Raises:
        PromotionError: The reason is empty, or the run has no version of ``name``.
    """
    if not reason.strip():
        raise PromotionError("--reason is empty; say why this version should be the champion")
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        # Opening a missing SQLite store would create an empty one.
        raise PromotionError(f"no tracking store at {uri}; point --set workdir=... or tracking.uri at the runs' store")
    version = version_for_run(uri, name, run_id)
    if version is None:
        raise PromotionError(
            f"run {run_id} has no version of registered model {name!r}; "
            "check the run id and the config (model.registry_name) it was trained with"
        )
    previous = alias_version(uri, name, CHAMPION)
    if previous is not None and previous["version"] == version["version"]:
        return {"name": name, "version": version["version"], "previous_champion": previous["version"],
                "record": f"runs:/{run_id}/{record_path(version['version'])}", "already": True}
    record = read_record(uri, version) or {
        "format": RECORD_FORMAT, "format_version": RECORD_VERSION,
        "model": {k: version[k] for k in ("name", "version", "run_id", "model_id", "source")},
        "data": {}, "validation": {}, "metrics": {}, "gate": None, "drift_reference": {},
        "prefect": {"flow_run_id": None}, "decisions": [],
    }
    gate = record.get("gate") or {}
    record["decisions"].append({
        "kind": "manual",
        "at": _now(),
        "by": by,
        "gate_passed": gate.get("passed"),
        "reason": reason.strip(),
        "aliases": [CHAMPION],
        "previous_champion": previous["version"] if previous else None,
        "overrides_gate": gate.get("passed") is False,
    })
    published = publish(uri, record)
    return {"name": name, "version": version["version"],
            "previous_champion": previous["version"] if previous else None,
            "record": published["record"], "already": False}
