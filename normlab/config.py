"""The configuration tree: pydantic models, YAML loading and ``--set`` overrides.

One `PipelineConfig` describes a whole pipeline run. It is loaded from YAML,
overridden from the command line (``--set train.batch_size=8``) and passed whole
as the flow parameter, so Prefect validates it too. Every model forbids unknown
keys: a typo fails loudly instead of being ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from normlab.errors import ConfigError

NormName = Literal["none", "batch", "layer", "group", "instance", "rms", "dyt"]

DEFAULT_CONFIG = "configs/digits.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Where the batch comes from and which columns mean what."""

    source: str | None = Field("digits", description="built-in dataset name; ignored when `path` is set")
    path: str | None = Field(None, description="CSV or Parquet file; overrides `source`")
    label: str = Field("label", description="the label column")
    features: list[str] | None = Field(None, description="feature columns; default: all but the label")
    image_shape: tuple[int, int] | None = Field(None, description="(H, W) of image rows, for the CNN and corruptions")
    value_range: tuple[float, float] | None = Field(None, description="pixel range for corruptions; default from data")
    expectations: str | None = Field(None, description="Great Expectations suite (JSON); none: no suite")
    scale: bool = Field(True, description="standardize numeric features with the training split's mean and std")

    @model_validator(mode="after")
    def _has_a_source(self) -> DataConfig:
        if not self.path and not self.source:
            raise ValueError("set data.source (a built-in dataset) or data.path (a CSV/Parquet file)")
        return self


class CorruptionSplit(_Strict):
    """The ID test split with a synthetic corruption (image-shaped data only)."""

    name: str
    kind: Literal["corruption"]
    corruption: str = Field(description="one of normlab.data.shifts.CORRUPTIONS")
    severity: int = Field(3, ge=1, le=5)


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


OODSplit = Annotated[CorruptionSplit | ColumnSplit | QuantileSplit | TimeSplit, Field(discriminator="kind")]


class SplitsConfig(_Strict):
    """Deterministic, content-hashed ID splits plus named OOD splits."""

    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    salt: str = Field("normlab", description="changes every row's split when changed")
    ood: list[OODSplit] = Field(default_factory=list)

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


class TrackingConfig(_Strict):
    """Where runs are recorded."""

    uri: str | None = Field(None, description="MLflow tracking URI; default: SQLite in the work folder")
    experiment: str = "normlab"
    run_name: str | None = None


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
    value = first.get("input")
    shown = repr(value) if not isinstance(value, dict) else "{...}"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {key}={shown}: {msg}{more}"


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a key path and a YAML-typed value."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.batch_size=8")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {item!r}: empty key segment in {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
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
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
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

    When no path is given and the default file does not exist (an installed
    package used outside the repository), the built-in defaults are used.
    """
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    raw = read_yaml(path) if path is not None else default_raw()
    raw = apply_overrides(raw, list(overrides or []))
    return validate_config(raw, source=str(path) if path else "config")


def default_raw() -> dict[str, Any]:
    """The built-in default pipeline: digits, an MLP with BatchNorm, three corruptions."""
    return {
        "name": "digits",
        "data": {"source": "digits", "image_shape": [8, 8], "value_range": [0, 16]},
        "splits": {
            "ood": [
                {"name": "noise", "kind": "corruption", "corruption": "gaussian_noise", "severity": 3},
                {"name": "contrast", "kind": "corruption", "corruption": "contrast", "severity": 3},
                {"name": "rotation", "kind": "corruption", "corruption": "rotation", "severity": 3},
            ]
        },
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
