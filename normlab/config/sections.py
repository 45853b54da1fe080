"""The sections of a pipeline config that describe data, model, training and evaluation.

Every model forbids unknown keys (a typo fails loudly instead of being ignored)
and refuses NaN and infinity in any number.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    PlainValidator,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError


def _norm_names() -> tuple[str, ...]:
    """The names of the norm registry, `normlab.norms.NORM_FACTORIES`, in its order.

    Read when a value is validated or a default is made, not when the config is
    imported: the registry imports torch, and a norm registered there is a valid
    config value without anything here changing.
    """
    from normlab import norms

    return tuple(norms.NORM_FACTORIES)


def _registered_norm(value: object) -> str:
    """``value`` when it names a registered norm, else the error a ``Literal`` of the names gives."""
    names = _norm_names()
    if isinstance(value, str) and value in names:
        return value
    quoted = [repr(name) for name in names]
    expected = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})


class _NormNameSchema:
    """The JSON schema of a norm name (Prefect's flow parameter schema): the registry's names, as an enum."""

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"enum": list(_norm_names()), "type": "string"}


# A key of `normlab.norms.NORM_FACTORIES`, the one list of norms (YAML values, sweep grids).
NormName = Annotated[str, PlainValidator(_registered_norm, json_schema_input_type=str), _NormNameSchema()]


class _Strict(BaseModel):
    # No NaN or infinity in any number: `lr: .inf` would train a model whose loss is NaN from the first step.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataConfig(_Strict):
    """Where the batch comes from and which columns mean what."""

    source: str | None = Field("digits", description="built-in dataset name; ignored when `path` is set")
    path: str | None = Field(
        None, description="CSV or Parquet file, or a folder of images in class subfolders; overrides `source`"
    )
    label: str = Field("label", description="the label column")
    features: list[str] | None = Field(None, description="feature columns; default: all but the label")
    image_shape: tuple[int, int] | None = Field(
        None, description="(H, W) of image rows, for the image models and corruptions; image files are resized to it"
    )
    image_mode: Literal["L", "RGB"] | None = Field(
        None, description="image files: read as grayscale (L) or colour (RGB); default: RGB when any image has colour"
    )
    image_column: str | None = Field(
        None, description="a table whose rows name image files: the column of their paths (relative to the table)"
    )
    value_range: tuple[float, float] | None = Field(None, description="pixel range for corruptions; default from data")
    expectations: str | None = Field(None, description="Great Expectations suite (JSON); none: no suite")
    scale: bool | Literal["global"] = Field(
        True,
        description="standardize numeric features with the training split's mean and std per column; "
        "'global': one mean and std pooled over all numeric columns (images)",
    )
    memory_budget_mb: float = Field(
        1024, gt=0, description="encoded splits larger than this (MiB, all splits together) are written as .npy "
        "files and stream from disk during training; smaller ones are held in memory. A batch whose smallest "
        "encoding passes it is split and encoded a chunk at a time; image files are decoded in chunks of a share of it"
    )

    @model_validator(mode="after")
    def _has_a_source(self) -> DataConfig:
        if not self.path and not self.source:
            raise ValueError("set data.source (a built-in dataset) or data.path (a CSV/Parquet file)")
        return self


CorruptionLevel = Annotated[int, Field(ge=1, le=5)]


class CorruptionSplit(_Strict):
    """The ID test split with a synthetic corruption (image-shaped data only).

    With a list of severities the entry is a group: one split per severity
    (``ood/<name>/s<k>``) and their mean under ``ood/<name>``.
    """

    name: str
    kind: Literal["corruption"]
    corruption: str = Field(description="one of normlab.data.shifts.CORRUPTIONS")
    severity: CorruptionLevel | list[CorruptionLevel] = Field(
        3, description="1 (mild) to 5, or a list of them: one split per severity and their mean"
    )

    @field_validator("corruption")
    @classmethod
    def _known_corruption(cls, v: str) -> str:
        return _check_corruptions([v])[0]

    @field_validator("severity")
    @classmethod
    def _distinct_levels(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("list each severity once, e.g. [1, 2, 3]")
        return v

    def leaves(self) -> list[tuple[str, int]]:
        """(split name, severity) of every split this entry makes."""
        if isinstance(self.severity, int):
            return [(self.name, self.severity)]
        return [(f"{self.name}/s{level}", level) for level in self.severity]


class CorruptionSuite(_Strict):
    """Shorthand for one corruption split per corruption type, each at the same severities.

    Expanded when the config is loaded into `CorruptionSplit` entries named after
    their corruption (``ood/blur/s2``...), so nothing downstream sees it.
    """

    kind: Literal["corruption_suite"]
    corruptions: list[str] | None = Field(None, description="default: every type in normlab.data.shifts.CORRUPTIONS")
    severity: list[CorruptionLevel] = Field(default_factory=lambda: [1, 2, 3], min_length=1)

    @field_validator("corruptions")
    @classmethod
    def _known_corruptions(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _check_corruptions(v)

    def expand(self) -> list[CorruptionSplit]:
        """One `CorruptionSplit` per corruption type."""
        from normlab.data.shifts import CORRUPTIONS

        kinds = self.corruptions if self.corruptions is not None else list(CORRUPTIONS)
        return [CorruptionSplit(name=k, kind="corruption", corruption=k, severity=list(self.severity)) for k in kinds]


def _check_corruptions(kinds: list[str]) -> list[str]:
    """``kinds`` unchanged, or a ValueError naming the first unknown corruption type."""
    from normlab.data.shifts import CORRUPTIONS

    unknown = [k for k in kinds if k not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"unknown corruption {unknown[0]!r}; known: {', '.join(CORRUPTIONS)}")
    return kinds


class ColumnSplit(_Strict):
    """Rows whose `column` takes one of `values` form a held-out domain."""

    name: str
    kind: Literal["column"]
    column: str
    values: list[Any] = Field(min_length=1)


class QuantileSplit(_Strict):
    """Rows above (or below) the `q` quantile of a numeric `column` are held out."""

    name: str
    kind: Literal["quantile"]
    column: str
    q: float = Field(0.9, gt=0.0, lt=1.0)
    side: Literal["above", "below"] = "above"


class TimeSplit(_Strict):
    """Rows whose date `column` is later than `after` are held out."""

    name: str
    kind: Literal["time"]
    column: str
    after: str


OODSplit = Annotated[
    CorruptionSplit | CorruptionSuite | ColumnSplit | QuantileSplit | TimeSplit, Field(discriminator="kind")
]
# OOD split names become metric keys (ood/<name>/accuracy): one plain segment, and not the aggregate's name.
_SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_RESERVED_SPLIT_NAMES = ("mean",)


class SplitsConfig(_Strict):
    """Deterministic, content-hashed ID splits plus named OOD splits."""

    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    salt: str = Field("normlab", description="changes every row's split when changed")
    ood: list[OODSplit] = Field(default_factory=list)

    @field_validator("ood")
    @classmethod
    def _expand_suites(cls, v: list[Any]) -> list[Any]:
        expanded: list[Any] = []
        for split in v:
            expanded.extend(split.expand() if isinstance(split, CorruptionSuite) else [split])
        for split in expanded:
            if not _SPLIT_NAME.fullmatch(split.name) or split.name in _RESERVED_SPLIT_NAMES:
                raise ValueError(
                    f"OOD split name {split.name!r}: use letters, digits, '_', '-' or '.' (not 'mean')"
                )
        return expanded

    @model_validator(mode="after")
    def _fractions_leave_training_rows(self) -> SplitsConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must stay below 0.9 to leave rows for training")
        names = [s.name for s in self.ood]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"OOD split names must be unique; repeated: {', '.join(dupes)}")
        return self


class ModelConfig(_Strict):
    """The model family and the normalization layer it uses everywhere."""

    family: Literal["mlp", "cnn", "resnet", "vit"] = "mlp"
    norm: NormName = "batch"
    groups: int = Field(8, ge=1, description="group count for `group` norm")
    hidden: list[int] = Field(default_factory=lambda: [128, 128], description="MLP hidden widths")
    channels: list[int] = Field(default_factory=lambda: [16, 32],
                                description="CNN channels per block; resnet: width of each stage")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    blocks: int = Field(2, ge=1, description="resnet: basic blocks per stage")
    patch_size: int = Field(4, ge=1, description="vit: side of the square patches (divides data.image_shape)")
    width: int = Field(64, ge=1, description="vit: token width (divisible by heads)")
    depth: int = Field(2, ge=1, description="vit: encoder blocks")
    heads: int = Field(4, ge=1, description="vit: attention heads")
    mlp_ratio: int = Field(2, ge=1, description="vit: MLP hidden width, in multiples of width")
    norm_position: Literal["pre", "post"] = Field(
        "pre", description="vit: norm before attention and MLP (pre) or after each residual sum (post)")
    registry_name: str | None = Field(None, description="MLflow registered model; default: normlab-<name>")


class TrainConfig(_Strict):
    """The optimisation loop."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    target_accuracy: float = Field(0.95, gt=0.0, le=1.0, description="val accuracy that counts as converged")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; default: torch's choice")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="where to train and evaluate; auto: cuda when present, else cpu"
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="bf16, fp16: mixed precision (autocast; fp16 with gradient scaling)"
    )
    compile: bool = Field(False, description="torch.compile the model before training")


