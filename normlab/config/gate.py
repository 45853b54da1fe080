"""The sections of a pipeline config that decide what passes: the data gate, drift monitoring, alerts, promotion."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator

from normlab.config.sections import _Strict


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


class ImageFileCheck(_Strict):
    """An image entry that cannot be trained on (unreadable, or outside the class layout): never accepted."""

    severity: Annotated[Literal["block", "quarantine"], BeforeValidator(_yaml_off)] = Field(
        "quarantine", description="quarantine: list the file with its reason and go on; block: stop the batch"
    )
    monitor_severity: Annotated[Literal["block", "quarantine"] | None, BeforeValidator(_yaml_off)] = Field(
        None, description=_MONITOR_HELP
    )


class ImageModeCheck(_Strict):
    """An image whose Pillow mode is not in `allowed` (e.g. CMYK, 16-bit or float images)."""

    severity: Severity = Field("quarantine", description=_SEVERITY_HELP)
    monitor_severity: MonitorSeverity = Field(None, description=_MONITOR_HELP)
    allowed: list[str] = Field(
        default_factory=lambda: ["1", "L", "LA", "P", "RGB", "RGBA"], min_length=1,
        description="Pillow modes that are read (converted to data.image_mode)",
    )


class ImageSizeCheck(_Strict):
    """An image smaller or larger than the config allows, before it is resized."""

    severity: Severity = Field("quarantine", description=_SEVERITY_HELP)
    monitor_severity: MonitorSeverity = Field(None, description=_MONITOR_HELP)
    min_side: int = Field(8, ge=1, description="shortest side, in pixels, an image may have")
    max_side: int = Field(8192, ge=1, description="longest side, in pixels, an image may have")

    @field_validator("max_side")
    @classmethod
    def _ordered(cls, v: int, info: Any) -> int:
        low = info.data.get("min_side")
        if low is not None and v < low:
            raise ValueError(f"max_side {v} is below min_side {low}")
        return v


class EmptyClassCheck(_Strict):
    """A class folder that holds no image: the class would silently vanish from the model."""

    severity: Annotated[Literal["block", "warn", "off"], BeforeValidator(_yaml_off)] = Field(
        "warn", description="the folder has no rows to quarantine: block the batch, or report it"
    )
    monitor_severity: Annotated[Literal["block", "warn", "off"] | None, BeforeValidator(_yaml_off)] = Field(
        None, description=_MONITOR_HELP
    )


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
    image_readable: ImageFileCheck = Field(
        default_factory=ImageFileCheck, description="image files Pillow cannot open and decode"
    )
    image_layout: ImageFileCheck = Field(
        default_factory=ImageFileCheck, description="files outside root/<label>/<image>, or not images"
    )
    image_mode: ImageModeCheck = Field(default_factory=ImageModeCheck)
    image_size: ImageSizeCheck = Field(default_factory=ImageSizeCheck)
    image_duplicates: GateCheck = Field(
        default_factory=GateCheck, description="images whose bytes equal an earlier image's, whatever their names"
    )
    empty_class: EmptyClassCheck = Field(default_factory=EmptyClassCheck)

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

