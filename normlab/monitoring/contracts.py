"""Typed hand-offs between the stages of drift monitoring (what the Prefect tasks pass on).

Each stage of `normlab.monitoring` returns one of these frozen models; the
next stage reads its attributes. What is persisted as JSON (summary entries,
``drift.json``, the records of ``state.json`` in `normlab.monitoring.state`,
the monitor summary) is built from them with ``model_dump()`` or
`JsonRecord.to_json` at that boundary, in the shape it always had, and read
back with ``model_validate``. Pydantic, so that Prefect can validate and
serialize them as task inputs and as the ``reference`` parameter of the batch
subflow.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from normlab.alerts import Delivery, ServiceResult
from normlab.contract_base import Contract
from normlab.contracts import ImageSource, Publication
from normlab.drift import ColumnScore, ColumnsDrift, DriftVerdict, PredictionDrift


class _Contract(Contract, BaseModel):  # BaseModel for ruff's sake: see `normlab.contract_base`
    """The base of this module's models: `normlab.contract_base.Contract`."""


class JsonRecord(_Contract):
    """A contract written as JSON with the keys it was built (or read back) with: optional keys stay absent.

    Its `to_json` (`normlab.contract_base.Contract.to_json`) dumps the fields that were set.
    """


class Reference(_Contract):
    """The drift reference: the champion's (else the latest run's) training rows, model and encoders.

    The model is either in the run folder (``model_spec`` and
    ``model_weights``) or in MLflow (``model_uri``).
    """

    run_id: str
    model: str
    version: str | None
    selected_by: str
    reference_accuracy: float | None
    reference: str
    encoder: str
    model_spec: str | None = None
    model_weights: str | None = None
    model_uri: str | None = None

    def summary(self) -> dict[str, str | float | None]:
        """The reference in the monitor summary JSON: the model's location keys only where it has them."""
        out = self.model_dump()
        for key in ("model_spec", "model_weights", "model_uri"):
            if out[key] is None:
                del out[key]
        return out


class LandedBatch(_Contract):
    """A batch file looked at by `normlab.monitoring.open_batch`: claimed, or why it is not processed now.

    ``status`` is ``claimed`` (``skip`` false), or ``skipped``, ``pending``,
    ``unreadable`` or ``refused`` (``skip`` true, with ``reason`` and, for a
    batch processed before, ``previous``: its summary entry then). ``fingerprint``
    is None when the file was not read. A claimed batch has ``path`` (its
    snapshot), ``rows``, ``columns``, ``batch_dir``, ``landed_ns`` (the file's
    modification time, its place in the landing order) and ``change`` (None
    for a file not processed before); an image batch also ``images`` (where
    its files are: its snapshot holds one manifest row per file).
    """

    skip: bool
    status: Literal["claimed", "skipped", "pending", "unreadable", "refused"]
    fingerprint: str | None
    source: str
    reason: str | None = None
    previous: BatchEntry | None = None
    path: str | None = None
    rows: int | None = None
    columns: list[str] = []
    batch_dir: str | None = None
    landed_ns: int | None = None
    change: str | None = None
    images: ImageSource | None = None  # an image batch: its snapshot is the manifest of its files


class GateProblem(_Contract):
    """A failed check of the data gate: its column, outcome and rows flagged; ``label`` is ``check[:column]``."""

    check: str
    column: str | None
    outcome: str
    rows: int | None
    label: str


class GateOutcome(_Contract):
    """The data gate in its monitoring context (`normlab.monitoring.gate_batch`): counts and paths.

    ``accepted_path`` is None when the gate blocked the batch (a blocked batch
    never trains); ``typed_path`` holds the rows drift is measured on (every
    row that could be read and typed, quarantined ones too); ``failed`` has a
    line per failed check and ``missing_features`` the model features the
    batch lacks. The full report stays in ``report_path``.
    """

    accepted_path: str | None
    quarantine_path: str | None
    typed_path: str
    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    rows_typed: int
    rows_untyped: int
    blocked: bool
    failed: list[str]
    report_path: str
    problems: list[GateProblem]
    missing_features: list[str]


class Quality(_Contract):
    """A batch's data-quality verdict (`normlab.monitoring.quality_of`), and whether its alert is due.

    ``level`` is ``blocked``, ``quarantined`` (share above
    monitor.quality_share) or ``ok``; ``share`` is quarantined rows / rows
    in; ``checks`` are the failed check labels (e.g. ``range:temp_c``);
    ``columns`` the top offending columns by rows flagged (``column_rows``).
    """

    level: Literal["ok", "quarantined", "blocked"]
    share: float
    checks: list[str]
    columns: list[str]
    reason: str
    column_rows: dict[str, int]
    alert: bool = False