class EvalConfig(_Strict):
    """Evaluation settings."""

    ece_bins: int = Field(15, ge=2)
    batch_size: int = Field(512, ge=1)
    bootstrap_samples: int = Field(
        1000, ge=0, le=100_000, description="resamples for the intervals of accuracy and macro-F1; 0: none"
    )
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="coverage of the bootstrap intervals")
    per_class: bool = Field(True, description="precision, recall and F1 of each class on the ID test split")
    slices: list[str] = Field(
        default_factory=list, description="columns whose most frequent values each get metrics on the ID test split"
    )
    max_slice_values: int = Field(20, ge=1, description="values per slice column (the most frequent ones)")
    adapt_batchnorm: bool = Field(
        True, description="BatchNorm models: also score each OOD split with statistics re-estimated on it (AdaBN)"
    )
    inference: bool = Field(True, description="time the eager, BatchNorm-folded and int8 models")
    latency_iterations: int = Field(200, ge=10, le=1000, description="timed single-row calls per model")
    throughput_batch: int = Field(256, ge=1, description="batch size of the throughput measurement")
    fold_tolerance: float = Field(1e-5, gt=0.0, description="largest output difference folding may cause")


class SweepConfig(_Strict):
    """A grid of norms x batch sizes x seeds: one child run per point, run on Dask workers."""

    norms: list[NormName] = Field(
        default_factory=lambda: list(_norm_names()), min_length=1, description="norms of the grid"
    )
    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [2, 8, 64], min_length=1, description="training batch sizes of the grid"
    )
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1, description="seeds of the grid")
    lr_scaling: Literal["linear", "sqrt", "none"] = Field(
        "linear",
        description="scale train.lr by (batch_size / train.batch_size) or its square root for each point; "
        "linear is the rule Wu & He 2018 used to compare batch sizes",
    )
    workers: int = Field(2, ge=1, description="worker processes of the local Dask cluster, one thread each")
    address: str | None = Field(
        None, description="an existing Dask scheduler (tcp://host:8786) instead of a local cluster"
    )
    output: str | None = Field(None, description="report folder; default: <workdir>/sweeps/<parent run id>")

    @field_validator("norms", "batch_sizes", "seeds")
    @classmethod
    def _unique(cls, v: list[Any]) -> list[Any]:
        repeated = sorted({str(x) for x in v if v.count(x) > 1})
        if repeated:
            raise ValueError(f"values must be unique; repeated: {', '.join(repeated)}")
        return v


class CheckpointConfig(_Strict):
    """How often training saves a resumable checkpoint and logs its finished epochs to the run."""

    every_seconds: float = Field(
        2.0, ge=0.0,
        description="least seconds between checkpoints, and between writes of per-epoch metrics to the "
        "tracking store (0: after every epoch); the last epoch is always saved. A killed run redoes at most "
        "this much training; a small model's epochs then cost no store write each",
    )


class TrackingConfig(_Strict):
    """Where runs are recorded."""

    uri: str | None = Field(None, description="MLflow tracking URI; default: SQLite in the work folder")
    experiment: str = "normlab"
    run_name: str | None = None

