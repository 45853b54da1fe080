"""Typed hand-offs between the stages of drift monitoring (what the Prefect tasks pass on).

Each stage of `normlab.monitoring` returns one of these frozen models; the
next stage reads its attributes. What is persisted as JSON (ledger entries,
``state.json``, the monitor summary, alert payloads) is built from them with
``model_dump()`` at that boundary, in the shape it always had. Pydantic, so
that Prefect can validate and serialize them as task inputs and as the
``reference`` parameter of the batch subflow.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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

    def summary(self) -> dict[str, Any]:
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
    batch processed before, ``previous``: its ledger record). ``fingerprint``
    is None when the file was not read. A claimed batch has ``path`` (its
    snapshot), ``rows``, ``columns``, ``batch_dir``, ``landed_ns`` (the file's
    modification time, its place in the landing order) and ``change`` (None
    for a file not processed before).
    """

    skip: bool
    status: Literal["claimed", "skipped", "pending", "unreadable", "refused"]
    fingerprint: str | None
    source: str
    reason: str | None = None
    previous: dict[str, Any] | None = None
    path: str | None = None
    rows: int | None = None
    columns: list[str] = []
    batch_dir: str | None = None
    landed_ns: int | None = None
    change: str | None = None


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

    def committed(self) -> dict[str, Any]:
        """The decision as the state records it (``batches.<fingerprint>.decision``): without ``retrain``."""
        return self.model_dump(exclude={"retrain"})


class DriftSummary(_Contract):
    """Data drift over the model's features: the share of drifted columns, the verdict, the top columns by score."""

    share: float
    n_columns: int
    n_drifted: int
    drifted: bool
    columns: list[dict[str, Any]]


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
    prediction: dict[str, Any]
    performance: dict[str, Any] | None
    drift_json: str
    report_inputs: ReportInputs
    report_columns: list[str]


class Triage(_Contract):
    """Batch files split without reading them (`normlab.monitoring.triage_batches`).

    ``new``: the paths to open; ``skipped``: the summary entries of files
    already settled (processed before, or recorded as unreadable or refused,
    with the same size and time).
    """

    new: list[str]
    skipped: list[dict[str, Any]]
