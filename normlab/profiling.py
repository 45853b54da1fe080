"""``normlab init``: profile a trusted table into an expectation suite and a pipeline config.

Great Expectations 1.x has no profiler; this one writes the expectations the
gate evaluates fastest, each with a ``why`` and a severity:

* the exact column set, and row-count bounds (a tenth to ten times the rows seen): block;
* per numeric column, the observed range widened by a margin: quarantine;
* per text column with few distinct values, and for the label, the observed set: quarantine;
* per column without missing values, not-null: quarantine; a column that had
  missing values may keep about as many (``mostly``), else the gate warns.

Types are inferred, not taken from the reader (`normlab.data.types.infer_types`):
a text column whose values are numbers in at least ``NUMERIC_MIN_SHARE`` of its
rows is numeric, and its few other values are reported as stray: the gate's
types check rejects those rows, in the trusted file as in any later batch.

The config points at the file and the suite, sets the gate's thresholds from
the same file (label-noise share, rarest class) so the trusted file itself
passes, and sets a promotion threshold a majority-class model fails
(`promotion_settings`). What it fitted and wrote comes back typed (`Initialized`).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict

from normlab.config import GateConfig, PipelineConfig, SplitsConfig, validate_config
from normlab.data.types import EXACT_INT, ColumnType, infer_types
from normlab.errors import ConfigError, DataSourceError
from normlab.gate import GateScope, assess
from normlab.gate.checks import content_hashes
from normlab.gate.contracts import Expectation, Suite
from normlab.label_noise import check_label_noise

# Text columns with at most this many distinct values get a value set.
MAX_CATEGORIES = 50
# Share of the observed range added on each side of a numeric column's bounds.
RANGE_MARGIN = 0.1
# Significant digits of a float bound (rounded outwards, so no observed value falls outside).
BOUND_DIGITS = 6
# Promotion: the ID test accuracy must beat always predicting the majority class by this many
# standard errors of that rule's accuracy on a test split of the expected size, and by at least
# PROMOTION_MIN_MARGIN: a majority-class model clears it by chance about 2 % of the time.
PROMOTION_Z = 2.0
PROMOTION_MIN_MARGIN = 0.02
# Share of extra missing values a nullable column may have before the gate warns.
NULL_SLACK = 0.05
# Label-noise fit: the history is cut into this many folds, each scored against the others (about
# two thirds of it, like new rows against a model's training rows), over this many seeded shuffles.
NOISE_FOLDS = 3
NOISE_REPEATS = 3
# Least margin added to the estimated label-noise share (one standard error when that is larger).
NOISE_MIN_MARGIN = 0.01
# Largest label-noise threshold init writes.
NOISE_MAX_SHARE = 0.5

_FLOAT_MAX = sys.float_info.max


class _Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProfileMeta(_Contract):
    """What `profile_suite` keeps in the suite's ``meta.normlab``; ``stray_values`` only when a column had some."""

    profiled_from: str
    rows: int
    label: str
    column_types: dict[str, str]
    stray_values: dict[str, int] | None = None


class NoiseFit(_Contract):
    """A label-noise threshold fitted to a trusted frame (`fit_label_noise`); ``held_out`` None when not estimated."""

    max_share: float
    leave_one_out: float
    held_out: float | None = None
    margin: float
    rows: int


class MaxShare(_Contract):
    """A ``gate.<check>`` section that sets ``max_share``."""

    max_share: float


class MinShare(_Contract):
    """A ``gate.<check>`` section that sets ``min_share``."""

    min_share: float


class GateSettings(_Contract):
    """Gate thresholds fitted to a trusted frame (`gate_settings`): the ``gate`` section init writes (the set ones)."""

    label_noise: MaxShare | None = None
    class_balance: MinShare | None = None
    leakage: MaxShare | None = None


class PromotionFit(_Contract):
    """The promotion threshold init writes (`promotion_settings`), and how it was set."""

    thresholds: dict[str, float]
    majority: str | int | float | bool
    majority_share: float
    test_rows: int
    standard_error: float
    margin: float


@dataclass(frozen=True)
class Initialized:
    """What `init_project` wrote and found (the config, and `infer_types` per column, are kept as objects)."""

    suite_path: str
    config_path: str
    name: str
    rows: int
    expectations: int
    config: PipelineConfig
    types: dict[str, ColumnType]
    stray_rows: int
    promotion: PromotionFit
    own_rows_rejected: int
    own_failures: list[str]


