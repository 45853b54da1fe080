"""The configuration tree: pydantic models, YAML loading and ``--set`` overrides.

One `PipelineConfig` describes a whole pipeline run. It is loaded from YAML,
overridden from the command line (``--set train.batch_size=8``) and passed whole
as the flow parameter, so Prefect validates it too. Every model forbids unknown
keys: a typo fails loudly instead of being ignored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from normlab.credentials import redact_uri, strip_credentials
from normlab.errors import ConfigError

NormName = Literal["none", "batch", "layer", "group", "instance", "rms", "dyt"]

DEFAULT_CONFIG = "configs/digits.yaml"


class _Strict(BaseModel):
    # No NaN or infinity in any number: `lr: .inf` would train a model whose loss is NaN from the first step.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataConfig(_Strict):
    """Where the batch comes from and which columns mean what."""

    source: str | None = Field("digits", description="built-in dataset name; ignored when `path` is set")
    path: str | None = Field(None, description="CSV or Parquet file; overrides `source`")
    label: str = Field("label", description="the label column")
    features: list[str] | None = Field(None, description="feature columns; default: all but the label")
    image_shape: tuple[int, int] | None = Field(None, description="(H, W) of image rows, for the CNN and corruptions")
    value_range: tuple[float, float] | None = Field(None, description="pixel range for corruptions; default from data")
    expectations: str | None = Field(None, description="Great Expectations suite (JSON); none: no suite")
    scale: bool | Literal["global"] = Field(
        True,
        description="standardize numeric features with the training split's mean and std per column; "
        "'global': one mean and std pooled over all numeric columns (images)",
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

    family: Literal["mlp", "cnn"] = "mlp"
    norm: NormName = "batch"
    groups: int = Field(8, ge=1, description="group count for `group` norm")
    hidden: list[int] = Field(default_factory=lambda: [128, 128], description="MLP hidden widths")
    channels: list[int] = Field(default_factory=lambda: [16, 32], description="CNN channels per block")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
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
        default_factory=lambda: list(get_args(NormName)), min_length=1, description="norms of the grid"
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


def _yaml_off(value: Any) -> Any:
    # YAML 1.1 reads a bare `off` as false; here it can only mean the severity "off".
    return "off" if value is False else value


Severity = Annotated[Literal["block", "quarantine", "warn", "off"], BeforeValidator(_yaml_off)]
_SEVERITY_HELP = "block: stop the batch; quarantine: take the flagged rows out and keep them; warn: report; off: skip"
_MONITOR_HELP = (
    "severity when monitoring new batches (normlab monitor); default: the check's monitoring default "
    "(see README, 'Which checks block where')"
)
MonitorSeverity = Annotated[Literal["block", "quarantine", "warn", "off"] | None, BeforeValidator(_yaml_off)]


class GateCheck(_Strict):
    """A data gate check and what its failure does (block, quarantine, warn; off skips it)."""

    severity: Severity = Field("quarantine", description=_SEVERITY_HELP)
    monitor_severity: MonitorSeverity = Field(None, description=_MONITOR_HELP)


class TableGateCheck(_Strict):
    """A check on the whole batch: it cannot single out rows, so quarantine rejects the whole batch."""

    severity: Severity = Field("block", description=_SEVERITY_HELP)
    monitor_severity: MonitorSeverity = Field(None, description=_MONITOR_HELP)


class LabelNoiseCheck(_Strict):
    """Label noise or poisoning: rows whose label disagrees with most of their k nearest neighbours."""

    severity: Severity = Field("block", description=_SEVERITY_HELP)
    monitor_severity: MonitorSeverity = Field(None, description=_MONITOR_HELP)
    k: int = Field(5, ge=1, le=50, description="neighbours looked at, in standardized numeric features")
    max_share: float = Field(0.2, ge=0.0, le=1.0, description="largest share of disagreeing rows that passes")
    sample_rows: int = Field(5000, ge=10, description="rows scored at most (a seeded sample of larger batches)")
    confidence: float = Field(
        0.95, gt=0.5, lt=1.0,
        description="the check fails only when the disagreeing share exceeds max_share with this confidence "
        "(one-sided binomial test), so a small batch needs stronger evidence than a large one",
    )


class ClassBalanceCheck(_Strict):
    """Every known class keeps at least `min_share` of the accepted rows."""

    severity: Severity = Field("block", description=_SEVERITY_HELP)
    monitor_severity: MonitorSeverity = Field(None, description=_MONITOR_HELP)
    min_share: float = Field(0.01, ge=0.0, lt=1.0)


class RowCountCheck(_Strict):
    """Bounds on the number of accepted rows."""

    severity: Severity = Field("block", description=_SEVERITY_HELP)
    monitor_severity: MonitorSeverity = Field(None, description=_MONITOR_HELP)
    min_rows: int = Field(20, ge=0, description="fewer accepted rows than this cannot train and evaluate")
    max_rows: int | None = Field(None, ge=1, description="none: no upper bound")


class RejectedShareCheck(_Strict):
    """A batch that loses more than `max_share` of its rows to quarantine is broken as a whole."""

    severity: Severity = Field("block", description=_SEVERITY_HELP)
    monitor_severity: MonitorSeverity = Field(None, description=_MONITOR_HELP)
    max_share: float = Field(0.2, ge=0.0, le=1.0)


class LeakageCheck(_Strict):
    """After the split: evaluation rows whose features also appear in the training split."""

    severity: Annotated[Literal["block", "warn", "off"], BeforeValidator(_yaml_off)] = Field(
        "block", description="the split is already made, so leaking rows cannot be quarantined one by one"
    )
    max_share: float = Field(0.0, ge=0.0, le=1.0, description="largest share of leaking evaluation rows that passes")


class GateConfig(_Strict):
    """The data gate: per-check severities and thresholds, and where rejected rows are kept."""

    quarantine_dir: str | None = Field(None, description="folder for rejected rows; default: <workdir>/quarantine")
    engine: Literal["auto", "gx"] = Field(
        "auto",
        description="auto: vectorized numpy for the expectation types normlab supports (same results), "
        "Great Expectations for the rest; gx: Great Expectations for every expectation",
    )
    expectations: dict[str, Severity] = Field(
        default_factory=dict,
        description="severity overrides for suite expectations, keyed by type or 'type:column'",
    )
    columns: TableGateCheck = Field(default_factory=TableGateCheck, description="missing or unexpected columns")
    types: GateCheck = Field(default_factory=GateCheck, description="text in a numeric column")
    non_finite: GateCheck = Field(default_factory=GateCheck, description="NaN or +/-inf in a numeric column")
    duplicates: GateCheck = Field(default_factory=GateCheck, description="exact copies of an earlier row")
    contamination: GateCheck = Field(
        default_factory=GateCheck, description="rows already in an evaluation split of an earlier run"
    )
    label_noise: LabelNoiseCheck = Field(default_factory=LabelNoiseCheck)
    class_balance: ClassBalanceCheck = Field(default_factory=ClassBalanceCheck)
    row_count: RowCountCheck = Field(default_factory=RowCountCheck)
    rejected_share: RejectedShareCheck = Field(default_factory=RejectedShareCheck)
    leakage: LeakageCheck = Field(default_factory=LeakageCheck)

    @field_validator("expectations")
    @classmethod
    def _expectation_keys(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not k.startswith("expect_")]
        if bad:
            raise ValueError(f"keys are expectation types or 'type:column' (expect_...); got {bad[0]!r}")
        return v

    def quarantine_path(self, workdir: Path) -> Path:
        """The quarantine folder as an absolute path."""
        return Path(self.quarantine_dir).expanduser().resolve() if self.quarantine_dir else workdir / "quarantine"


class MonitorConfig(_Strict):
    """Drift monitoring of new batches against the training data of the champion (or latest) run."""

    min_rows: int = Field(200, ge=1, description="batches with fewer accepted rows get no drift decision")
    alpha: float = Field(0.01, gt=0.0, lt=1.0, description="per-column significance level (KS or chi-square test)")
    effect_floor: float = Field(
        0.1, ge=0.0, le=1.0,
        description="smallest effect that counts as drift: KS statistic (numeric) or total variation (categorical)",
    )
    drift_share: float = Field(0.3, gt=0.0, le=1.0, description="share of drifted feature columns that drifts a batch")
    prediction: bool = Field(True, description="a drifted predicted-class distribution drifts the batch too")
    consecutive: int = Field(2, ge=1, description="drifted batches in a row for `detected`; fewer are `suspected`")
    cooldown_minutes: float = Field(360.0, ge=0.0, description="no repeat alert for the same model and columns sooner")
    dedup_overlap: float = Field(
        0.5, ge=0.0, le=1.0, description="Jaccard overlap of drifted-column sets that makes two alerts the same"
    )
    top_columns: int = Field(5, ge=1, description="columns named in alerts and summaries")
    reference_rows: int = Field(50_000, ge=100, description="reference rows the tests use (a seeded sample above)")
    report_rows: int = Field(
        5_000, ge=100, description="rows sampled from batch and reference for the Evidently report"
    )
    report_columns: int = Field(10, ge=1, description="top-scoring feature columns drawn in the Evidently report")
    experiment: str | None = Field(
        None, description="MLflow experiment of monitoring runs; default: <tracking.experiment>-monitoring"
    )
    workspace: str | None = Field(None, description="Evidently workspace folder; default: <workdir>/evidently")
    retrain_on_drift: bool = Field(False, description="on `detected` drift, train on the reference plus the new rows")
    quality_share: float = Field(
        0.1, ge=0.0, le=1.0,
        description="share of quarantined rows that raises a data-quality alert even when the batch is not blocked",
    )


class AlertsConfig(_Strict):
    """Where drift alerts go (Apprise URLs) and when they are sent."""

    urls: list[SecretStr] = Field(
        default_factory=list,
        description="Apprise URLs (json://, slack://, mailto://...); "
        "prefer the NORMLAB_ALERT_URLS environment variable (never logged)",
    )
    min_level: Literal["suspected", "detected"] = Field("detected", description="lowest drift level that alerts")
    prefect_event: bool = Field(True, description="also emit the Prefect event normlab.drift.detected")


GATE_METRICS: tuple[str, ...] = ("accuracy", "f1_macro", "precision_macro", "recall_macro")
_GATED_SPLIT = r"(?P<split>id/(?:train|val|test)|ood/(?:mean|\*|(?P<ood>[^/]+)(?:/s(?P<level>[1-5]))?))"
_THRESHOLD_KEY = re.compile(_GATED_SPLIT + r"/(?P<metric>[a-z0-9_]+?)(?:_ci_low)?")
_COMPARE_KEY = re.compile(_GATED_SPLIT + r"/(?P<metric>[a-z0-9_]+)")


class PromotionConfig(_Strict):
    """Registration and the promotion gate.

    Every run's model is registered under ``model.registry_name`` with the alias
    ``challenger``. It becomes ``champion`` only if every threshold holds and, on
    every compared metric, the bootstrap interval of (challenger - champion),
    both scored on this run's splits, does not lie entirely below ``-tolerance``.
    """

    enabled: bool = Field(True, description="register each run's model and run the gate")
    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="metric >= value, e.g. id/test/accuracy: 0.9; ood/*/accuracy means every OOD split; "
        "a _ci_low suffix gates on the interval's lower end",
    )
    compare: list[str] = Field(
        default_factory=lambda: ["id/test/accuracy", "ood/mean/accuracy", "ood/*/accuracy"],
        description="metrics compared with the champion; ood/* means each OOD split (a severity group once)",
    )
    tolerance: float = Field(0.01, ge=0.0, le=1.0, description="regression allowed before the interval counts")
    bootstrap_samples: int = Field(1000, ge=100, le=100_000, description="paired resamples per compared metric")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="coverage of the paired intervals")

    @field_validator("thresholds")
    @classmethod
    def _threshold_keys(cls, v: dict[str, float]) -> dict[str, float]:
        for key in v:
            match = _THRESHOLD_KEY.fullmatch(key)
            if not match or match["metric"] not in GATE_METRICS:
                raise ValueError(
                    f"{key!r} is not a gated metric: write <split>/<metric>[_ci_low] with split id/test, id/val, "
                    f"id/train, ood/mean, ood/* or ood/<name> and metric one of {', '.join(GATE_METRICS)}"
                )
        return v

    @field_validator("compare")
    @classmethod
    def _compare_keys(cls, v: list[str]) -> list[str]:
        for key in v:
            match = _COMPARE_KEY.fullmatch(key)
            if not match or match["metric"] not in GATE_METRICS or match["split"].startswith(("id/train", "id/val")):
                raise ValueError(
                    f"{key!r} cannot be compared: write <split>/<metric> with split id/test, ood/mean, ood/* or "
                    f"ood/<name> and metric one of {', '.join(GATE_METRICS)}"
                )
        return v


class PipelineConfig(_Strict):
    """A whole pipeline run."""

    name: str = "digits"
    seed: int = 0
    workdir: str = Field(".normlab", description="local folder for the store, checkpoints and references")
    data: DataConfig = Field(default_factory=DataConfig)
    splits: SplitsConfig = Field(default_factory=SplitsConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        # The name becomes folder and file names: keep it to one plain path segment.
        if not v or not all(c.isalnum() or c in "-_." for c in v) or v in {".", ".."}:
            raise ValueError("use letters, digits, '-', '_' or '.' only")
        return v

    @model_validator(mode="after")
    def _cnn_needs_images(self) -> PipelineConfig:
        if self.model.family == "cnn" and self.data.image_shape is None:
            raise ValueError("model.family 'cnn' needs data.image_shape, e.g. [8, 8]")
        if any(s.kind == "corruption" for s in self.splits.ood) and self.data.image_shape is None:
            raise ValueError("corruption OOD splits need data.image_shape, e.g. [8, 8]")
        return self

    @model_validator(mode="after")
    def _gated_splits_exist(self) -> PipelineConfig:
        # Severity groups by split name: the levels of a corruption listed with several severities.
        groups = {s.name: (set(s.severity) if s.kind == "corruption" and isinstance(s.severity, list) else set())
                  for s in self.splits.ood}
        keyed = [("promotion.thresholds", k, _THRESHOLD_KEY) for k in self.promotion.thresholds]
        keyed += [("promotion.compare", k, _COMPARE_KEY) for k in self.promotion.compare]
        for field, key, pattern in keyed:
            match = pattern.fullmatch(key)
            name, level = match["ood"], match["level"]
            if name is not None and name not in groups:
                raise ValueError(f"{field}: {key!r} names no OOD split; splits: {', '.join(groups) or 'none'}")
            if level is not None and int(level) not in groups[name]:
                raise ValueError(f"{field}: {key!r}: split {name!r} has no severity s{level} in a severity list")
        return self

    # Paths derived from the work folder; resolved at use, never at import.
    def workdir_path(self) -> Path:
        """The work folder as an absolute path."""
        return Path(self.workdir).expanduser().resolve()

    def tracking_uri(self) -> str:
        """The MLflow tracking URI, defaulting to SQLite in the work folder."""
        if self.tracking.uri:
            return self.tracking.uri
        return f"sqlite:///{self.workdir_path() / 'mlflow.db'}"

    def artifact_location(self) -> str | None:
        """Artifact root for new experiments on a local store (None: the server decides)."""
        if self.tracking.uri and not self.tracking.uri.startswith(("sqlite:", "file:", "/")):
            return None
        return (self.workdir_path() / "artifacts").as_uri()

    def redacted(self) -> PipelineConfig:
        """A copy fit to record (params, config.yaml, summaries): no credentials in URIs."""
        if not self.tracking.uri:
            return self
        tracking = self.tracking.model_copy(update={"uri": redact_uri(self.tracking.uri)})
        return self.model_copy(update={"tracking": tracking})


def _format_validation_error(err: ValidationError, source: str) -> str:
    """One line: the first offending key, its value and what is allowed."""
    first = err.errors()[0]
    key = ""
    for part in first["loc"]:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    key = key or "<root>"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}'"
    shown = short_repr(first.get("input"))
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {key}={shown}: {msg}{more}"


# A config expands to at most this many YAML nodes with its aliases followed: a few kilobytes of
# nested aliases (``b: [*a, *a, ...]``, ``c: [*b, *b, ...]``) would otherwise expand to billions.
MAX_YAML_NODES = 100_000


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing documents whose aliases expand past `MAX_YAML_NODES` (or into themselves)."""

    def compose_document(self):
        node = super().compose_document()
        if node is not None:
            _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node) -> None:
    """Count the nodes of ``root`` as if every alias were copied out, without copying anything."""
    sizes: dict[int, int] = {}
    pending: list[tuple[yaml.Node, bool]] = [(root, False)]
    on_path: set[int] = set()
    while pending:
        node, children_done = pending.pop()
        key = id(node)
        if key in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if children_done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_YAML_NODES:
                raise yaml.YAMLError(f"aliases expand to more than {MAX_YAML_NODES:,} values")
            continue
        if key in on_path:
            raise yaml.YAMLError("an alias refers to a node that contains it")
        on_path.add(key)
        pending.append((node, True))
        pending.extend((c, False) for c in children if id(c) not in sizes)
        for child in children:
            if id(child) in on_path:
                raise yaml.YAMLError("an alias refers to a node that contains it")


