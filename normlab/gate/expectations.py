"""Expectation suites: Great Expectations 1.x JSON, evaluated fast where the result is provably the same.

A suite file is Great Expectations' own serialisation of an
``ExpectationSuite`` (``name``, ``expectations`` with ``type``/``kwargs``/``meta``),
read into a `normlab.gate.contracts.Suite`.
Each expectation may carry ``meta.why`` (the reason it exists) and
``meta.severity`` (``block``, ``quarantine`` or ``warn``; default ``block``).

Great Expectations evaluates row-wise expectations through its metric graph,
about 50 s for one expectation per column on a 1M x 65 batch. The expectation
types in `FAST_TYPES` are evaluated here with vectorized pandas/numpy code that
reproduces Great Expectations' semantics (nulls ignored by map expectations,
``mostly``, strict bounds, the first 20 unexpected values in row order); the
tests hold both engines to identical results. Every other type, and every
expectation whose arguments fall outside the reproduced cases, still runs
through Great Expectations. The suite readers at the end say what a suite
declares about the batch's columns and labels, for the gate's own checks.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from normlab.errors import ConfigError
from normlab.gate.contracts import Expectation, Suite
from normlab.gate.results import SAMPLE_SIZE, CheckResult, Evaluated, expectation_result, plain, positional

SEVERITIES = ("block", "quarantine", "warn")
FAST_TYPES = (
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_in_set",
    "expect_table_row_count_to_be_between",
    "expect_table_columns_to_match_set",
)
# Numeric dtypes whose comparisons the vectorized path reproduces exactly.
_FAST_NUMERIC_KINDS = ("i", "u", "f")
# Meta key that carries an expectation's suite position through Great Expectations,
# which returns results in its own order.
_POSITION_KEY = "normlab_position"
_COLUMN_SET_TYPES = ("expect_table_columns_to_match_set", "expect_table_columns_to_match_ordered_list")


def load_suite(path: str | Path) -> Suite:
    """Read a suite JSON file and check its shape and severities."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"expectation suite not found: {p} (set data.expectations, or null for none)")
    try:
        suite = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not a valid JSON suite ({exc})") from None
    if not isinstance(suite, dict) or not isinstance(suite.get("expectations"), list):
        raise ConfigError(f"{p}: a suite needs 'name' and a list of 'expectations'")
    for i, exp in enumerate(suite["expectations"]):
        shaped = isinstance(exp, dict) and isinstance(exp.get("type"), str) and isinstance(exp.get("kwargs", {}), dict)
        if not shaped:
            raise ConfigError(f"{p}: expectations[{i}] needs a 'type' and a 'kwargs' mapping")
    try:
        loaded = Suite.model_validate(suite)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(map(str, problem["loc"]))
        raise ConfigError(f"{p}: not a valid suite ({where}: {problem['msg']})") from None
    for i, exp in enumerate(loaded.expectations):
        if exp.severity not in SEVERITIES:
            raise ConfigError(
                f"{p}: expectations[{i}] {exp.type} has severity {exp.severity!r}; allowed: {', '.join(SEVERITIES)}"
            )
    return loaded


def expectation_severity(exp: Expectation, overrides: dict[str, str] | None = None) -> str:
    """The severity of a suite expectation: config override by 'type:column', then by type, then its meta."""
    overrides = overrides or {}
    column = exp.column
    if column is not None and f"{exp.type}:{column}" in overrides:
        return overrides[f"{exp.type}:{column}"]
    if exp.type in overrides:
        return overrides[exp.type]
    return exp.severity


