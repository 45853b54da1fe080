"""The registry of the data gate's checks: name -> `CheckEntry`, in the order the gate runs them.

Each built-in check is one entry, registered with `register_check` on the
function that evaluates it (the timm way: the decorated function is the
entry). An entry's name is the one reports show and the ``gate.<name>``
section of the config (`normlab.config.GateConfig`) that holds its severity
and thresholds. `normlab.gate.assessment.assess` runs the entries stage by
stage, in `STAGES` order and, within a stage, in registration order; a stage
sees only the rows the earlier stages kept (a text value coerced away must not
also count as a missing value)::

    structure  columns (table), types (rows); image files: image_layout, image_readable
    rows       the suite's expectations (first), non_finite, duplicates, contamination;
               image files: contamination, image_mode, image_size, image_duplicates
    labels     label_noise, on the rows still accepted
    batch      empty_class (image files), class_balance, row_count, rejected_share, on the accepted rows
    split      leakage, after the split (`normlab.gate.split_audit`)

A check runs on the batches its entry ``applies_to``: tables of values, image
files (whose rows are the files a scan found, `normlab.images.scan`), or both.
It is not reported at all on the other kind.

Adding a check is one registered function here (with its ``gate.<name>``
section in the config) and its test; ``tests/unit/test_gate_registry.py``
ties the registry to the config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import normlab.gate.checks as ck
import normlab.gate.image_checks as ick
from normlab.config import (
    ClassBalanceCheck,
    EmptyClassCheck,
    GateCheck,
    GateConfig,
    ImageFileCheck,
    ImageModeCheck,
    ImageSizeCheck,
    LabelNoiseCheck,
    LeakageCheck,
    RejectedShareCheck,
    RowCountCheck,
    TableGateCheck,
)
from normlab.contracts import ImageSource
from normlab.gate.contracts import Suite
from normlab.gate.expectations import known_labels, suite_columns
from normlab.gate.results import Evaluated, take_rows
from normlab.gate.scope import GateScope

STAGES = ("structure", "rows", "labels", "batch", "split")
BATCH_STAGES = STAGES[:4]  # what `assess` runs on a batch; ``split`` runs once the batch is split
CONTEXTS = ("train", "monitor")
_STRICTNESS = ("off", "warn", "quarantine", "block")
BATCH_KINDS = ("tables", "images", "both")


@dataclass(frozen=True)
class CheckEntry:
    """One check of the gate: its name, its stage, how it is evaluated and how it reads its config.

    ``evaluate(context, settings)`` returns the check's `Evaluated` (pass or
    fail, and the rows it singles out); the context is the stage's
    `CheckContext` (`SplitHashes` for the ``split`` stage), the settings its
    config section. ``unavailable(context)`` says why the check cannot run on
    this batch (it is then reported as skipped, whatever its severity), or None.
    ``monitor_default`` is its severity when monitoring (`severity_of`); None
    for a check that never runs there.
    """

    name: str
    stage: str
    evaluate: Callable[..., Evaluated]
    monitor_default: str | None = None
    unavailable: Callable[[CheckContext], str | None] | None = None
    config: Callable[[GateConfig], Any] | None = None  # reads its config section; default ``gate.<name>``
    applies_to: str = "both"  # `BATCH_KINDS`: tables of values, image files, or both

    def applies(self, images: bool) -> bool:
        """Whether the check runs on (and is reported for) a batch of image files (``images``) or of values."""
        return self.applies_to == "both" or self.applies_to == ("images" if images else "tables")

    def settings(self, gate: GateConfig) -> Any:
        """The check's config section: severity, monitoring severity and thresholds."""
        return self.config(gate) if self.config is not None else getattr(gate, self.name)


CHECKS: dict[str, CheckEntry] = {}
# Each check's severity when watching production data (normlab monitor), filled by `register_check`.
# What protects a training set only (contamination, label noise, class balance, duplicates, row count)
# is reported, never blocking; what makes a batch unusable (columns, unparseable values, a batch that
# loses too many rows) still acts. A check's monitoring severity is never stricter than its training one.
MONITOR_DEFAULTS: dict[str, str] = {}


def register_check(
    name: str,
    *,
    stage: str,
    monitor_default: str | None = None,
    unavailable: Callable[[CheckContext], str | None] | None = None,
    config: Callable[[GateConfig], Any] | None = None,
    applies_to: str = "both",
) -> Callable[[Callable[..., Evaluated]], Callable[..., Evaluated]]:
    """Register the decorated function as the evaluator of check ``name`` (see `CheckEntry`)."""
    if stage not in STAGES:
        raise ValueError(f"a check's stage is one of {STAGES}; got {stage!r}")
    if applies_to not in BATCH_KINDS:
        raise ValueError(f"a check applies to one of {BATCH_KINDS}; got {applies_to!r}")

    def register(evaluate: Callable[..., Evaluated]) -> Callable[..., Evaluated]:
        if name in CHECKS:
            raise ValueError(f"check {name!r} is already registered")
        CHECKS[name] = CheckEntry(name, stage, evaluate, monitor_default, unavailable, config, applies_to)
        if monitor_default is not None:
            MONITOR_DEFAULTS[name] = monitor_default
        return evaluate

    return register


