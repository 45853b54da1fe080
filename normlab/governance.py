"""Expectation suites: Great Expectations 1.x JSON, evaluated fast where the result is provably the same.

A suite file is Great Expectations' own serialisation of an
``ExpectationSuite`` (``name``, ``expectations`` with ``type``/``kwargs``/``meta``).
Each expectation may carry ``meta.why`` (the reason it exists) and
``meta.severity`` (``block``, ``quarantine`` or ``warn``; default ``block``).

Great Expectations evaluates row-wise expectations through its metric graph,
about 50 s for one expectation per column on a 1M x 65 batch. The expectation
types in `FAST_TYPES` are evaluated here with vectorized pandas/numpy code that
reproduces Great Expectations' semantics (nulls ignored by map expectations,
``mostly``, strict bounds, the first 20 unexpected values in row order); the
tests hold both engines to identical results. Every other type, and every
expectation whose arguments fall outside the reproduced cases, still runs
through Great Expectations.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from normlab.errors import ConfigError

SEVERITIES = ("block", "quarantine", "warn")
# Great Expectations' default `partial_unexpected_count`: unexpected values kept per expectation.
SAMPLE_SIZE = 20

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


@dataclass
class CheckResult:
    """The outcome of one expectation or gate check.

    ``outcome`` says what the gate did: ``passed``, ``warned``, ``quarantined``
    (the flagged rows were taken out), ``blocked``, or ``off`` (not evaluated).
    ``rows_flagged`` counts the rows the check singled out; table-level checks
    (``scope == "table"``) single out none.
    """

    name: str
    success: bool
    severity: str = "block"
    column: str | None = None
    unexpected_count: int = 0
    unexpected_sample: list[Any] = field(default_factory=list)
    why: str | None = None
    observed: Any = None
    kind: str = "expectation"
    scope: str = "rows"
    engine: str | None = None
    outcome: str = ""
    rows_flagged: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def label(self) -> str:
        """The check's name with its column, as used in quarantine reasons."""
        return f"{self.name}({self.column})" if self.column else self.name

    def describe(self) -> str:
        """One line a user can act on."""
        where = f" on '{self.column}'" if self.column else ""
        if self.error:
            return f"{self.name}{where}: error: {self.error}"
        what = f": {self.unexpected_count} unexpected" if self.unexpected_count else ""
        lead = "rows" if self.kind == "check" else "e.g."
        sample = f" ({lead} {', '.join(map(str, self.unexpected_sample[:3]))})" if self.unexpected_sample else ""
        shown = self.observed
        if isinstance(shown, list) and len(shown) > 5:
            shown = f"{len(shown)} values"
        observed = f" (observed {shown})" if shown is not None and not self.unexpected_count else ""
        return f"{self.name}{where}{what}{sample}{observed}{_facts(self.details)}"


# Detail keys worth a place in the one-line description.
_FACT_KEYS = ("missing", "unexpected", "columns", "below", "leaked_rows")


def _facts(details: dict[str, Any]) -> str:
    flat = {**(details.get("mismatched") or {}), **details}
    facts = [f"{k} {v}" for k, v in flat.items() if k in _FACT_KEYS]
    return f" [{'; '.join(facts)}]" if facts else ""


