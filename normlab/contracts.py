"""Typed hand-offs between the stages of the training pipeline (what the Prefect tasks pass on).

Each stage of `normlab.pipeline`, `normlab.splitting` and `normlab.resume`
returns one of these frozen models; the next stage reads its attributes.
They hold only what is small and JSON-able (paths, fingerprints, ids, counts,
numbers, short lists): frames, arrays and models stay on disk. Pydantic, so
that Prefect can validate and serialize them as task inputs and flow
parameters; where a JSON document is written (the run summary:
`RunSummary.record`), it is built from them in the shape it always had.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.dataclasses import dataclass

from normlab.contract_base import Contract
from normlab.model_spec import ModelSpec
from normlab.sweep_contracts import DataSummary, GridPoint


class _Contract(Contract, BaseModel):  # BaseModel for ruff's sake: see `normlab.contract_base`
    """The base of this module's models: `normlab.contract_base.Contract`."""


class ImageSource(_Contract):
    """Where a batch of image files came from (`normlab.images`).

    Before the gate, the batch's rows are the files found (`normlab.images.scan.Manifest`);
    the gate's accepted batch holds their pixel rows, decoded in ``mode``.
    """

    root: str  # the folder the files' paths are relative to
    empty_classes: list[str] = []  # class folders with no image file
    mode: str | None = None  # L or RGB, once decoded


class Batch(_Contract):
    """A batch snapshotted into a run folder (``batch.parquet``), or the gate's accepted rows."""

    path: str
    source: str
    fingerprint: str
    rows: int
    columns: list[str]
    images: ImageSource | None = None  # image files: what the scan found; None for a table of values

    def data_summary(self) -> DataSummary:
        """The batch in run and sweep summaries: fingerprint, rows and source."""
        return DataSummary(fingerprint=self.fingerprint, rows=self.rows, source=self.source)


def as_batch(batch: Batch | BaseModel | Mapping[str, Any]) -> Batch:
    """A `Batch`, from a `Batch` or from a model or mapping with its fields (and maybe more: a monitored batch)."""
    if isinstance(batch, Batch):
        return batch
    data = batch.model_dump() if isinstance(batch, BaseModel) else batch
    return Batch(**{key: data[key] for key in Batch.model_fields if key in data})


class RunHandle(_Contract):
    """An open MLflow run and its local folder (`normlab.resume.open_run`).

    ``batch`` is the input, read once when the run was opened (its
    fingerprint found the interrupted run) and snapshotted into the folder.
    """

    run_id: str
    run_dir: str
    resumed: bool = False
    config_hash: str | None = None
    fingerprint: str | None = None
    batch: Batch | None = None


class Splits(_Contract):
    """What `normlab.splitting.prepare_splits` wrote: the encoded splits, the encoders, the reference rows.

    ``counts``: rows per split key (``id/train``, ``ood/noise``...);
    ``ood_thresholds``: the cut of each quantile OOD split; ``eval_frames``:
    scored split key to the Parquet of its raw rows; ``populations``: a derived
    split key to the split whose rows it copies (``id/test``).
    """

    path: str
    encoder: str
    reference: str
    features: list[str]
    n_features: int
    classes: list[str]
    counts: dict[str, int]
    ood_thresholds: dict[str, float]
    eval_frames: dict[str, str]
    populations: dict[str, str]


# A frozen pydantic dataclass rather than a `_Contract`, validated the same way: the
# checkpoint callback of `normlab.training.train_model` gets these records, and
# `normlab.tracking.epoch_logger` turns them into dicts with ``dataclasses.asdict``.
@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Epoch:
    """One epoch of training (`normlab.training.train_model`): its losses, accuracies and wall time."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float


class TrainingResult(_Contract):
    """What training produced (`normlab.training.train_model`): the history and the convergence figures."""

    history: list[Epoch]
    epochs_to_target: int | None = None
    seconds_to_target: float | None = None
    train_seconds: float = 0.0
    samples_per_second: float = 0.0
    resumed_from_epoch: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Every field, the history as one dict per epoch: the ``result`` entry of a training checkpoint."""
        return self.model_dump()


class Trained(_Contract):
    """What `normlab.pipeline.train` wrote: the weights, the arguments that rebuild the model, the history."""

    model_path: str
    spec: ModelSpec  # what rebuilds the network (`normlab.pipeline.model_spec`), as in model.json
    result: TrainingResult


class Recorded(_Contract):
    """What `normlab.pipeline.record_run` logged: the MLflow model."""

    model_uri: str


class Evaluation(_Contract):
    """What `normlab.pipeline.evaluate` scored, and the files the later stages read (paths in the run folder)."""

    metrics: dict[str, float]  # every metric by key: id/test/accuracy, ood/<split>/..., train/..., time/...
    predictions: str  # predictions.npz: the predicted class of each row of each scored split (the promotion gate)
    confusion: str  # confusion_id_test.npy: the ID test confusion matrix (its plot)
    inference: str | None = None  # inference.json: what the folded and int8 variants measured (eval.inference)


class Fitted(_Contract):
    """What `normlab.stages.fit` produced on an accepted batch: the splits, the model, its evaluation, its MLflow model."""

    prepared: Splits
    trained: Trained
    evaluation: Evaluation
    recorded: Recorded

    @property
    def metrics(self) -> dict[str, float]:
        """The evaluation's metrics."""
        return self.evaluation.metrics