def checks_in(stage: str, *, images: bool | None = None) -> list[CheckEntry]:
    """The checks of one stage, in the order they run; with ``images``, those that apply to that kind of batch."""
    return [entry for entry in CHECKS.values()
            if entry.stage == stage and (images is None or entry.applies(images))]


def ordered() -> list[CheckEntry]:
    """Every check, in the order the gate runs them (stage by stage)."""
    return [entry for stage in STAGES for entry in checks_in(stage)]


def severity_of(gate: GateConfig, name: str, context: str) -> str:
    """The severity of a built-in check in a context (``train`` or ``monitor``).

    Training uses ``gate.<check>.severity``. Monitoring uses
    ``gate.<check>.monitor_severity`` when set, else the check's monitoring
    default (`MONITOR_DEFAULTS`), capped at its training severity (a check
    turned off or down for training is not stricter in monitoring).
    """
    check = CHECKS[name].settings(gate)
    if context == "train":
        return check.severity
    if context != "monitor":
        raise ValueError(f"gate context is one of {CONTEXTS}; got {context!r}")
    if check.monitor_severity is not None:
        return check.monitor_severity
    default = MONITOR_DEFAULTS[name]
    return min(default, check.severity, key=_STRICTNESS.index)


def feature_names(scope: GateScope, columns: list[str]) -> list[str]:
    """The configured features as named (present or not), else every column but the label and time columns."""
    if scope.features:
        return list(scope.features)
    excluded = {scope.label} | set(scope.time_columns)
    return [c for c in columns if c not in excluded]


@dataclass
class CheckContext:
    """What the checks of one batch stage see: the batch, the rows still in play, and what they share.

    Built afresh for each stage, so what it caches (the stage's rows, their
    feature hashes) is never carried from one stage to the next.
    """

    frame: pd.DataFrame  # the batch as it arrived, positional
    work: pd.DataFrame  # the batch as the stages read it (text-in-numeric columns repaired once `types` acts)
    scope: GateScope  # the config the checks read: gate section, label, features, salt, seed
    suite: Suite | None  # the suite as it applies to this batch (without the label's when unlabelled)
    types_result: Evaluated  # `check_types` on the whole batch: it runs whatever its severity
    keep: np.ndarray  # sorted positions of the rows this stage sees
    evaluation_index: pd.DataFrame | None = None  # earlier runs' evaluation rows (contamination)
    reference: pd.DataFrame | None = None  # the model's training rows (label noise, in monitoring)
    images: ImageSource | None = None  # image files: where they are and what the scan found; None for values

    @property
    def n(self) -> int:
        """Rows in the batch."""
        return len(self.frame)

    @property
    def label(self) -> str:
        return self.scope.label

    @property
    def labelled(self) -> bool:
        """Whether the batch has its label column (new data awaiting labels has not)."""
        return self.label in [str(c) for c in self.frame.columns]

    @cached_property
    def features(self) -> list[str]:
        return feature_names(self.scope, [str(c) for c in self.frame.columns])

    @cached_property
    def view(self) -> pd.DataFrame:
        """The rows this stage sees, positional (positions map back to the batch through ``keep``)."""
        return self.work if self.keep.size == self.n else take_rows(self.work, self.keep)

    @cached_property
    def present(self) -> list[str]:
        """The features the batch has."""
        return [c for c in self.features if c in self.view.columns]

    @cached_property
    def feature_hashes(self) -> np.ndarray:
        """`content_hashes` of the stage's rows' features, hashed once for every check that needs them."""
        return ck.content_hashes(self.view, self.present)


@dataclass(frozen=True)
class SplitHashes:
    """What the ``split`` stage sees: the feature hashes of the training rows and of the evaluation rows."""

    train: np.ndarray
    evaluation: np.ndarray


# Structure ------------------------------------------------------------------------------


@register_check("columns", stage="structure", monitor_default="block")
def _columns(ctx: CheckContext, settings: TableGateCheck) -> Evaluated:
    referenced, declared = suite_columns(ctx.suite)
    label = [ctx.label] if ctx.labelled else []
    required = list(dict.fromkeys([*label, *(ctx.scope.features or ()), *referenced]))
    return ck.check_columns(ctx.view, required=required, expected=declared)


@register_check("types", stage="structure", monitor_default="quarantine")
def _types(ctx: CheckContext, settings: GateCheck) -> Evaluated:
    return ctx.types_result