def evaluate_suite(
    df: pd.DataFrame,
    suite: Suite,
    *,
    engine: str = "auto",
    overrides: dict[str, str] | None = None,
) -> list[Evaluated]:
    """Evaluate every expectation of a suite on a frame, in suite order.

    Args:
        df: The batch, with a default RangeIndex (row positions are reported).
        suite: The suite as loaded by `load_suite`.
        engine: ``auto`` evaluates `FAST_TYPES` with numpy and the rest with
            Great Expectations; ``gx`` uses Great Expectations for all.
        overrides: Severity overrides keyed by type or ``type:column``; an
            expectation whose severity is ``off`` is listed but not evaluated.

    Returns:
        One `Evaluated` per expectation, in suite order.
    """
    df = positional(df)
    slots: list[Evaluated | None] = []
    deferred: list[tuple[int, Expectation]] = []
    for position, exp in enumerate(suite.expectations):
        severity = expectation_severity(exp, overrides)
        if severity == "off":
            slots.append(Evaluated(_off_result(exp)))
            continue
        fast = evaluate_fast(df, exp) if engine == "auto" else None
        if fast is None:
            deferred.append((position, exp))
        slots.append(fast)
    if deferred:
        gx_results = _evaluate_gx(df, [e for _, e in deferred], suite.name)
        for (position, _), evaluated in zip(deferred, gx_results, strict=True):
            slots[position] = evaluated
    out: list[Evaluated] = []
    for exp, evaluated in zip(suite.expectations, slots, strict=True):
        evaluated.result.severity = expectation_severity(exp, overrides)
        out.append(evaluated)
    return out


def _off_result(exp: Expectation) -> CheckResult:
    result = expectation_result(exp, success=True, engine=None, scope="table")
    result.outcome = "off"
    return result


# Vectorized evaluation --------------------------------------------------------------------


def evaluate_fast(df: pd.DataFrame, exp: Expectation) -> Evaluated | None:
    """Evaluate one expectation with numpy, or return None when Great Expectations must do it."""
    kwargs = exp.kwargs
    kind = exp.type
    if kind not in FAST_TYPES or any(isinstance(v, dict) for v in kwargs.values()):
        return None  # unsupported type, or suite parameters ({"$PARAMETER": ...}) to resolve
    if kind == "expect_table_row_count_to_be_between":
        return _fast_row_count(df, exp)
    if kind == "expect_table_columns_to_match_set":
        return _fast_columns_match_set(df, exp)
    allowed = {"column", "mostly"} | _MAP_KWARGS[kind]
    if set(kwargs) - allowed or not isinstance(kwargs.get("column"), str) or not _valid_mostly(kwargs.get("mostly", 1)):
        return None
    column = kwargs["column"]
    if column not in df.columns:
        return Evaluated(expectation_result(exp, success=False, engine="numpy", scope="table",
                                            error=f'Error: The column "{column}" in BatchData does not exist.'))
    series = df[column]
    if kind == "expect_column_values_to_not_be_null":
        return _fast_not_null(series, exp)
    if kind == "expect_column_values_to_be_between":
        return _fast_between(series, exp)
    return _fast_in_set(series, exp)


_MAP_KWARGS: dict[str, set[str]] = {
    "expect_column_values_to_not_be_null": set(),
    "expect_column_values_to_be_between": {"min_value", "max_value", "strict_min", "strict_max"},
    "expect_column_values_to_be_in_set": {"value_set"},
}


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _valid_mostly(mostly: Any) -> bool:
    return _is_number(mostly) and 0 <= mostly <= 1


def _mostly_success(considered: int, unexpected: int, mostly: float) -> bool:
    # The same float arithmetic as Great Expectations' `_mostly_success`.
    return (float(considered) - float(unexpected)) / float(considered) >= mostly


def _map_result(
    exp: Expectation, values: np.ndarray, unexpected: np.ndarray, considered: int, total: int
) -> Evaluated:
    """Shape a map expectation's outcome like Great Expectations' SUMMARY result."""
    positions = np.flatnonzero(unexpected)
    count = int(positions.size)
    mostly = exp.kwargs.get("mostly", 1)
    success = True if total == 0 or considered == 0 else _mostly_success(considered, count, mostly)
    sample = [plain(v) for v in values[positions[:SAMPLE_SIZE]]]
    result = expectation_result(exp, success=success, engine="numpy", scope="rows", unexpected_count=count,
                                sample=sample)
    return Evaluated(result, positions.astype(np.int64))


def _fast_not_null(series: pd.Series, exp: Expectation) -> Evaluated:
    null = series.isna().to_numpy()
    # Not-null counts every row; the others count non-null rows only.
    return _map_result(exp, series.to_numpy(), null, considered=len(series), total=len(series))


