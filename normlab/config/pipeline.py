"""`PipelineConfig`, a whole pipeline run, and its defaults: the default pipeline, ``configs/digits.yaml``.

``PipelineConfig()`` is ``load_config(None)`` (tests/unit/test_config.py holds the
two equal): scikit-learn's bundled 8x8 digits with their expectation suite, an
MLP with BatchNorm, evaluated on the ID test split and on 10 corruptions of it
at severities 1-3, promoted on ID and mean OOD accuracy. Change a default here
and in configs/digits.yaml together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from normlab.config.gate import (
    _COMPARE_KEY,
    _THRESHOLD_KEY,
    AlertsConfig,
    GateConfig,
    MonitorConfig,
    PromotionConfig,
)
from normlab.config.packaged import packaged_path
from normlab.config.sections import (
    CheckpointConfig,
    CorruptionSplit,
    DataConfig,
    EvalConfig,
    ModelConfig,
    SplitsConfig,
    SweepConfig,
    TrackingConfig,
    TrainConfig,
    _Strict,
)
from normlab.credentials import redact_uri

# The default pipeline's OOD splits: split name -> corruption, each at severities 1, 2 and 3.
DEFAULT_CORRUPTIONS = {
    "noise": "gaussian_noise", "shot": "shot_noise", "impulse": "impulse_noise", "contrast": "contrast",
    "brightness": "brightness", "inversion": "inversion", "rotation": "rotation", "translation": "translation",
    "blur": "blur", "occlusion": "occlusion",
}


def default_data() -> DataConfig:
    """The default pipeline's data: the built-in digits as 8x8 images, their packaged suite, one pooled scale."""
    return DataConfig(source="digits", image_shape=(8, 8), value_range=(0, 16),
                      expectations=str(packaged_path("expectations/digits.json")), scale="global")


def default_splits() -> SplitsConfig:
    """The default pipeline's splits: the ID fractions' defaults and 10 corruptions at severities 1-3."""
    return SplitsConfig(ood=[CorruptionSplit(name=name, kind="corruption", corruption=kind, severity=[1, 2, 3])
                             for name, kind in DEFAULT_CORRUPTIONS.items()])


def default_promotion() -> PromotionConfig:
    """The default pipeline's promotion gate: ID test accuracy >= 0.9 and mean OOD accuracy >= 0.3."""
    return PromotionConfig(thresholds={"id/test/accuracy": 0.9, "ood/mean/accuracy": 0.3})


class PipelineConfig(_Strict):
    """A whole pipeline run."""

    name: str = "digits"
    seed: int = 0
    workdir: str = Field(".normlab", description="local folder for the store, checkpoints and references")
    data: DataConfig = Field(default_factory=default_data)
    splits: SplitsConfig = Field(default_factory=default_splits)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    promotion: PromotionConfig = Field(default_factory=default_promotion)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)

    @model_validator(mode="before")
    @classmethod
    def _own_data_starts_unsplit_and_ungated(cls, raw: Any) -> Any:
        # The default OOD splits and promotion thresholds belong to the default data (digits images): a
        # config that names data of its own gets none of either unless it sets them.
        if isinstance(raw, dict) and "data" in raw:
            raw = {"splits": SplitsConfig(), "promotion": PromotionConfig(), **raw}
        return raw

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        # The name becomes folder and file names: keep it to one plain path segment.
        if not v or not all(c.isalnum() or c in "-_." for c in v) or v in {".", ".."}:
            raise ValueError("use letters, digits, '-', '_' or '.' only")
        return v

    @model_validator(mode="after")
    def _cnn_needs_images(self) -> PipelineConfig:
        model, shape = self.model, self.data.image_shape
        if model.family != "mlp" and shape is None:
            raise ValueError(f"model.family '{model.family}' needs data.image_shape, e.g. [8, 8]")
        if model.family == "vit" and (shape[0] % model.patch_size or shape[1] % model.patch_size):
            raise ValueError(f"model.patch_size {model.patch_size} does not divide data.image_shape "
                             f"{list(shape)} (the vit cuts images into square patches)")
        if model.family == "vit" and model.width % model.heads:
            raise ValueError(f"model.width {model.width} is not divisible by model.heads {model.heads}")
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