class Decision(_Contract):
    """A batch's drift decision (`normlab.monitoring.decide_batch`), committed to the state in landing order.

    ``level`` is ``none``, ``suspected``, ``detected``, ``too_small`` or
    ``blocked``; ``streak`` the drifted batches in a row; ``alert`` whether
    the drift alert is due (cooldown, de-duplication); ``retrain`` (set by
    the task, not part of the committed decision) whether to retrain.
    """

    level: str
    streak: int
    alert: bool
    reason: str
    quality: Quality
    decided_at: str
    reference_run_id: str
    retrain: bool = False

    def committed(self) -> Decision:
        """The decision as the state records it (``batches.<fingerprint>.decision``): without ``retrain``."""
        return Decision.model_validate(self.model_dump(exclude={"retrain"}))


class DriftSummary(_Contract):
    """Data drift over the model's features: the share of drifted columns, the verdict, the top columns by score."""

    share: float
    n_columns: int
    n_drifted: int
    drifted: bool
    columns: list[ColumnScore]


class Performance(JsonRecord):
    """Accuracy, macro F1 and calibration error on a labelled batch (`analyze_batch`).

    ``reference_accuracy`` (the reference run's test accuracy) and
    ``accuracy_drop`` are set only when the reference run recorded one.
    """

    accuracy: float
    f1_macro: float
    ece: float
    reference_accuracy: float | None = None
    accuracy_drop: float | None = None


class DriftRecord(JsonRecord):
    """What `analyze_batch` writes to ``drift.json``: the batch verdict, the summary, every column's score."""

    fingerprint: str
    reference_run_id: str
    rows: int
    decidable: bool
    drifted: bool | None
    drifted_columns: list[str]
    data: ColumnsDrift
    prediction: PredictionDrift
    performance: Performance | None
    columns: list[ColumnScore]

    def verdict(self, *, alpha: float, effect_floor: float, drift_share: float,
                prediction_decides: bool) -> DriftVerdict:
        """normlab's verdict of the batch for its Evidently report, under the ``monitor.*`` thresholds."""
        return DriftVerdict(alpha=alpha, effect_floor=effect_floor, drift_share=drift_share,
                            prediction_decides=prediction_decides, rows=self.rows, decidable=self.decidable,
                            drifted=self.drifted, drifted_columns=self.drifted_columns, columns=self.columns,
                            prediction=self.prediction)


class ReportInputs(_Contract):
    """The row samples (Parquet) the Evidently report draws: the reference's and the batch's."""

    reference: str
    current: str


class Analysis(_Contract):
    """Data drift, prediction drift and performance of a batch's typed rows (`normlab.monitoring.analyze_batch`).

    ``drifted`` is None when the batch is too small to decide
    (``decidable``); ``drifted_columns`` also names the prediction when it
    drifted; ``prediction`` is `normlab.drift.prediction_drift`'s result,
    ``performance`` None without labels. ``drift_json`` holds every column's
    score; ``report_columns`` are the columns the report draws.
    """

    rows: int
    decidable: bool
    drifted: bool | None
    drifted_columns: list[str]
    drift: DriftSummary
    prediction: PredictionDrift
    performance: Performance | None
    drift_json: str
    report_inputs: ReportInputs
    report_columns: list[str]


class EvidentlyReport(_Contract):
    """The Evidently report of a batch (`normlab.monitoring.build_report`): its files, its workspace snapshot.

    ``json_`` is the ``report.json`` path (``json`` in JSON); ``rows_sampled``
    the ``reference`` and ``current`` rows it was drawn on.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, serialize_by_alias=True)

    html: str
    json_: str = Field(alias="json")
    workspace: str
    project_id: str
    snapshot_id: str
    rows_sampled: dict[str, int]
    seconds: float


class AlertOutcome(JsonRecord):
    """What became of an alert (`alert_batch`, `quality_alert_batch`, `retraining_failed_alert`).

    ``due``: it was called for; then the `normlab.alerts.Delivery`: ``sent``
    (every target took it), ``targets``, ``delivered``, ``services`` (left
    out of summary entries, `in_entry`); ``reason`` (set only then) why
    nothing, or not everything, was sent.
    """

    due: bool
    sent: bool
    targets: int
    delivered: int
    services: list[ServiceResult] = []
    reason: str | None = None

    @classmethod
    def of(cls, delivery: Delivery) -> AlertOutcome:
        """A due alert, as `normlab.alerts.send` delivered it."""
        return cls.model_validate({"due": True, **delivery.model_dump(exclude_unset=True)})

    def in_entry(self) -> AlertOutcome:
        """The alert as a summary entry holds it: ``due``, ``sent``, ``targets``, ``delivered`` and any ``reason``."""
        return AlertOutcome.model_validate(self.model_dump(exclude_unset=True, exclude={"services"}))


# What a batch that raised no alert records for each alert kind.
NO_ALERT = AlertOutcome(due=False, sent=False, targets=0, delivered=0)


class EntryQuality(Quality):
    """A batch's `Quality` in its summary entry, with whether its alert was sent and why not."""

    alert_sent: bool
    alert_reason: str | None


