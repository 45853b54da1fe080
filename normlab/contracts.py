"""Typed hand-offs between the stages of the training pipeline (what the Prefect tasks pass on).

Each stage of `normlab.pipeline`, `normlab.splitting` and `normlab.resume`
returns one of these frozen models; the next stage reads its attributes.
They hold only what is small and JSON-able (paths, fingerprints, ids, counts,
numbers, short lists): frames, arrays and models stay on disk. Pydantic, so
that Prefect can validate and serialize them as task inputs and flow
parameters; where a JSON document is written (the run summary), it is built
from them with ``model_dump()`` in the shape it always had.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from normlab.sweep_contracts import GridPoint


class _Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Batch(_Contract):
    """A batch snapshotted into a run folder (``batch.parquet``), or the gate's accepted rows."""

    path: str
    source: str
    fingerprint: str
    rows: int
    columns: list[str]

    def data_summary(self) -> dict[str, str | int]:
        """The batch in run summaries: fingerprint, rows and source."""
        return {"fingerprint": self.fingerprint, "rows": self.rows, "source": self.source}


def as_batch(batch: Batch | BaseModel | Mapping[str, Any]) -> Batch:
    """A `Batch`, from a `Batch` or from a model or mapping with its fields (and maybe more: a monitored batch)."""
    if isinstance(batch, Batch):
        return batch
    data = batch.model_dump() if isinstance(batch, BaseModel) else batch
    return Batch(**{key: data[key] for key in Batch.model_fields})


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


class Epoch(_Contract):
    """One epoch of training (`normlab.training.EpochRecord`)."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float


class TrainingResult(_Contract):
    """The history and the convergence figures (`normlab.training.TrainResult`)."""

    history: list[Epoch]
    epochs_to_target: int | None = None
    seconds_to_target: float | None = None
    train_seconds: float = 0.0
    samples_per_second: float = 0.0
    resumed_from_epoch: int = 0


class Trained(_Contract):
    """What `normlab.pipeline.train` wrote: the weights, the arguments that rebuild the model, the history."""

    model_path: str
    spec: dict[str, Any]  # `normlab.pipeline.model_spec`: build_model's keyword arguments, as in model.json
    result: TrainingResult


class Recorded(_Contract):
    """What `normlab.pipeline.record_run` logged: the MLflow model."""

    model_uri: str


class Fitted(_Contract):
    """What `normlab.stages.fit` produced on an accepted batch: the splits, the model, its metrics, its MLflow model."""

    prepared: Splits
    trained: Trained
    metrics: dict[str, float]
    recorded: Recorded


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


class Decision(_Contract):
    """The promotion gate's decision (`normlab.promotion.decide`, as in ``gate.json``); only ``enabled`` when off.

    ``checks`` and ``champion`` are the gate's JSON records, as in the governance record.
    """

    enabled: bool
    passed: bool | None = None
    reason: str | None = None
    checks: list[dict[str, Any]] = []
    champion: dict[str, Any] | None = None
    tolerance: float | None = None
    confidence: float | None = None
    bootstrap_samples: int | None = None
    decided_at: str | None = None

    def record(self) -> dict[str, Any]:
        """The decision as ``gate.json`` and the governance record hold it (without ``enabled``)."""
        return self.model_dump(exclude={"enabled"})


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


class SweepParent(RunHandle):
    """A sweep's parent run: a run handle plus the grid (`normlab.sweep_contracts.GridPoint` per point)."""

    points: list[GridPoint]