class ModelVersion(_Contract):
    """A registered model version (`normlab.registry.version_for_run`, `normlab.registry.alias_version`)."""

    name: str
    version: str
    run_id: str
    model_id: str | None = None
    source: str


class Registration(_Contract):
    """The run's model version (`normlab.pipeline.register_model`); only ``enabled`` when promotion is off.

    ``reused``: the run already had this version (a retried or resumed run).
    """

    enabled: bool
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    model_id: str | None = None
    source: str | None = None
    reused: bool | None = None

    def model_version(self) -> ModelVersion:
        """The version registered (only when ``enabled``)."""
        return ModelVersion(**self.model_dump(include=set(ModelVersion.model_fields)))


class PromotionCheck(_Contract):
    """One check of the promotion gate (`normlab.promotion`): health, a threshold, or a metric against the champion.

    Only the fields a check sets are written (``exclude_unset``): a threshold
    has ``value`` and ``at_least``; a champion comparison ``challenger``,
    ``champion``, ``delta``, the interval and ``verdict``; a split this run
    lacks is ``skipped``.
    """

    kind: str
    metric: str | None
    value: float | None = None
    at_least: float | None = None
    challenger: float | None = None
    champion: float | None = None
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    tolerance: float | None = None
    passed: bool
    skipped: bool | None = None
    verdict: str | None = None
    reason: str


class ChampionScore(ModelVersion):
    """The champion a challenger was compared against, with its metrics re-scored on the challenger's splits."""

    metrics: dict[str, float] = {}


class GateRecord(_Contract):
    """The promotion gate's decision as ``gate.json`` and the governance record hold it (`Decision.record`).

    Every field is required, so `to_json` writes them all, and each check with the fields it set.
    """

    passed: bool
    reason: str
    checks: list[PromotionCheck]
    champion: ChampionScore | None
    tolerance: float
    confidence: float
    bootstrap_samples: int
    decided_at: str


class Decision(_Contract):
    """The promotion gate's decision (`normlab.promotion.decide`, as in ``gate.json``); only ``enabled`` when off.

    ``checks`` has one `PromotionCheck` per check; ``champion`` is the champion compared against (or None).
    """

    enabled: bool
    passed: bool | None = None
    reason: str | None = None
    checks: list[PromotionCheck] = []
    champion: ChampionScore | None = None
    tolerance: float | None = None
    confidence: float | None = None
    bootstrap_samples: int | None = None
    decided_at: str | None = None

    def record(self) -> GateRecord:
        """The decision as ``gate.json`` and the governance record hold it (without ``enabled``)."""
        return GateRecord(**{name: getattr(self, name) for name in GateRecord.model_fields})


class Publication(_Contract):
    """What `normlab.pipeline.publish_decision` did: the record written, the aliases the version now holds.

    Only ``enabled`` when promotion is off; `summary` is the ``registry`` entry of the run summary.
    """

    enabled: bool
    name: str | None = None
    version: str | None = None
    aliases: list[str] = []
    record: str | None = None
    passed: bool | None = None
    reason: str | None = None

    def summary(self) -> dict[str, Any]:
        """The run summary's ``registry``: ``{"enabled": False}``, or every field."""
        return self.model_dump() if self.enabled else {"enabled": False}


class CheckRow(_Contract):
    """One row of the per-check table (`normlab.gate.check_table`): a failed check, or passed ones grouped."""

    check: str
    column: str
    severity: str
    outcome: str
    rows: int
    detail: str


class ValidationEntry(_Contract):
    """The ``validation`` entry of a training run's summary (`normlab.gate.GateResult.entry`)."""

    success: bool
    failed: list[str]
    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    quarantine_path: str | None
    checks: list[CheckRow]


class RunSummary(_Contract):
    """What a training run produced (`normlab.flows.training.training_flow`); `record` is its JSON.

    ``tracking_uri``: the store, credentials redacted; ``data``: the batch
    read; ``validation``: the data gate's outcome; ``splits``: rows per split
    key; ``metrics``: every metric by key (``id/test/accuracy``...);
    ``registry``: what was published (only ``enabled`` when promotion is off).
    """

    run_id: str
    resumed: bool
    tracking_uri: str
    model_uri: str
    data: DataSummary
    validation: ValidationEntry
    splits: dict[str, int]
    metrics: dict[str, float]
    registry: Publication

    def record(self) -> dict[str, Any]:
        """The JSON ``normlab run --summary`` writes after ``status``; ``registry`` as `Publication.summary` has it."""
        return {
            "run_id": self.run_id,
            "resumed": self.resumed,
            "tracking_uri": self.tracking_uri,
            "model_uri": self.model_uri,
            "data": self.data.model_dump(),
            "validation": self.validation.model_dump(),
            "splits": dict(self.splits),
            "metrics": dict(self.metrics),
            "registry": self.registry.summary(),
        }


class SweepParent(RunHandle):
    """A sweep's parent run: a run handle plus the grid (`normlab.sweep_contracts.GridPoint` per point)."""

    points: list[GridPoint]