@dataclass
class ValidationReport:
    """Every check run on one batch, readable by name, with the row accounting."""

    suite: str
    fingerprint: str
    rows_in: int
    checks: list[CheckResult]
    rows_accepted: int | None = None
    rows_quarantined: int = 0
    source: str | None = None

    @property
    def success(self) -> bool:
        """True when no blocking check failed."""
        return not self.blocking_failures

    @property
    def blocking_failures(self) -> list[CheckResult]:
        """Failed checks that stop the batch (a table-level quarantine rejects the whole batch)."""
        return [c for c in self.checks if not c.success and is_blocking(c)]

    @property
    def failed(self) -> list[str]:
        """A line per failed check, blocking or not."""
        return [c.describe() for c in self.checks if not c.success and c.outcome != "off"]

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able data."""
        return {
            "suite": self.suite,
            "fingerprint": self.fingerprint,
            "source": self.source,
            "rows_in": self.rows_in,
            "rows_accepted": self.rows_in if self.rows_accepted is None else self.rows_accepted,
            "rows_quarantined": self.rows_quarantined,
            "success": self.success,
            "blocked": not self.success,
            "failed": self.failed,
            "checks": [asdict(c) for c in self.checks],
        }

def is_blocking(check: CheckResult) -> bool:
    """Whether a failure of this check stops the batch."""
    return check.severity == "block" or (check.severity == "quarantine" and check.scope == "table")


@dataclass
class Evaluated:
    """One evaluated expectation: its result and the positions of its unexpected rows."""

    result: CheckResult
    rows: np.ndarray | None = None  # int64 row positions; None for table-level expectations


def load_suite(path: str | Path) -> dict[str, Any]:
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
        severity = (exp.get("meta") or {}).get("severity", "block")
        if severity not in SEVERITIES:
            raise ConfigError(
                f"{p}: expectations[{i}] {exp.get('type')} has severity {severity!r}; allowed: {', '.join(SEVERITIES)}"
            )
    return suite


def positional(df: pd.DataFrame) -> pd.DataFrame:
    """The frame with a 0..n-1 index, copied only when its index is something else."""
    index = df.index
    if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
        return df
    return df.reset_index(drop=True)


def take_rows(df: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    """The rows at ``positions`` with a fresh 0..n-1 index (one copy, where reset_index would make two)."""
    out = df.take(positions)
    out.index = pd.RangeIndex(len(out))
    return out


def expectation_severity(exp: dict[str, Any], overrides: dict[str, str] | None = None) -> str:
    """The severity of a suite expectation: config override by 'type:column', then by type, then its meta."""
    overrides = overrides or {}
    column = exp.get("kwargs", {}).get("column")
    if column is not None and f"{exp['type']}:{column}" in overrides:
        return overrides[f"{exp['type']}:{column}"]
    if exp["type"] in overrides:
        return overrides[exp["type"]]
    return (exp.get("meta") or {}).get("severity", "block")


def evaluate_suite(
    df: pd.DataFrame,
    suite: dict[str, Any],
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
    deferred: list[tuple[int, dict[str, Any]]] = []
    for position, exp in enumerate(suite["expectations"]):
        severity = expectation_severity(exp, overrides)
        if severity == "off":
            slots.append(Evaluated(_off_result(exp)))
            continue
        fast = evaluate_fast(df, exp) if engine == "auto" else None
        if fast is None:
            deferred.append((position, exp))
        slots.append(fast)
    if deferred:
        gx_results = _evaluate_gx(df, [e for _, e in deferred], suite.get("name"))
        for (position, _), evaluated in zip(deferred, gx_results, strict=True):
            slots[position] = evaluated
    out: list[Evaluated] = []
    for exp, evaluated in zip(suite["expectations"], slots, strict=True):
        evaluated.result.severity = expectation_severity(exp, overrides)
        out.append(evaluated)
    return out


# Vectorized evaluation --------------------------------------------------------------------


def evaluate_fast(df: pd.DataFrame, exp: dict[str, Any]) -> Evaluated | None:
    """Evaluate one expectation with numpy, or return None when Great Expectations must do it."""
    kwargs = exp.get("kwargs", {})
    kind = exp["type"]
    if kind not in FAST_TYPES or any(isinstance(v, dict) for v in kwargs.values()):
        return None  # unsupported type, or suite parameters ({"$PARAMETER": ...}) to resolve
    if kind == "expect_table_row_count_to_be_between":
        return _fast_row_count(df, exp, kwargs)
    if kind == "expect_table_columns_to_match_set":
        return _fast_columns_match_set(df, exp, kwargs)
    allowed = {"column", "mostly"} | _MAP_KWARGS[kind]
    if set(kwargs) - allowed or not isinstance(kwargs.get("column"), str) or not _valid_mostly(kwargs.get("mostly", 1)):
        return None
    column = kwargs["column"]
    if column not in df.columns:
        return Evaluated(_result(exp, success=False, engine="numpy", scope="table",
                                 error=f'Error: The column "{column}" in BatchData does not exist.'))
    series = df[column]
    if kind == "expect_column_values_to_not_be_null":
        return _fast_not_null(series, exp)
    if kind == "expect_column_values_to_be_between":
        return _fast_between(series, exp, kwargs)
    return _fast_in_set(series, exp, kwargs)


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
    exp: dict[str, Any], values: np.ndarray, unexpected: np.ndarray, considered: int, total: int
) -> Evaluated:
    """Shape a map expectation's outcome like Great Expectations' SUMMARY result."""
    positions = np.flatnonzero(unexpected)
    count = int(positions.size)
    mostly = exp["kwargs"].get("mostly", 1)
    success = True if total == 0 or considered == 0 else _mostly_success(considered, count, mostly)
    sample = [plain(v) for v in values[positions[:SAMPLE_SIZE]]]
    result = _result(exp, success=success, engine="numpy", scope="rows", unexpected_count=count, sample=sample)
    return Evaluated(result, positions.astype(np.int64))


def _fast_not_null(series: pd.Series, exp: dict[str, Any]) -> Evaluated:
    null = series.isna().to_numpy()
    # Not-null counts every row; the others count non-null rows only.
    return _map_result(exp, series.to_numpy(), null, considered=len(series), total=len(series))


def _fast_between(series: pd.Series, exp: dict[str, Any], kwargs: dict[str, Any]) -> Evaluated | None:
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


def _fast_in_set(series: pd.Series, exp: dict[str, Any], kwargs: dict[str, Any]) -> Evaluated | None:
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


def _fast_row_count(df: pd.DataFrame, exp: dict[str, Any], kwargs: dict[str, Any]) -> Evaluated | None:
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
    return Evaluated(_result(exp, success=bool(above and below), engine="numpy", scope="table", observed=n))


def _fast_columns_match_set(df: pd.DataFrame, exp: dict[str, Any], kwargs: dict[str, Any]) -> Evaluated | None:
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
    return Evaluated(_result(exp, success=success, engine="numpy", scope="table", observed=sorted(actual),
                             details={"mismatched": mismatched} if mismatched else {}))


def _result(
    exp: dict[str, Any],
    *,
    success: bool,
    engine: str | None,
    scope: str,
    unexpected_count: int = 0,
    sample: list[Any] | None = None,
    observed: Any = None,
    details: dict[str, Any] | None = None,
    error: str | None = None,
) -> CheckResult:
    meta = exp.get("meta") or {}
    kwargs = exp.get("kwargs", {})
    return CheckResult(
        name=exp["type"],
        success=success,
        severity=meta.get("severity", "block"),
        column=kwargs.get("column"),
        unexpected_count=unexpected_count,
        unexpected_sample=sample or [],
        why=meta.get("why"),
        observed=observed,
        kind="expectation",
        scope=scope,
        engine=engine,
        rows_flagged=unexpected_count,
        details=details or {},
        error=error,
    )


def _off_result(exp: dict[str, Any]) -> CheckResult:
    result = _result(exp, success=True, engine=None, scope="table")
    result.outcome = "off"
    return result


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


def _evaluate_gx(df: pd.DataFrame, expectations: list[dict[str, Any]], name: str | None) -> list[Evaluated]:
    """Run expectations through Great Expectations; results come back in the given order.

    COMPLETE results carry every unexpected row's index, which is the row
    position here (the frame has a RangeIndex), so quarantine can find the rows.
    """
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = _ephemeral_context()
    tagged = [
        {"type": e["type"], "kwargs": e.get("kwargs", {}), "meta": {**(e.get("meta") or {}), _POSITION_KEY: i}}
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
        result = _result(
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


def plain(value: Any) -> Any:
    """Make numpy scalars and containers JSON-friendly; NaN becomes None, infinities text."""
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return None
        return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if value is pd.NaT or value is pd.NA:
        return None
    if hasattr(value, "item") and callable(value.item):
        try:
            return plain(value.item())
        except (ValueError, TypeError):
            return str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value
