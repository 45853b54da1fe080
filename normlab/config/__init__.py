"""The configuration tree: pydantic models, YAML loading and ``--set`` overrides.

One `PipelineConfig` describes a whole pipeline run; ``PipelineConfig()`` is the
default pipeline, the packaged ``configs/digits.yaml``. Import from here: the
modules below are the layout, this is the interface.

- `normlab.config.sections`: data, splits, model, train, eval, sweep, checkpoint, tracking.
- `normlab.config.gate`: the data gate's checks, drift monitoring, alerts, promotion.
- `normlab.config.pipeline`: `PipelineConfig` and the default pipeline's sections.
- `normlab.config.loading`: the safe YAML loader, overrides, `load_config`, `validate_config`, `flatten`.
- `normlab.config.packaged`: where the packaged default config and its suite are installed.
"""

from __future__ import annotations

from normlab.config.gate import (
    GATE_METRICS,
    AlertsConfig,
    ClassBalanceCheck,
    EmptyClassCheck,
    GateCheck,
    GateConfig,
    ImageFileCheck,
    ImageModeCheck,
    ImageSizeCheck,
    LabelNoiseCheck,
    LeakageCheck,
    MonitorConfig,
    MonitorSeverity,
    PromotionConfig,
    RejectedShareCheck,
    RowCountCheck,
    Severity,
    TableGateCheck,
)
from normlab.config.loading import (
    MAX_YAML_NODES,
    apply_overrides,
    flatten,
    load_config,
    parse_override,
    read_yaml,
    safe_yaml,
    short_repr,
    to_yaml,
    validate_config,
)
from normlab.config.packaged import DEFAULT_CONFIG, default_config_path, packaged_path
from normlab.config.pipeline import PipelineConfig, default_data, default_promotion, default_splits
from normlab.config.sections import (
    CheckpointConfig,
    ColumnSplit,
    CorruptionLevel,
    CorruptionSplit,
    CorruptionSuite,
    DataConfig,
    EvalConfig,
    ModelConfig,
    NormName,
    OODSplit,
    QuantileSplit,
    SplitsConfig,
    SweepConfig,
    TimeSplit,
    TrackingConfig,
    TrainConfig,
)
from normlab.credentials import redact_uri, strip_credentials

__all__ = [
    "DEFAULT_CONFIG",
    "GATE_METRICS",
    "MAX_YAML_NODES",
    "AlertsConfig",
    "CheckpointConfig",
    "ClassBalanceCheck",
    "ColumnSplit",
    "CorruptionLevel",
    "CorruptionSplit",
    "CorruptionSuite",
    "DataConfig",
    "EmptyClassCheck",
    "EvalConfig",
    "GateCheck",
    "GateConfig",
    "ImageFileCheck",
    "ImageModeCheck",
    "ImageSizeCheck",
    "LabelNoiseCheck",
    "LeakageCheck",
    "ModelConfig",
    "MonitorConfig",
    "MonitorSeverity",
    "NormName",
    "OODSplit",
    "PipelineConfig",
    "PromotionConfig",
    "QuantileSplit",
    "RejectedShareCheck",
    "RowCountCheck",
    "Severity",
    "SplitsConfig",
    "SweepConfig",
    "TableGateCheck",
    "TimeSplit",
    "TrackingConfig",
    "TrainConfig",
    "apply_overrides",
    "default_config_path",
    "default_data",
    "default_promotion",
    "default_splits",
    "flatten",
    "load_config",
    "packaged_path",
    "parse_override",
    "read_yaml",
    "redact_uri",
    "safe_yaml",
    "short_repr",
    "strip_credentials",
    "to_yaml",
    "validate_config",
]
