"""In-distribution splits by row content, and masks that carve out OOD domains.

ID splits come from a hash of each row's values, not from a random permutation:
a row keeps its split when new rows arrive or the file is reordered, and exact
duplicates can never straddle train and test.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable
from typing import Literal

import numpy as np
import pandas as pd

from normlab.data.fingerprint import row_hashes
from normlab.errors import ConfigError, DataSourceError

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")

# Hash buckets per unit interval: fractions resolve to 1e-6.
_BUCKETS = 1_000_000
# Columns listed in an error message before it is cut short.
_MAX_LISTED = 20


def assign_id_splits(
    df: pd.DataFrame,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    salt: str = "normlab",
) -> pd.Series:
    """Assign each row to "train", "val" or "test" from its content hash.

    bucket = (row_hash % 1e6) / 1e6; bucket < test_fraction is test, below
    test_fraction + val_fraction is val, the rest is train.

    Args:
        df: Rows to split.
        val_fraction: Expected share of validation rows.
        test_fraction: Expected share of test rows.
        salt: Changes the assignment; keep it fixed across runs to keep splits.

    Returns:
        A string Series named "split" with the index of ``df``.

    Raises:
        ConfigError: A fraction is negative or not finite, or they sum to 1 or more.
    """
    _check_fractions(val_fraction, test_fraction)
    buckets = (row_hashes(df, salt=salt) % np.uint64(_BUCKETS)).astype(np.float64) / _BUCKETS
    labels = np.select(
        [buckets < test_fraction, buckets < test_fraction + val_fraction],
        ["test", "val"],
        default="train",
    )
    return pd.Series(labels.astype(object), index=df.index, name="split")


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise ConfigError unless both fractions are finite, >= 0 and sum below 1."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}")
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"val_fraction + test_fraction must be below 1 to leave training rows, "
            f"got {val_fraction!r} + {test_fraction!r}"
        )


def ood_mask_column(df: pd.DataFrame, column: str, values: Iterable[object] | object) -> np.ndarray:
    """Mark rows whose ``column`` holds one of ``values`` (a held-out domain).

    Values are matched as given; text columns also match their string form
    (YAML ``3`` matches "3"), and numeric columns also match numeric text
    ("3" matches 3).

    Args:
        df: Rows to mask.
        column: Column holding the domain.
        values: One value or an iterable of values to hold out.

    Returns:
        Boolean array of shape (len(df),).

    Raises:
        ConfigError: ``column`` is missing or ``values`` is empty.
    """
    series = _get_column(df, column)
    wanted = _as_value_list(values)
    if not wanted:
        raise ConfigError(f"OOD values for column {column!r} are empty; list at least one value")
    candidates: list[object] = list(wanted)
    if pd.api.types.is_object_dtype(series.dtype) or pd.api.types.is_string_dtype(series.dtype):
        candidates += [str(v) for v in wanted if not isinstance(v, str)]
    elif pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        text = [v for v in wanted if isinstance(v, str)]
        if text:
            numbers = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").dropna()
            candidates = [v for v in candidates if not isinstance(v, str)] + numbers.tolist()
    return series.isin(candidates).to_numpy(dtype=bool)


def ood_mask_quantile(
    df: pd.DataFrame,
    column: str,
    q: float,
    side: Literal["above", "below"] = "above",
) -> tuple[np.ndarray, float]:
    """Mark rows strictly above (or below) the ``q`` quantile of a numeric column.

    Strict comparison keeps ties at the threshold in-distribution, so a
    column with many equal values cannot swallow the whole data set. Missing
    values are never marked.

    Args:
        df: Rows to mask.
        column: Numeric column to threshold.
        q: Quantile in (0, 1), e.g. 0.9 with side "above" holds out the top 10 %.
        side: "above" marks values > threshold, "below" marks values < threshold.

    Returns:
        The boolean mask and the threshold used.

    Raises:
        ConfigError: ``column`` is missing or not numeric, ``q`` is outside (0, 1),
            or ``side`` is unknown.
        DataSourceError: ``column`` has no non-missing values.
    """
    series = _get_column(df, column)
    if side not in ("above", "below"):
        raise ConfigError(f"quantile side must be 'above' or 'below', got {side!r}")
    if isinstance(q, bool) or not isinstance(q, numbers.Real) or not 0 < q < 1:
        raise ConfigError(f"quantile q must be a number strictly between 0 and 1, got {q!r}")
    if not pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
        raise ConfigError(
            f"quantile OOD needs a numeric column, but {column!r} has dtype {series.dtype}; "
            "pick a numeric column or use a column-value split"
        )
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isnan(values).all():
        raise DataSourceError(
            f"column {column!r} has no non-missing values, so it has no {q} quantile; pick a column with data"
        )
    threshold = float(np.nanquantile(values, q))
    # NaN compares False on both sides, so missing values stay in-distribution.
    mask = values > threshold if side == "above" else values < threshold
    return mask, threshold


def ood_mask_time(df: pd.DataFrame, column: str, after: str) -> np.ndarray:
    """Mark rows whose time in ``column`` is strictly later than ``after``.

    Args:
        df: Rows to mask.
        column: Datetime column, or text holding dates (ISO 8601 is safest).
        after: Cut-off such as "2024-01-01"; with a tz-aware column a naive
            cut-off is read in the column's time zone.

    Returns:
        Boolean array of shape (len(df),); missing times are never marked.

    Raises:
        ConfigError: ``column`` is missing or numeric, or ``after`` is not a date.
        DataSourceError: ``column`` holds text that is not a date.
    """
    series = _get_column(df, column)
    try:
        cutoff = pd.Timestamp(after)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"time OOD cut-off {after!r} is not a date; write it like '2024-01-01' or '2024-01-01T12:00'"
        ) from exc
    if cutoff is pd.NaT:
        raise ConfigError(f"time OOD cut-off {after!r} is not a date; write it like '2024-01-01'")
    times = _parse_times(series, column)
    col_tz = times.dt.tz
    if col_tz is not None and cutoff.tzinfo is None:
        cutoff = cutoff.tz_localize(col_tz)
    elif col_tz is None and cutoff.tzinfo is not None:
        raise ConfigError(
            f"time OOD cut-off {after!r} has a time zone but column {column!r} has none; "
            "drop the offset from the cut-off"
        )
    return (times > cutoff).to_numpy(dtype=bool)


def _parse_times(series: pd.Series, column: str) -> pd.Series:
    """Return ``series`` as datetimes, or raise naming a value that is not one."""
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        return series
    if pd.api.types.is_numeric_dtype(series.dtype):
        # pandas would read numbers as nanoseconds since 1970: a year column
        # like 2020 would silently become 1970-01-01.
        raise ConfigError(
            f"time OOD needs dates, but column {column!r} is numeric ({series.dtype}); "
            "store dates as ISO 8601 text or datetimes"
        )
    try:
        return _to_datetime(series)
    except (ValueError, TypeError, OverflowError):
        pass
    try:
        # pandas infers one format from the first value; ISO 8601 text that
        # mixes dates and date-times needs the ISO parser.
        return _to_datetime(series, format="ISO8601")
    except (ValueError, TypeError, OverflowError) as exc:
        bad = _first_unparsed(series)
        problem = "dates in more than one format" if bad is None else f"a value that is not a date ({bad!r})"
        raise DataSourceError(
            f"column {column!r} holds {problem}; write every value as ISO 8601 such as '2024-01-31'"
        ) from exc


def _to_datetime(series: pd.Series, **kwargs: str) -> pd.Series:
    """Parse with pandas, reading columns with mixed UTC offsets in UTC."""
    try:
        with warnings.catch_warnings():
            # pandas 2 only warns on mixed UTC offsets and returns objects
            # that cannot be compared; read such columns in UTC instead.
            warnings.simplefilter("error", FutureWarning)
            return pd.to_datetime(series, errors="raise", **kwargs)
    except FutureWarning:
        return pd.to_datetime(series, errors="raise", utc=True, **kwargs)


def _first_unparsed(series: pd.Series) -> object:
    """Return the first non-missing value that is no date in any format, or None."""
    coerced = pd.to_datetime(series, errors="coerce", format="mixed", utc=True)
    bad = series[coerced.isna() & series.notna()]
    return bad.iloc[0] if len(bad) else None


def _get_column(df: pd.DataFrame, column: str) -> pd.Series:
    """Return ``df[column]`` or raise ConfigError listing the columns there are."""
    if column not in df.columns:
        names = [str(c) for c in df.columns]
        listed = ", ".join(names[:_MAX_LISTED]) + (" ..." if len(names) > _MAX_LISTED else "")
        raise ConfigError(f"OOD column {column!r} is not in the data; available columns: {listed}")
    return df[column]


def _as_value_list(values: Iterable[object] | object) -> list[object]:
    """Treat a string or other scalar as one value and any other iterable as many."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        return [values]
    return list(values)