def safe_name(name: str) -> str:
    """Check a suite/config name is one plain file-name segment; return it."""
    if not name or name in {".", ".."} or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise ConfigError(f"--name {name!r}: use letters, digits, '-', '_' or '.' only (it names files)")
    return name


def name_from_path(path: Path) -> str:
    """A safe default name from a data file's name (``my data.csv`` -> ``my-data``)."""
    stem = path.name.split(".")[0]
    cleaned = "".join(c if c.isalnum() or c in "-_" else "-" for c in stem).strip("-")
    return cleaned or "data"


def profile_suite(
    frame: pd.DataFrame, label: str, *, name: str, source: str, types: dict[str, ColumnType] | None = None,
) -> Suite:
    """An expectation suite (Great Expectations JSON with `Suite.to_json`) describing a trusted frame.

    Args:
        frame: The frame as read.
        label: Its label column.
        name: The suite's name.
        source: Where the frame came from (kept in the suite's meta).
        types: `infer_types` of the frame, when already computed.
    """
    n = len(frame)
    columns = [str(c) for c in frame.columns]
    if types is None:
        types, typed = infer_types(frame)
    else:
        typed = frame.assign(**{c: pd.to_numeric(frame[c], errors="coerce") for c, t in types.items() if t.from_text})
    expectations: list[Expectation] = [
        _exp("expect_table_columns_to_match_set", {"column_set": columns},
             "block", "the model is built for exactly these columns"),
        _exp("expect_table_row_count_to_be_between", {"min_value": max(1, n // 10), "max_value": n * 10},
             "block", f"{n} rows were profiled; a batch far smaller or larger is a different feed"),
    ]
    for column in columns:
        series = frame[column]
        kind = types[column].kind
        # A stray value is not missing: it is there, and the types check rejects its row.
        nulls = float(series.isna().mean())
        if nulls == 0:
            why = "a row without a label cannot be trained on" if column == label else f"{column} was never missing"
            expectations.append(_exp("expect_column_values_to_not_be_null", {"column": column}, "quarantine", why))
        elif nulls < 1 and column != label:
            mostly = math.floor((1.0 - nulls - NULL_SLACK) * 100) / 100
            if mostly > 0:
                expectations.append(_exp(
                    "expect_column_values_to_not_be_null", {"column": column, "mostly": mostly}, "warn",
                    f"{nulls:.1%} of {column} was missing; much more means a broken feed"))
        values = typed[column].dropna()
        if values.empty:
            continue
        if column == label or (kind in ("text", "boolean") and values.nunique() <= MAX_CATEGORIES):
            as_int = kind == "integer" and types[column].from_text
            value_set = sorted({int(v) if as_int else _scalar(v) for v in values.unique()},
                               key=lambda v: (str(type(v)), v))
            why = "labels outside the trained classes" if column == label else f"{column} took only these values"
            expectations.append(_exp("expect_column_values_to_be_in_set", {"column": column, "value_set": value_set},
                                     "quarantine", why))
        elif types[column].numeric:
            bounds = _bounds(values, integer=kind == "integer")
            if bounds is None:
                continue  # only infinities: the non_finite check rejects them
            (lo, hi), (seen_lo, seen_hi) = bounds
            expectations.append(_exp(
                "expect_column_values_to_be_between", {"column": column, "min_value": lo, "max_value": hi},
                "quarantine", f"observed {seen_lo}..{seen_hi}, widened by {RANGE_MARGIN:.0%}"))
    column_types = {column: types[column].kind for column in columns}
    stray = {column: int(t.stray.size) for column, t in types.items() if t.stray.size}
    meta = ProfileMeta(profiled_from=source, rows=n, label=label, column_types=column_types,
                       stray_values=stray or None)
    return Suite(name=name, expectations=expectations, meta={"normlab": meta.model_dump(exclude_none=True)})


def _exp(kind: str, kwargs: dict[str, Any], severity: str, why: str) -> Expectation:
    return Expectation(type=kind, kwargs=kwargs, meta={"why": why, "severity": severity})


def _scalar(value: Any) -> Any:
    """A JSON scalar (numpy numbers to Python; integral floats stay floats)."""
    return value.item() if hasattr(value, "item") else value


def _bounds(values: pd.Series, *, integer: bool) -> tuple[tuple[Any, Any], tuple[Any, Any]] | None:
    """The observed range widened by ``RANGE_MARGIN``, and the observed range; None without finite values.

    Integer bounds are computed on Python integers (exact at any size) and kept
    within what the column's dtype holds (``2**53`` for a float column), float
    bounds within the finite float range: values near +-1.8e308 give finite
    bounds, never an overflow.
    """
    if integer:
        if pd.api.types.is_integer_dtype(values.dtype):
            info = np.iinfo(values.dtype)
            limits = (int(info.min), int(info.max))
        else:
            limits = (-EXACT_INT, EXACT_INT)
        lo, hi = int(values.min()), int(values.max())
        margin = math.ceil((hi - lo) * RANGE_MARGIN) if hi > lo else max(math.ceil(abs(lo) * RANGE_MARGIN), 1)
        return (max(lo - margin, limits[0]), min(hi + margin, limits[1])), (lo, hi)
    numbers = values.to_numpy(dtype=np.float64)
    finite = numbers[np.isfinite(numbers)]
    if not finite.size:
        return None
    lo, hi = float(finite.min()), float(finite.max())
    # Each side is scaled before subtracting: hi - lo itself overflows when lo and hi are near -+1.8e308.
    margin = RANGE_MARGIN * hi - RANGE_MARGIN * lo if hi > lo else max(abs(lo) * RANGE_MARGIN, 1.0)
    low, high = max(lo - margin, -_FLOAT_MAX), min(hi + margin, _FLOAT_MAX)
    return (_round_out(low, up=False), _round_out(high, up=True)), (lo, hi)


def _round_out(value: float, *, up: bool) -> float:
    """``value`` to ``BOUND_DIGITS`` significant digits, rounded away from the range it bounds."""
    context = Context(prec=BOUND_DIGITS, rounding=ROUND_CEILING if up else ROUND_FLOOR)
    rounded = float(context.plus(Decimal(value)))
    return rounded if math.isfinite(rounded) else value  # rounding the largest float up leaves the float range


def fit_label_noise(
    frame: pd.DataFrame, features: list[str], label: str, *, k: int, sample_rows: int, seed: int = 0,
) -> NoiseFit | None:
    """A label-noise threshold fitted to a trusted frame that transfers to new batches of any size.

    The kNN disagreement of a batch depends on how many rows its neighbours
    come from, so the frame's own leave-one-out share is not the share of new
    rows. Two estimates are taken:

    * ``leave_one_out``: each row against the frame's other rows (the training
      context, where a batch is scored within itself);
    * ``held_out``: ``NOISE_FOLDS``-fold cross-fitting, repeated over
      ``NOISE_REPEATS`` seeded shuffles: each fold is scored against the rest
      (about two thirds of the frame), as new rows are scored against a
      model's training rows in monitoring. Frames larger than the check's
      sample are cut to a seeded sample first, so the rest is no larger than
      the reference sample the gate would use.

    ``max_share`` is the larger estimate plus a margin of one standard error of
    it (at least ``NOISE_MIN_MARGIN``), at most ``NOISE_MAX_SHARE``. The margin
    covers the estimate's own sampling error; the gate's one-sided binomial
    test covers the batch's, so a small batch is not blocked for being small.

    Returns:
        The `NoiseFit`: ``max_share``, ``leave_one_out``, ``held_out`` (None
        when the frame is too small to cut), ``margin`` and ``rows`` (rows of
        the frame scored); or None when the check cannot run on the frame (no
        label, no numeric features, too few rows).
    """
    own = check_label_noise(frame, features, label, k=k, max_share=1.0, sample_rows=sample_rows, seed=seed).result
    if not isinstance(own.observed, float):
        return None
    estimates = {"leave_one_out": own.observed}
    labelled = np.flatnonzero(frame[label].notna().to_numpy())
    cap = math.ceil(sample_rows * NOISE_FOLDS / (NOISE_FOLDS - 1))
    rng = np.random.default_rng([seed, 2])
    if labelled.size > cap:
        labelled = np.sort(rng.choice(labelled, size=cap, replace=False))
    if labelled.size * (NOISE_FOLDS - 1) // NOISE_FOLDS > k:
        disagreeing = scored = 0
        for _ in range(NOISE_REPEATS):
            order = rng.permutation(labelled)
            for fold in range(NOISE_FOLDS):
                held = np.zeros(order.size, dtype=bool)
                held[fold::NOISE_FOLDS] = True
                part = check_label_noise(
                    frame.iloc[np.sort(order[held])], features, label, k=k, max_share=1.0,
                    sample_rows=sample_rows, seed=seed, reference=frame.iloc[np.sort(order[~held])]).result
                if part.details.get("reference_used"):
                    disagreeing += part.details["disagreeing_rows"]
                    scored += part.details["scored_rows"]
        if scored:
            estimates["held_out"] = round(disagreeing / scored, 6)
    rows = int(own.details["scored_rows"])
    share = max(estimates.values())
    margin = max(NOISE_MIN_MARGIN, math.sqrt(share * (1.0 - share) / rows))
    max_share = min(NOISE_MAX_SHARE, math.ceil((share + margin) * 1000) / 1000)
    return NoiseFit(max_share=max_share, **estimates, margin=round(margin, 6), rows=rows)


def gate_settings(frame: pd.DataFrame, label: str, *, seed: int = 0) -> GateSettings:
    """Gate thresholds fitted to a trusted frame, so that it and new rows like it pass them.

    Label noise: `fit_label_noise` (the larger of the frame's leave-one-out
    and held-out kNN disagreement, plus one standard error; at most 0.5);
    class balance: half the rarest class's share (at most the default);
    leakage: above the share of rows whose features recur under another label
    (only when there are such rows).
    """
    defaults = GateConfig()
    features = [str(c) for c in frame.columns if c != label]
    noise = fit_label_noise(frame, features, label, k=defaults.label_noise.k,
                            sample_rows=defaults.label_noise.sample_rows, seed=seed)
    # Catches flipped labels, not data that is merely hard.
    label_noise = MaxShare(max_share=noise.max_share) if noise is not None else None
    shares = frame[label].value_counts(normalize=True)
    class_balance = None
    if len(shares):
        rarest = float(shares.min())
        class_balance = MinShare(min_share=round(min(defaults.class_balance.min_share, rarest / 2), 6))
    # Rows sharing their features with a row of another label can land on both sides of the split:
    # data like this leaks by nature, so the leakage threshold starts above its share.
    groups = pd.DataFrame({"features": content_hashes(frame, features), "label": frame[label].astype(str)})
    labels_per_features = groups.groupby("features")["label"].transform("nunique")
    ambiguous = float((labels_per_features > 1).mean())
    leakage = MaxShare(max_share=round(min(1.0, 1.2 * ambiguous + 0.01), 3)) if ambiguous > 0 else None
    return GateSettings(label_noise=label_noise, class_balance=class_balance, leakage=leakage)


def promotion_settings(labels: pd.Series, *, test_fraction: float) -> PromotionFit:
    """A promotion threshold that a model always predicting the majority class fails.

    On a test split of ``test_fraction`` of the labelled rows, that rule's
    accuracy is the majority class's share ``p`` give or take its standard
    error ``sqrt(p (1 - p) / test rows)``. The threshold on ``id/test/accuracy``
    is ``p`` plus ``PROMOTION_Z`` standard errors (at least
    ``PROMOTION_MIN_MARGIN``), rounded up to 0.001 and at most 1: a small test
    split asks for a clearer win.

    Returns:
        The `PromotionFit`: ``thresholds`` (for ``promotion.thresholds``), and how it was set:
        ``majority`` (the class), ``majority_share``, ``test_rows``,
        ``standard_error`` and ``margin``.
    """
    labelled = labels.dropna()
    counts = labelled.value_counts()
    share = float(counts.iloc[0]) / len(labelled)
    test_rows = max(1, round(test_fraction * len(labelled)))
    error = math.sqrt(share * (1.0 - share) / test_rows)
    margin = max(PROMOTION_MIN_MARGIN, PROMOTION_Z * error)
    # Rounded to 6 places first, so that float noise (0.55 + 0.1) does not round up a whole step.
    at_least = min(1.0, math.ceil(round((share + margin) * 1000, 6)) / 1000)
    return PromotionFit(thresholds={"id/test/accuracy": at_least}, majority=_scalar(counts.index[0]),
                        majority_share=round(share, 4), test_rows=test_rows, standard_error=round(error, 4),
                        margin=round(margin, 4))


def check_trainable(labels: pd.Series, *, source: str, label: str) -> None:
    """Raise unless the label column has at least two classes to learn."""
    classes = labels.dropna().unique()
    if len(classes) == 0:
        raise DataSourceError(f"{source}: label column {label!r} is missing in every row; nothing to train on")
    if len(classes) == 1:
        raise DataSourceError(
            f"{source}: label column {label!r} has a single class ({_scalar(classes[0])!r} in all "
            f"{int(labels.notna().sum())} labelled rows); a classifier needs at least two classes"
        )


def init_project(
    data: str | Path,
    label: str,
    *,
    name: str | None = None,
    force: bool = False,
    root: str | Path = ".",
) -> Initialized:
    """Write ``expectations/NAME.json`` and ``configs/NAME.yaml`` for a trusted data file.

    Args:
        data: The trusted CSV or Parquet file (read only).
        label: Its label column.
        name: Suite and config name; default from the file name.
        force: Overwrite existing files.
        root: The project folder (the config's paths are relative to it).

    Returns:
        The `Initialized`: ``suite_path``, ``config_path``, ``name``, ``rows``, ``expectations`` (how many),
        the config, ``types`` (`infer_types` per column), ``stray_rows`` (rows
        with a stray value in a numeric column), ``promotion`` (how its
        threshold was set, `promotion_settings`), and how the file fares at its
        own gate: ``own_rows_rejected`` and ``own_failures`` (the checks that
        would reject rows of it).

    Raises:
        DataSourceError: The file is unreadable, has no such label column, or
            its label has fewer than two classes.
        ConfigError: The name is unsafe, or a file exists and ``force`` is off.
    """
    from normlab.data.sources import read_table

    root = Path(root).resolve()
    data_path = Path(data)
    name = safe_name(name) if name is not None else name_from_path(data_path)
    suite_path = root / "expectations" / f"{name}.json"
    config_path = root / "configs" / f"{name}.yaml"
    existing = [p for p in (suite_path, config_path) if p.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} exists; pick another --name or pass --force to overwrite")
    frame = read_table(data_path)
    if label not in frame.columns:
        raise DataSourceError(
            f"{data_path}: label column {label!r} not found; columns: {', '.join(map(str, frame.columns[:20]))}"
        )
    types, typed = infer_types(frame)
    stray = np.unique(np.concatenate([t.stray for t in types.values()]))
    # The rows the gate keeps after its types check, with those columns as numbers.
    clean = typed.iloc[np.setdiff1d(np.arange(len(frame)), stray)]
    check_trainable(clean[label], source=str(data_path), label=label)
    resolved = data_path.resolve()
    shown = resolved.relative_to(root) if resolved.is_relative_to(root) else resolved
    suite = profile_suite(frame, label, name=name, source=str(shown), types=types)
    promotion = promotion_settings(clean[label], test_fraction=SplitsConfig().test_fraction)
    data_section: dict[str, Any] = {"path": str(shown), "label": label, "expectations": f"expectations/{name}.json"}
    empty = [c for c, t in types.items() if t.kind == "empty"]
    if empty:
        # A column missing in every row carries nothing to learn, and NaN features fail the non_finite check.
        data_section["features"] = [c for c in map(str, frame.columns) if c != label and c not in empty]
    raw = {
        "name": name,
        "data": data_section,
        "splits": {"ood": []},
        "model": {"family": "mlp", "norm": "batch"},
        "gate": gate_settings(clean, label).model_dump(exclude_none=True),
        "promotion": {"thresholds": dict(promotion.thresholds)},
    }
    cfg = validate_config(raw, source=str(config_path))
    # The file should pass its own gate; stray values, duplicate rows or a tiny file are what it can still catch.
    own = assess(frame, GateScope.from_config(cfg), suite)
    own_failures = [c.label for c in own.checks if c.outcome in ("quarantined", "blocked")]
    (metric, at_least), = promotion.thresholds.items()
    header = (f"# Profiled by `normlab init` from {shown} ({len(frame)} rows, label {label!r}).\n"
              f"# Run it: normlab run configs/{name}.yaml   Check a new batch: normlab validate "
              f"configs/{name}.yaml --data NEW.csv\n"
              f"# Promotion: {metric} >= {at_least}. Always predicting {promotion.majority!r} scores about "
              f"{promotion.majority_share} +- {promotion.standard_error} on ~{promotion.test_rows} test rows;\n"
              f"# the threshold is {PROMOTION_Z:g} standard errors above it (at least {PROMOTION_MIN_MARGIN}).\n")
    suite_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    suite_path.write_text(json.dumps(suite.to_json(), indent=1) + "\n", encoding="utf-8")
    config_path.write_text(header + yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return Initialized(suite_path=str(suite_path), config_path=str(config_path), name=name, rows=len(frame),
                       expectations=len(suite.expectations), config=cfg, types=types, stray_rows=int(stray.size),
                       promotion=promotion, own_rows_rejected=len(frame) - int(own.accepted.size),
                       own_failures=own_failures)
