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

from pydantic import BaseModel

from normlab.config import PromotionConfig
from normlab.contract_base import Contract
from normlab.contracts import GateRecord, ModelVersion, Publication
from normlab.errors import NormlabError
from normlab.evaluation import MEAN
from normlab.gate.contracts import GateReport
from normlab.registry import CHALLENGER, CHAMPION, alias_version, set_alias, version_for_run
from normlab.tracking import TrackingStore

RECORD_FORMAT = "normlab.governance_record"
RECORD_VERSION = 1
# MLflow limits a model version tag value to 5000 characters.
_TAG_MAX = 5000


class PromotionError(NormlabError):
    """A registry request cannot be carried out (no version for the run, no registered model)."""


class _Record(Contract, BaseModel):  # BaseModel for ruff's sake: see `normlab.contract_base`
    """The base of the record's parts: `normlab.contract_base.Contract`."""


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


class NotPassed(_Record):
    """A check of the data gate that did not pass, as the record names it."""

    name: str
    column: str | None = None
    severity: str | None = None
    outcome: str | None = None
    unexpected_count: int | None = None


class CheckCounts(_Record):
    """The data gate's checks, counted by outcome; the ones that did not pass named."""

    total: int
    by_outcome: dict[str, int]
    not_passed: list[NotPassed]


class ValidationSummary(_Record):
    """What the data gate decided, without the row-level detail (that stays in the run's validation files).

    Empty in a record written by a promotion by hand of a version that had none.
    """

    success: bool | None = None
    failed: list[str] | None = None
    rows_in: int | None = None
    rows_accepted: int | None = None
    rows_quarantined: int | None = None
    quarantine_path: str | None = None
    suite: str | None = None
    checks: CheckCounts | None = None


class DataRef(_Record):
    """The accepted batch a version was trained on."""

    fingerprint: str | None = None
    source: str | None = None
    rows: int | None = None


class DriftReference(_Record):
    """Where a version's drift reference lives: among its run's artifacts, and on this machine."""

    artifact_uri: str | None = None
    local_path: str | None = None


class PrefectRef(_Record):
    """The Prefect flow run that trained the version (None: trained outside a flow run)."""

    flow_run_id: str | None = None


class RecordDecision(_Record):
    """One decision on a version: the gate's, or a promotion by hand (who, why, what it overrode)."""

    kind: str
    at: str
    by: str
    passed: bool | None = None
    gate_passed: bool | None = None
    reason: str
    aliases: list[str]
    previous_champion: str | None = None
    overrides_gate: bool | None = None


class GovernanceRecord(_Record):
    """The record of one model version: where it came from, how it scored, and each decision on it.

    Written as ``governance/model_version_<v>.json`` with `to_json` (each part
    with the fields it set); read back with `GovernanceRecord.model_validate`.
    ``promotion`` is the ``promotion`` config section the gate used.
    """

    format: str = RECORD_FORMAT
    format_version: int = RECORD_VERSION
    model: ModelVersion
    data: DataRef
    validation: ValidationSummary
    metrics: dict[str, dict[str, float]]
    gate: GateRecord | None
    promotion: PromotionConfig | None = None
    drift_reference: DriftReference
    prefect: PrefectRef
    decisions: list[RecordDecision]

    def to_json(self) -> dict[str, object]:
        """The record's JSON document: each part with the fields it set, the promotion settings in full."""
        out = self.model_dump(exclude_unset=True)  # python mode: a NaN metric stays NaN, as json writes it
        if self.promotion is not None:
            out["promotion"] = self.promotion.model_dump(mode="json")
        return out


class ManualPromotion(_Record):
    """What a promotion by hand did (`promote`): the version, the champion it replaced, the record.

    ``already``: the version was the champion already, and nothing changed.
    """

    name: str
    version: str
    previous_champion: str | None
    record: str
    already: bool


def validation_summary(report: GateReport) -> ValidationSummary:
    """What the data gate decided (`GateReport`), without the row-level detail."""
    outcomes: dict[str, int] = {}
    for check in report.checks:
        outcome = check.outcome or ("passed" if check.success else "failed")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return ValidationSummary(
        success=report.success, failed=report.failed, rows_in=report.rows_in, rows_accepted=report.rows_accepted,
        rows_quarantined=report.rows_quarantined, quarantine_path=report.quarantine_path, suite=report.suite,
        # Passing checks are counted only; the run's validation files hold every one.
        checks=CheckCounts(total=len(report.checks), by_outcome=outcomes, not_passed=[
            NotPassed(name=c.name, column=c.column, severity=c.severity, outcome=c.outcome,
                      unexpected_count=c.unexpected_count)
            for c in report.checks if not c.success]),
    )


def governance_record(
    *,
    model: ModelVersion,
    data: DataRef,
    validation: GateReport,
    metrics: dict[str, float],
    decision: GateRecord,
    drift_reference: DriftReference,
    flow_run_id: str | None,
    promotion: PromotionConfig,
) -> GovernanceRecord:
    """The record of one model version: where it came from, how it scored, and each decision on it."""
    aliases = [CHALLENGER, CHAMPION] if decision.passed else [CHALLENGER]
    return GovernanceRecord(
        format=RECORD_FORMAT,
        format_version=RECORD_VERSION,
        model=model,
        data=data,
        validation=validation_summary(validation),
        metrics=metrics_by_split(metrics),
        gate=decision,
        promotion=promotion,
        drift_reference=drift_reference,
        prefect=PrefectRef(flow_run_id=flow_run_id),
        decisions=[RecordDecision(
            kind="gate",
            at=decision.decided_at,
            by="normlab gate",
            passed=decision.passed,
            reason=decision.reason,
            aliases=aliases,
            previous_champion=decision.champion.version if decision.champion else None,
        )],
    )


