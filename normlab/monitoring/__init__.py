"""Monitoring new batches: the ledger, the drift reference, the per-batch judgement, records, alerts, retraining.

Each stage is a plain function over files that returns a small frozen,
typed contract (`normlab.monitoring.contracts`), which is what a Prefect task
passes on (see ``flows/monitoring.py``); what is persisted as JSON (ledger
entries, ``state.json``, the summary) is dumped from them at that boundary
and read back into them. The modules, by role:

    contracts    the typed hand-offs between the stages, and the summary entries
    state        the typed records of state.json
    landing      what a landing folder holds: batch files, image batch folders
    ledger       folders, the locked state, claims (exactly once)
    image_batches  opening an image batch (scan, fingerprint, claim); the pixels drift is measured on
    reference    the champion's (else the latest run's) training rows, model and encoders
    analysis     the gate in its monitoring context, data quality, drift, the report, the decision
    records      the batch's MLflow run, the committed state, its summary entries
    alerting     drift, data-quality and retraining alerts; whether to retrain
    retraining   retraining data from the drifted batches, and the record of each retraining

Work folder layout (``<workdir>/monitoring/``)::

    state.json                  batches seen (by fingerprint) and their claims and decisions; files seen
                                (size, time, fingerprint, or why unreadable/refused); per-model streaks and alerts
    state.lock                  serializes read-modify-write of state.json across processes
    batches/<fp16>/             one folder per batch: batch.parquet (snapshot), gate report,
                                typed.parquet, accepted.parquet, drift.json, report samples,
                                evidently/report.*
    references/<run_id>/        reference artifacts downloaded from MLflow when the run folder is gone
    retrain/<stamp>/data.parquet  reference + accepted new rows for a retraining run
"""

from __future__ import annotations

from normlab.monitoring.alerting import (
    alert_batch,
    quality_alert_batch,
    retraining_failed_alert,
    wants_retraining,
)
from normlab.monitoring.analysis import (
    analyze_batch,
    build_report,
    decide_batch,
    gate_batch,
    quality_of,
)
from normlab.monitoring.contracts import (
    NO_ALERT,
    AlertOutcome,
    Analysis,
    BatchEntry,
    BatchOutcome,
    Decision,
    DriftRecord,
    DriftSummary,
    EntryDrift,
    EntryPrediction,
    EntryQuality,
    EntryReport,
    EvidentlyReport,
    GateOutcome,
    GateProblem,
    LandedBatch,
    MonitorSummary,
    Performance,
    Quality,
    Reference,
    ReportInputs,
    RetrainedRun,
    RetrainingData,
    RetrainingRecord,
    Triage,
)
from normlab.monitoring.image_batches import is_image_batch, open_image_batch, open_landed_batch
from normlab.monitoring.landing import BATCH_SUFFIXES, discover_batches, image_layout
from normlab.monitoring.ledger import (
    SETTLE_S,
    earlier_claims,
    locked_state,
    model_history,
    monitor_dir,
    monitoring_experiment,
    now_utc,
    open_batch,
    read_state,
    release_batch,
    skipped_entry,
    triage_batches,
    workspace_dir,
    workspace_lock,
)
from normlab.monitoring.records import (
    batch_entry,
    batch_markdown,
    finish_batch,
    log_monitoring_run,
)
from normlab.monitoring.reference import (
    NoReferenceError,
    load_reference_model,
    reference_classes,
    resolve_reference,
)
from normlab.monitoring.retraining import (
    record_retraining,
    retrained_run,
    retraining_data,
)
from normlab.monitoring.state import (
    BatchRecord,
    FileRecord,
    ModelHistory,
    MonitorState,
    Processed,
)

__all__ = [
    "BATCH_SUFFIXES",
    "NO_ALERT",
    "SETTLE_S",
    "AlertOutcome",
    "Analysis",
    "BatchEntry",
    "BatchOutcome",
    "BatchRecord",
    "Decision",
    "DriftRecord",
    "DriftSummary",
    "EntryDrift",
    "EntryPrediction",
    "EntryQuality",
    "EntryReport",
    "EvidentlyReport",
    "FileRecord",
    "GateOutcome",
    "GateProblem",
    "LandedBatch",
    "ModelHistory",
    "MonitorState",
    "MonitorSummary",
    "NoReferenceError",
    "Performance",
    "Processed",
    "Quality",
    "Reference",
    "ReportInputs",
    "RetrainedRun",
    "RetrainingData",
    "RetrainingRecord",
    "Triage",
    "alert_batch",
    "analyze_batch",
    "batch_entry",
    "batch_markdown",
    "build_report",
    "decide_batch",
    "discover_batches",
    "earlier_claims",
    "finish_batch",
    "gate_batch",
    "image_layout",
    "is_image_batch",
    "load_reference_model",
    "locked_state",
    "log_monitoring_run",
    "model_history",
    "monitor_dir",
    "monitoring_experiment",
    "now_utc",
    "open_batch",
    "open_image_batch",
    "open_landed_batch",
    "quality_alert_batch",
    "quality_of",
    "read_state",
    "record_retraining",
    "reference_classes",
    "release_batch",
    "resolve_reference",
    "retrained_run",
    "retraining_data",
    "retraining_failed_alert",
    "skipped_entry",
    "triage_batches",
    "wants_retraining",
    "workspace_dir",
    "workspace_lock",
]