class EntryDrift(JsonRecord):
    """A batch's drift in its summary entry: the decision, and the data drift (None without an analysis)."""

    level: str
    reason: str
    streak: int
    share: float | None
    n_drifted: int | None
    n_columns: int | None
    columns: list[ColumnScore]


class EntryPrediction(JsonRecord):
    """A batch's prediction drift in its summary entry: the verdict and the two effect sizes."""

    drifted: bool
    class_shift: float
    confidence_shift: float


class EntryReport(JsonRecord):
    """A batch's Evidently report in its summary entry; ``json_`` is ``json`` in JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, serialize_by_alias=True)

    html: str
    json_: str = Field(alias="json")
    snapshot_id: str


class BatchEntry(JsonRecord):
    """One batch in the monitor summary (`normlab.monitoring.finish_batch`, `skipped_entry`).

    A ``processed`` batch has every field but ``reason``. One not processed
    this time (``skipped``, ``pending``, ``unreadable``, ``refused``) has its
    ``reason`` and alerts and, when it was processed before, that earlier
    entry's fields; the others stay unset (absent from `to_json`). Kept in
    ``state.json`` as the ``entry`` of a done batch.
    """

    fingerprint: str | None
    source: str
    status: Literal["processed", "skipped", "pending", "unreadable", "refused"]
    rows_in: int | None = None
    rows_accepted: int | None = None
    rows_quarantined: int | None = None
    rows_typed: int | None = None
    rows_untyped: int | None = None
    quarantine_path: str | None = None
    gate_report: str | None = None
    quality: EntryQuality | None = None
    drift: EntryDrift | None = None
    prediction: EntryPrediction | None = None
    performance: Performance | None = None
    alert: AlertOutcome
    quality_alert: AlertOutcome
    report: EntryReport | None = None
    monitor_run_id: str | None = None
    change: str | None = None
    reason: str | None = None


class Triage(_Contract):
    """Batch files split without reading them (`normlab.monitoring.triage_batches`).

    ``new``: the paths to open; ``skipped``: the summary entries of files
    already settled (processed before, or recorded as unreadable or refused,
    with the same size and time).
    """

    new: list[str]
    skipped: list[BatchEntry]


class BatchOutcome(_Contract):
    """One batch through the batch subflow: its summary entry, and whether to retrain now."""

    entry: BatchEntry
    retrain: bool


class RetrainingData(_Contract):
    """The retraining set (`normlab.monitoring.retraining_data`): reference rows plus the drifted batches' rows.

    ``path`` is None when no new labelled rows exist; ``batches_unlabelled``
    counts the drifted batches left out for lack of labels.
    """

    rows_reference: int
    rows_new: int
    batches_used: int
    batches_unlabelled: int
    path: str | None


class RetrainedRun(_Contract):
    """What a retraining's training run reports (`normlab.monitoring.retrained_run`): run, model, rows, registry."""

    run_id: str
    model_uri: str
    rows: int
    rows_accepted: int
    registry: Publication | None


class RetrainingRecord(JsonRecord):
    """A retraining started by monitoring (`normlab.monitoring.record_retraining`), as the history keeps it.

    ``error`` is None on success; then ``model_uri``, ``rows``,
    ``rows_accepted`` and ``registry`` are set. ``alert`` (the summary only,
    never the history): the alert that the retraining failed.
    """

    at: str
    data: str | None
    rows_reference: int
    rows_new: int
    run_id: str | None
    error: str | None
    model_uri: str | None = None
    rows: int | None = None
    rows_accepted: int | None = None
    registry: Publication | None = None
    alert: AlertOutcome | None = None


class MonitorSummary(_Contract):
    """One run of the monitoring flow: every batch file's entry, each retraining, the reference at the end.

    ``normlab monitor`` writes it as its summary JSON, each entry and retraining with `JsonRecord.to_json`.
    """

    data: str
    reference: Reference | None
    batches: list[BatchEntry]
    retrained: list[RetrainingRecord]