@register_check("image_layout", stage="structure", monitor_default="quarantine", applies_to="images")
def _image_layout(ctx: CheckContext, settings: ImageFileCheck) -> Evaluated:
    return ick.check_layout(ctx.view)


@register_check("image_readable", stage="structure", monitor_default="quarantine", applies_to="images")
def _image_readable(ctx: CheckContext, settings: ImageFileCheck) -> Evaluated:
    return ick.check_readable(ctx.view)


# Rows -----------------------------------------------------------------------------------


@register_check("non_finite", stage="rows", monitor_default="quarantine", applies_to="tables")
def _non_finite(ctx: CheckContext, settings: GateCheck) -> Evaluated:
    numeric = [c for c in [*ctx.features, ctx.label] if c in ctx.view.columns]
    return ck.check_non_finite(ctx.view, numeric, nullable=ck.nullable_columns_of_suite(ctx.suite))


@register_check("duplicates", stage="rows", monitor_default="warn", applies_to="tables")
def _duplicates(ctx: CheckContext, settings: GateCheck) -> Evaluated:
    return ck.check_duplicates(ctx.view, features=ctx.present, feature_hashes=ctx.feature_hashes)


@register_check("contamination", stage="rows", monitor_default="warn")
def _contamination(ctx: CheckContext, settings: GateCheck) -> Evaluated:
    index = ctx.evaluation_index
    scope = ctx.scope
    if ctx.images is not None:
        # The index of an image run holds its pixel rows: the files are decoded as training reads them.
        return ick.check_contamination(ctx.view, index, root=Path(ctx.images.root), label=ctx.label, salt=scope.salt,
                                       image_shape=scope.image_shape, mode=scope.image_mode, features=scope.features,
                                       budget_mb=scope.memory_budget_mb)
    hashes = ctx.feature_hashes if index is not None else None  # nothing to compare with: no hashing
    return ck.check_contamination(ctx.view, hashes, index, salt=scope.salt)


@register_check("image_mode", stage="rows", monitor_default="quarantine", applies_to="images")
def _image_mode(ctx: CheckContext, settings: ImageModeCheck) -> Evaluated:
    return ick.check_mode(ctx.view, allowed=settings.allowed)


@register_check("image_size", stage="rows", monitor_default="quarantine", applies_to="images")
def _image_size(ctx: CheckContext, settings: ImageSizeCheck) -> Evaluated:
    return ick.check_size(ctx.view, min_side=settings.min_side, max_side=settings.max_side)


@register_check("image_duplicates", stage="rows", monitor_default="warn", applies_to="images")
def _image_duplicates(ctx: CheckContext, settings: GateCheck) -> Evaluated:
    return ick.check_duplicates(ctx.view)


# Labels ---------------------------------------------------------------------------------


@register_check("label_noise", stage="labels", monitor_default="warn", applies_to="tables")
def _label_noise(ctx: CheckContext, settings: LabelNoiseCheck) -> Evaluated:
    # Deferred: normlab.label_noise builds on normlab.gate.checks, whose package imports this module.
    from normlab.label_noise import check_label_noise

    return check_label_noise(
        ctx.view, ctx.present, ctx.label, k=settings.k, max_share=settings.max_share,
        sample_rows=settings.sample_rows, seed=ctx.scope.seed, confidence=settings.confidence, reference=ctx.reference,
    )


# Batch ----------------------------------------------------------------------------------


@register_check("empty_class", stage="batch", monitor_default="warn", applies_to="images")
def _empty_class(ctx: CheckContext, settings: EmptyClassCheck) -> Evaluated:
    return ick.check_empty_classes(ctx.images.empty_classes if ctx.images else [])


@register_check("class_balance", stage="batch", monitor_default="warn",
                unavailable=lambda ctx: None if ctx.labelled else "unlabelled batch")
def _class_balance(ctx: CheckContext, settings: ClassBalanceCheck) -> Evaluated:
    labels = ctx.work[ctx.label].iloc[ctx.keep]
    return ck.check_class_balance(labels, known=known_labels(ctx.suite, ctx.label), min_share=settings.min_share)


@register_check("row_count", stage="batch", monitor_default="warn")
def _row_count(ctx: CheckContext, settings: RowCountCheck) -> Evaluated:
    return ck.check_row_count(int(ctx.keep.size), min_rows=settings.min_rows, max_rows=settings.max_rows)


@register_check("rejected_share", stage="batch", monitor_default="block")
def _rejected_share(ctx: CheckContext, settings: RejectedShareCheck) -> Evaluated:
    return ck.check_rejected_share(ctx.n - int(ctx.keep.size), ctx.n, max_share=settings.max_share)


# Split ----------------------------------------------------------------------------------


@register_check("leakage", stage="split")
def _leakage(hashes: SplitHashes, settings: LeakageCheck) -> Evaluated:
    return ck.check_leakage(hashes.train, hashes.evaluation, max_share=settings.max_share)