def _fast_between(series: pd.Series, exp: Expectation) -> Evaluated | None:
    kwargs = exp.kwargs
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    strict_min, strict_max = kwargs.get("strict_min", False), kwargs.get("strict_max", False)
    dtype = series.dtype
    if not isinstance(dtype, np.dtype) or dtype.kind not in _FAST_NUMERIC_KINDS or dtype == np.uint64:
        return None  # text, dates, nullable extension types: Great Expectations decides
    if (lo is None and hi is None) or any(v is not None and not _is_number(v) for v in (lo, hi)):
        return None
    if lo is not None and hi is not None and lo > hi:
        return None  # Great Expectations reports this as an error; let it word it
    if not all(isinstance(s, bool) for s in (strict_min, strict_max)):
        return None
    values = series.to_numpy()
    nulls = int(np.isnan(values).sum()) if dtype.kind == "f" else 0
    # "Not within bounds" is "below lo or above hi": NaN compares False both ways, so the nulls
    # Great Expectations ignores never count, and no mask of them is needed.
    unexpected = np.zeros(len(values), dtype=bool)
    if not (nulls == 0 and _within(values, lo, hi, strict_min, strict_max)):
        if lo is not None:
            unexpected |= (values <= lo) if strict_min else (values < lo)
        if hi is not None:
            unexpected |= (values >= hi) if strict_max else (values > hi)
    return _map_result(exp, values, unexpected, considered=len(values) - nulls, total=len(values))


def _within(values: np.ndarray, lo: Any, hi: Any, strict_min: bool, strict_max: bool) -> bool:
    """Whether every value is within bounds, from the extremes alone (the clean batch's shortcut)."""
    if values.size == 0:
        return True
    low, high = values.min(), values.max()
    above = lo is None or (low > lo if strict_min else low >= lo)
    below = hi is None or (high < hi if strict_max else high <= hi)
    return bool(above and below)


def _fast_in_set(series: pd.Series, exp: Expectation) -> Evaluated | None:
    kwargs = exp.kwargs
    value_set = kwargs.get("value_set")
    if not isinstance(value_set, list) or not all(
        v is None or isinstance(v, (str, bool, numbers.Real)) for v in value_set
    ):
        return None
    if not isinstance(series.dtype, np.dtype) or series.dtype.kind not in (*_FAST_NUMERIC_KINDS, "b", "O"):
        return None  # categorical, string and date extension dtypes: Great Expectations decides
    null = series.isna().to_numpy()
    # Great Expectations' pandas metric is `column.isin(value_set)` on the non-null rows.
    unexpected = ~series.isin(value_set).to_numpy() & ~null
    considered = len(series) - int(null.sum())
    return _map_result(exp, series.to_numpy(), unexpected, considered=considered, total=len(series))


def _fast_row_count(df: pd.DataFrame, exp: Expectation) -> Evaluated | None:
    kwargs = exp.kwargs
    if set(kwargs) - {"min_value", "max_value", "strict_min", "strict_max"}:
        return None
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    if (lo is None and hi is None) or any(v is not None and not _is_number(v) for v in (lo, hi)):
        return None
    if lo is not None and hi is not None and lo > hi:
        return None  # an invalid suite entry: Great Expectations rejects it with its own words
    strict_min, strict_max = kwargs.get("strict_min", False), kwargs.get("strict_max", False)
    if not all(isinstance(s, bool) for s in (strict_min, strict_max)):
        return None
    n = len(df)
    above = True if lo is None else (n > lo if strict_min else n >= lo)
    below = True if hi is None else (n < hi if strict_max else n <= hi)
    success = bool(above and below)
    return Evaluated(expectation_result(exp, success=success, engine="numpy", scope="table", observed=n))


def _fast_columns_match_set(df: pd.DataFrame, exp: Expectation) -> Evaluated | None:
    kwargs = exp.kwargs
    if set(kwargs) - {"column_set", "exact_match"}:
        return None
    expected, exact = kwargs.get("column_set"), kwargs.get("exact_match", True)
    if not isinstance(expected, list) or not all(isinstance(c, str) for c in expected) or not isinstance(exact, bool):
        return None
    actual = {str(c) for c in df.columns}
    unexpected, missing = sorted(actual - set(expected)), sorted(set(expected) - actual)
    mismatched: dict[str, list[str]] = {}
    if unexpected:
        mismatched["unexpected"] = unexpected
    if missing:
        mismatched["missing"] = missing
    success = not mismatched or (not exact and not missing)
    return Evaluated(expectation_result(exp, success=success, engine="numpy", scope="table", observed=sorted(actual),
                                        details={"mismatched": mismatched} if mismatched else {}))


