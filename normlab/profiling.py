"""``normlab init``: profile a trusted table into an expectation suite and a pipeline config.

Great Expectations 1.x has no profiler; this one writes the expectations the
gate evaluates fastest, each with a ``why`` and a severity:

* the exact column set, and row-count bounds (a tenth to ten times the rows seen): block;
* per numeric column, the observed range widened by a margin: quarantine;
* per text column with few distinct values, and for the label, the observed set: quarantine;
* per column without missing values, not-null: quarantine; a column that had
  missing values may keep about as many (``mostly``), else the gate warns.

The config points at the file and the suite and sets the gate's thresholds
from the same file (label-noise share, rarest class), so the trusted file
itself passes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from normlab.checks import content_hashes
from normlab.config import GateConfig, validate_config
from normlab.errors import ConfigError, DataSourceError
from normlab.gate import assess
from normlab.label_noise import check_label_noise

# Text columns with at most this many distinct values get a value set.
MAX_CATEGORIES = 50
# Share of the observed range added on each side of a numeric column's bounds.
RANGE_MARGIN = 0.1
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


def profile_suite(frame: pd.DataFrame, label: str, *, name: str, source: str) -> dict[str, Any]:
    """An expectation suite (Great Expectations JSON) describing a trusted frame."""
    n = len(frame)
    columns = [str(c) for c in frame.columns]
    expectations: list[dict[str, Any]] = [
        _exp("expect_table_columns_to_match_set", {"column_set": columns},
             "block", "the model is built for exactly these columns"),
        _exp("expect_table_row_count_to_be_between", {"min_value": max(1, n // 10), "max_value": n * 10},
             "block", f"{n} rows were profiled; a batch far smaller or larger is a different feed"),
    ]
    types: dict[str, str] = {}
    for column in columns:
        series = frame[column]
        kind = _kind(series)
        types[column] = kind
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
        values = series.dropna()
        if values.empty:
            continue
        if column == label or (kind in ("text", "boolean") and values.nunique() <= MAX_CATEGORIES):
            value_set = sorted({_scalar(v) for v in values.unique()}, key=lambda v: (str(type(v)), v))
            why = "labels outside the trained classes" if column == label else f"{column} took only these values"
            expectations.append(_exp("expect_column_values_to_be_in_set", {"column": column, "value_set": value_set},
                                     "quarantine", why))
        elif kind in ("integer", "float"):
            lo, hi = _bounds(values.to_numpy(dtype=np.float64), integer=kind == "integer")
            expectations.append(_exp(
                "expect_column_values_to_be_between", {"column": column, "min_value": lo, "max_value": hi},
                "quarantine",
                f"observed {_scalar(values.min())}..{_scalar(values.max())}, widened by {RANGE_MARGIN:.0%}"))
    return {
        "name": name,
        "expectations": expectations,
        "meta": {"normlab": {"profiled_from": source, "rows": n, "label": label, "column_types": types}},
    }


def _exp(kind: str, kwargs: dict[str, Any], severity: str, why: str) -> dict[str, Any]:
    return {"type": kind, "kwargs": kwargs, "meta": {"why": why, "severity": severity}}


def _kind(series: pd.Series) -> str:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_float_dtype(dtype):
        # CSV readers turn an integer column with gaps into floats: keep it integer.
        values = series.dropna().to_numpy()
        finite = values[np.isfinite(values)]
        return "integer" if finite.size and np.all(finite == np.round(finite)) else "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    return "text"


def _scalar(value: Any) -> Any:
    """A JSON scalar (numpy numbers to Python; integral floats stay floats)."""
    return value.item() if hasattr(value, "item") else value


def _bounds(values: np.ndarray, *, integer: bool) -> tuple[float | int, float | int]:
    finite = values[np.isfinite(values)]
    lo, hi = float(finite.min()), float(finite.max())
    margin = RANGE_MARGIN * (hi - lo) if hi > lo else max(abs(lo) * RANGE_MARGIN, 1.0)
    lo, hi = lo - margin, hi + margin
    if integer:
        return int(math.floor(lo)), int(math.ceil(hi))
    return float(f"{lo:.6g}"), float(f"{hi:.6g}")


def fit_label_noise(
    frame: pd.DataFrame, features: list[str], label: str, *, k: int, sample_rows: int, seed: int = 0,
) -> dict[str, Any] | None:
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
        ``max_share``, ``leave_one_out``, ``held_out``, ``margin`` and
        ``rows`` (rows of the frame scored), or None when the check cannot
        run on the frame (no label, no numeric features, too few rows).
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
    return {"max_share": max_share, **estimates, "margin": round(margin, 6), "rows": rows}


def gate_settings(frame: pd.DataFrame, label: str, *, seed: int = 0) -> dict[str, Any]:
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
    settings: dict[str, Any] = {}
    if noise is not None:
        # Catches flipped labels, not data that is merely hard.
        settings["label_noise"] = {"max_share": noise["max_share"]}
    shares = frame[label].value_counts(normalize=True)
    if len(shares):
        rarest = float(shares.min())
        settings["class_balance"] = {"min_share": round(min(defaults.class_balance.min_share, rarest / 2), 6)}
    # Rows sharing their features with a row of another label can land on both sides of the split:
    # data like this leaks by nature, so the leakage threshold starts above its share.
    groups = pd.DataFrame({"features": content_hashes(frame, features), "label": frame[label].astype(str)})
    labels_per_features = groups.groupby("features")["label"].transform("nunique")
    ambiguous = float((labels_per_features > 1).mean())
    if ambiguous > 0:
        settings["leakage"] = {"max_share": round(min(1.0, 1.2 * ambiguous + 0.01), 3)}
    return settings


def init_project(
    data: str | Path,
    label: str,
    *,
    name: str | None = None,
    force: bool = False,
    root: str | Path = ".",
) -> dict[str, Any]:
    """Write ``expectations/NAME.json`` and ``configs/NAME.yaml`` for a trusted data file.

    Args:
        data: The trusted CSV or Parquet file (read only).
        label: Its label column.
        name: Suite and config name; default from the file name.
        force: Overwrite existing files.
        root: The project folder (the config's paths are relative to it).

    Returns:
        ``suite_path``, ``config_path``, ``name``, ``rows``, ``expectations``,
        the config, and how the file fares at its own gate: ``own_rows_rejected``
        and ``own_failures`` (the checks that would reject rows of it).

    Raises:
        DataSourceError: The file is unreadable or has no such label column.
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
    resolved = data_path.resolve()
    shown = resolved.relative_to(root) if resolved.is_relative_to(root) else resolved
    suite = profile_suite(frame, label, name=name, source=str(shown))
    raw = {
        "name": name,
        "data": {"path": str(shown), "label": label, "expectations": f"expectations/{name}.json"},
        "splits": {"ood": []},
        "model": {"family": "mlp", "norm": "batch"},
        "gate": gate_settings(frame, label),
    }
    cfg = validate_config(raw, source=str(config_path))
    # The file should pass its own gate; duplicate rows or a tiny file are what it can still catch.
    own = assess(frame, cfg, suite)
    own_failures = [c.label for c in own.checks if c.outcome in ("quarantined", "blocked")]
    header = (f"# Profiled by `normlab init` from {shown} ({len(frame)} rows, label {label!r}).\n"
              f"# Run it: normlab run configs/{name}.yaml   Check a new batch: normlab validate "
              f"configs/{name}.yaml --data NEW.csv\n")
    suite_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    suite_path.write_text(json.dumps(suite, indent=1) + "\n", encoding="utf-8")
    config_path.write_text(header + yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return {"suite_path": str(suite_path), "config_path": str(config_path), "name": name, "rows": len(frame),
            "expectations": len(suite["expectations"]), "config": cfg,
            "own_rows_rejected": len(frame) - int(own.accepted.size), "own_failures": own_failures}
