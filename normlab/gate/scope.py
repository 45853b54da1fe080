"""What the data gate reads of a pipeline's config: `GateScope`, built once by the wiring.

The gate's stages (`normlab.gate.run_gate`, `assess`, `check_splits`) and its
checks see this bundle, never the whole `PipelineConfig`: the gate section, the
columns that mean something (label, configured features, time-split columns),
the suite, the split salt and seed, and the two folders the gate writes.
`GateScope.from_config` is the one place that reads them from a config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from normlab.config import GateConfig, PipelineConfig, TimeSplit


def evaluation_index_dir(workdir: Path, name: str) -> Path:
    """Where runs record the hashes of their evaluation rows (one Parquet file per distinct split)."""
    return workdir / "gate" / name / "evaluation"


@dataclass(frozen=True)
class GateScope:
    """The config the gate reads: its section, the meaningful columns, the suite, the salt and seed, its folders."""

    gate: GateConfig  # every check's severity and thresholds, the expectation engine and overrides
    label: str  # data.label
    features: tuple[str, ...] | None  # data.features as configured; None: every column but label and time columns
    time_columns: tuple[str, ...]  # the columns of splits.ood's time splits: never features
    expectations: str | None  # data.expectations, the suite file; None: no suite
    salt: str  # splits.salt: the row hashes of the evaluation index
    seed: int  # label-noise sampling
    quarantine_dir: Path  # this pipeline's quarantine folder; each gated batch gets a subfolder
    evaluation_index: Path  # `evaluation_index_dir`: earlier splits' evaluation rows (contamination)
    image_shape: tuple[int, int] | None = None  # data.image_shape: what accepted image files are resized to
    image_mode: str | None = None  # data.image_mode: L, RGB, or None (RGB when any image has colour)
    memory_budget_mb: float = 1024.0  # data.memory_budget_mb: accepted image files are decoded in chunks of a share of it

    @classmethod
    def from_config(cls, cfg: PipelineConfig) -> GateScope:
        """The gate's scope in a pipeline config; folders resolved now, against the current folder."""
        workdir = cfg.workdir_path()
        return cls(
            gate=cfg.gate,
            label=cfg.data.label,
            features=tuple(cfg.data.features) if cfg.data.features else None,
            time_columns=tuple(s.column for s in cfg.splits.ood if isinstance(s, TimeSplit)),
            expectations=cfg.data.expectations,
            salt=cfg.splits.salt,
            seed=cfg.seed,
            quarantine_dir=cfg.gate.quarantine_path(workdir) / cfg.name,
            evaluation_index=evaluation_index_dir(workdir, cfg.name),
            image_shape=tuple(cfg.data.image_shape) if cfg.data.image_shape else None,
            image_mode=cfg.data.image_mode,
            memory_budget_mb=cfg.data.memory_budget_mb,
        )