# Great Expectations -----------------------------------------------------------------------


def _ephemeral_context():
    """An in-memory Great Expectations context with no progress bars or analytics."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _evaluate_gx(df: pd.DataFrame, expectations: list[Expectation], name: str | None) -> list[Evaluated]:
    """Run expectations through Great Expectations; results come back in the given order.

    COMPLETE results carry every unexpected row's index, which is the row
    position here (the frame has a RangeIndex), so quarantine can find the rows.
    """
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = _ephemeral_context()
    tagged = [
        {"type": e.type, "kwargs": e.kwargs, "meta": {**(e.meta or {}), _POSITION_KEY: i}}
        for i, e in enumerate(expectations)
    ]
    try:
        gx_suite = gx.ExpectationSuite(name=name or "suite", expectations=tagged)
    except Exception as exc:  # noqa: BLE001 - pydantic and GE raise many types for a bad suite entry
        raise ConfigError(f"expectation suite {name!r}: {' '.join(str(exc).split())[:300]}") from None
    batch = (
        context.data_sources.add_pandas("normlab")
        .add_dataframe_asset("batch")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": df})
    )
    validation = batch.validate(gx_suite, result_format={"result_format": "COMPLETE"})
    out: list[Evaluated | None] = [None] * len(expectations)
    for res in validation.results:
        conf = res.expectation_config
        position = int(conf.meta[_POSITION_KEY])
        exp = expectations[position]
        details = res.result or {}
        error = _gx_error(res.exception_info)
        rows = None
        if "unexpected_index_list" in details and error is None:
            rows = np.asarray(details["unexpected_index_list"], dtype=np.int64)
        result = expectation_result(
            exp,
            success=bool(res.success) and error is None,
            engine="gx",
            # Map expectations name their unexpected rows; aggregates and errors cannot.
            scope="rows" if rows is not None else "table",
            unexpected_count=int(details.get("unexpected_count") or 0),
            sample=[plain(v) for v in (details.get("partial_unexpected_list") or [])[:SAMPLE_SIZE]],
            observed=plain(details.get("observed_value")),
            details=plain(details.get("details") or {}),
            error=error,
        )
        out[position] = Evaluated(result, rows)
    return [e for e in out if e is not None]


def _gx_error(info: Any) -> str | None:
    """The first exception message in Great Expectations' exception info (flat or per metric)."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "error")
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message") or "error")
    return None


# Suite readers ----------------------------------------------------------------------------


def suite_columns(suite: Suite | None) -> tuple[list[str], list[str] | None]:
    """Columns the suite's expectations refer to, and the column set it declares (if any)."""
    referenced: list[str] = []
    declared: list[str] | None = None
    for exp in suite.expectations if suite else []:
        kwargs = exp.kwargs
        if isinstance(kwargs.get("column"), str) and kwargs["column"] not in referenced:
            referenced.append(kwargs["column"])
        if exp.type in _COLUMN_SET_TYPES and kwargs.get("exact_match", True):
            listed = kwargs.get("column_set") or kwargs.get("column_list")
            if isinstance(listed, list):
                declared = [str(c) for c in listed]
    return referenced, declared


def unlabelled_suite(suite: Suite | None, label: str) -> Suite | None:
    """The suite as it applies to a batch without its label column (new data awaiting labels).

    Expectations on the label are dropped and the label leaves any declared column set.
    """
    if suite is None:
        return None
    kept = []
    for exp in suite.expectations:
        kwargs = exp.kwargs
        if kwargs.get("column") == label:
            continue
        for key in ("column_set", "column_list"):
            if isinstance(kwargs.get(key), list) and label in kwargs[key]:
                exp = exp.model_copy(update={"kwargs": {**kwargs, key: [c for c in kwargs[key] if c != label]}})
        kept.append(exp)
    return suite.model_copy(update={"expectations": kept})


def known_labels(suite: Suite | None, label: str) -> list[Any] | None:
    """The label set a suite declares (``expect_column_values_to_be_in_set`` on the label), if any."""
    for exp in suite.expectations if suite else []:
        kwargs = exp.kwargs
        if exp.type == "expect_column_values_to_be_in_set" and kwargs.get("column") == label:
            values = kwargs.get("value_set")
            if isinstance(values, list):
                return values
    return None