def _record_tags(record: GovernanceRecord) -> dict[str, str]:
    last = record.decisions[-1]
    model = record.model
    tags = {
        "normlab.governance_record": f"runs:/{model.run_id}/{record_path(model.version)}",
        "normlab.decision": last.kind,
        "normlab.decision.reason": last.reason,
        "normlab.decision.by": last.by,
        "normlab.decision.at": last.at,
        "normlab.gate.passed": str(record.gate.passed) if record.gate else "unknown",
        "normlab.data.fingerprint": record.data.fingerprint or "",
        "normlab.validation.success": "" if record.validation.success is None else str(record.validation.success),
        "normlab.drift_reference": record.drift_reference.artifact_uri or "",
        "normlab.prefect.flow_run_id": record.prefect.flow_run_id or "",
    }
    for split in ("id/test", MEAN):
        values = record.metrics.get(split, {})
        if "accuracy" in values:
            ci = ""
            if "accuracy_ci_low" in values:
                ci = f" [{values['accuracy_ci_low']:.4f}, {values['accuracy_ci_high']:.4f}]"
            tags[f"normlab.metric.{split}/accuracy"] = f"{values['accuracy']:.4f}{ci}"
    return {k: v[: _TAG_MAX - 3] + "..." if len(v) > _TAG_MAX else v for k, v in tags.items()}


def write_record(store: TrackingStore, record: GovernanceRecord) -> str:
    """Log the record as its run's artifact and as tags on the version; returns the artifact URI."""
    model = record.model
    client = store.client
    client.log_dict(model.run_id, record.to_json(), record_path(model.version))
    for key, value in _record_tags(record).items():
        client.set_model_version_tag(model.name, model.version, key, value)
    return f"runs:/{model.run_id}/{record_path(model.version)}"


def read_record(store: TrackingStore, version: ModelVersion) -> GovernanceRecord | None:
    """A version's governance record, or None when it has none.

    Raises:
        NormlabError: The record is there but is not a governance record.
    """
    from mlflow.exceptions import MlflowException
    from pydantic import ValidationError

    with tempfile.TemporaryDirectory(prefix="normlab-record-") as tmp:
        try:
            path = store.client.download_artifacts(version.run_id, record_path(version.version), tmp)
        except (MlflowException, OSError):
            return None
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    try:
        return GovernanceRecord.model_validate(data)
    except ValidationError as exc:
        where = f"runs:/{version.run_id}/{record_path(version.version)}"
        raise NormlabError(f"{where} is not a governance record: {exc.errors()[0]['msg']}") from None


def publish(store: TrackingStore, record: GovernanceRecord) -> Publication:
    """Write the record, then move the aliases its last decision names (never the other way round)."""
    artifact = write_record(store, record)
    model, last = record.model, record.decisions[-1]
    for alias in last.aliases:
        set_alias(store, model.name, alias, model.version)
    return Publication(enabled=True, name=model.name, version=model.version, aliases=last.aliases, record=artifact,
                       passed=record.gate.passed if record.gate else None, reason=last.reason)


def promote(store: TrackingStore, name: str, run_id: str, *, reason: str, by: str) -> ManualPromotion:
    """Make the version registered from ``run_id`` the champion by hand, recording who and why.

    Args:
        store: The tracking (and registry) store.
        name: Registered model name.
        run_id: The run whose version is promoted.
        reason: Why (required, kept in the record and tags).
        by: Who.

    Returns:
        The `ManualPromotion`: the version, the previous champion, the record;
        ``already`` when it was the champion already (nothing changes then).

    Raises:
        PromotionError: The reason is empty, or the run has no version of ``name``.
    """
    if not reason.strip():
        raise PromotionError("--reason is empty; say why this version should be the champion")
    if store.missing_database() is not None:
        # Opening a missing SQLite store would create an empty one.
        raise PromotionError(f"no tracking store at {store.uri}; point --set workdir=... or tracking.uri at the runs' store")
    version = version_for_run(store, name, run_id)
    if version is None:
        raise PromotionError(
            f"run {run_id} has no version of registered model {name!r}; "
            "check the run id and the config (model.registry_name) it was trained with"
        )
    previous = alias_version(store, name, CHAMPION)
    if previous is not None and previous.version == version.version:
        return ManualPromotion(name=name, version=version.version, previous_champion=previous.version,
                               record=f"runs:/{run_id}/{record_path(version.version)}", already=True)
    record = read_record(store, version) or GovernanceRecord(
        format=RECORD_FORMAT, format_version=RECORD_VERSION, model=version, data=DataRef(),
        validation=ValidationSummary(), metrics={}, gate=None, drift_reference=DriftReference(),
        prefect=PrefectRef(flow_run_id=None), decisions=[],
    )
    gate_passed = record.gate.passed if record.gate else None
    manual = RecordDecision(
        kind="manual",
        at=_now(),
        by=by,
        gate_passed=gate_passed,
        reason=reason.strip(),
        aliases=[CHAMPION],
        previous_champion=previous.version if previous else None,
        overrides_gate=gate_passed is False,
    )
    published = publish(store, record.model_copy(update={"decisions": [*record.decisions, manual]}))
    return ManualPromotion(name=name, version=version.version,
                           previous_champion=previous.version if previous else None,
                           record=str(published.record), already=False)