def safe_yaml(text: str) -> Any:
    """``yaml.safe_load`` with bounded alias expansion (no tags that run code, no alias bombs)."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def short_repr(value: Any, limit: int = 80) -> str:
    """A repr of ``value`` at most ``limit`` characters long, without walking all of a large or aliased value."""
    import reprlib

    shortener = reprlib.Repr()
    shortener.maxlevel = 2
    shortener.maxdict = shortener.maxlist = shortener.maxtuple = shortener.maxset = 4
    shortener.maxstring = shortener.maxother = limit
    text = shortener.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a key path and a YAML-typed value."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.batch_size=8")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {item!r}: empty key segment in {key!r}")
    try:
        value = safe_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to a raw config dict (new keys are caught by validation)."""
    for item in overrides:
        parts, value = parse_override(item)
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping safely, with one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = safe_yaml(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{p}: not valid YAML ({first})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of settings, got {type(raw).__name__}")
    return raw


def validate_config(raw: dict[str, Any], source: str = "config") -> PipelineConfig:
    """Validate a raw dict into a `PipelineConfig`, with a one-line error."""
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a YAML config (default ``configs/digits.yaml``) and apply overrides.

    A password in ``tracking.uri`` is moved out of the config (`strip_credentials`).

    When no path is given and the default file does not exist (an installed
    package used outside the repository), the built-in defaults are used.
    """
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    raw = read_yaml(path) if path is not None else default_raw()
    raw = apply_overrides(raw, list(overrides or []))
    cfg = validate_config(raw, source=str(path) if path else "config")
    # Before anything sees the config: no password in the tracking URI (see normlab/credentials.py).
    cfg.tracking.uri = strip_credentials(cfg.tracking.uri)
    return cfg


def default_raw() -> dict[str, Any]:
    """The built-in default pipeline: digits, an MLP with BatchNorm, 10 corruptions at severities 1-3."""
    corruptions = {"noise": "gaussian_noise", "shot": "shot_noise", "impulse": "impulse_noise",
                   "contrast": "contrast", "brightness": "brightness", "inversion": "inversion",
                   "rotation": "rotation", "translation": "translation", "blur": "blur", "occlusion": "occlusion"}
    return {
        "name": "digits",
        "data": {"source": "digits", "image_shape": [8, 8], "value_range": [0, 16], "scale": "global"},
        "splits": {
            "ood": [{"name": name, "kind": "corruption", "corruption": kind, "severity": [1, 2, 3]}
                    for name, kind in corruptions.items()]
        },
        "promotion": {"thresholds": {"id/test/accuracy": 0.9, "ood/mean/accuracy": 0.3}},
    }


def flatten(cfg: BaseModel | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a config into dotted keys (``train.batch_size``) for MLflow params."""
    data = cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else cfg
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, dotted + "."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
            for item in value:
                out.update(flatten({k: v for k, v in item.items() if k != "name"}, f"{dotted}.{item['name']}."))
        else:
            out[dotted] = value
    return out


def to_yaml(cfg: PipelineConfig) -> str:
    """The resolved config as YAML (what a rerun needs)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
