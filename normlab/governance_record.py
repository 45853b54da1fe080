"""The governance record of a model version, and promoting a version by hand.

A governance record (JSON artifact ``governance/model_version_<v>.json`` of the
run, and tags on the version) is written before any alias moves. The version
then gets the alias ``challenger``, and ``champion`` when the gate passed
(`normlab.promotion`). A person can promote a version by hand (`promote`), which
appends who and why to the record before moving the alias.
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from normlab.config import PromotionConfig
from normlab.errors import NormlabError
from normlab.evaluation import MEAN
from normlab.registry import CHALLENGER, CHAMPION, alias_version, set_alias, version_for_run

RECORD_FORMAT = "normlab.governance_record"
RECORD_VERSION = 1
# MLflow limits a model version tag value to 5000 characters.
_TAG_MAX = 5000


class PromotionError(NormlabError):
    """A registry request cannot be carried out (no version for the run, no registered model)."""


def record_path(version: str | int) -> str:
    """Where a version's governance record lives among its run's artifacts."""
    return f"governance/model_version_{version}.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
