"""Column types inferred from a table's values, not taken from its reader.

A text column whose values are numbers in at least ``NUMERIC_MIN_SHARE`` of its
rows is numeric, and its few other values are reported as stray: the gate's
types check rejects those rows. ``normlab init`` profiles a trusted file with
these types (`normlab.profiling`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# A text column is numeric when at least this share of its non-missing values parse as numbers (as
# the gate's types check parses them, with pandas.to_numeric): one odd value in twenty is a broken
# row, more is a column that holds text. Its other values are stray and fail the types check.
NUMERIC_MIN_SHARE = 0.95
# Stray values shown per column.
STRAY_EXAMPLES = 3
# Beyond 2**53 a float64 no longer holds every integer: a float column with larger values is float.
EXACT_INT = 2**53


@dataclass
class ColumnType:
    """What `infer_types` found in one column.

    Attributes:
        kind: ``integer``, ``float``, ``boolean``, ``datetime``, ``text`` or
            ``empty`` (missing in every row).
        values: How many of its values are not missing.
        from_text: Numbers read as text (a stray value kept the reader from parsing them).
        stray: Positions of the values that are not numbers in a column inferred numeric.
        examples: A few distinct stray values, as read.
    """

    kind: str
    values: int
    from_text: bool = False
    stray: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    examples: list[str] = field(default_factory=list)

    @property
    def numeric(self) -> bool:
        """Whether the gate treats the column as numbers."""
        return self.kind in ("integer", "float")


def infer_types(frame: pd.DataFrame) -> tuple[dict[str, ColumnType], pd.DataFrame]:
    """Each column's type, and the frame with text columns inferred numeric converted to numbers.

    A text column is numeric when at least ``NUMERIC_MIN_SHARE`` of its
    non-missing values parse with `pandas.to_numeric` (the gate's types check
    parses them the same way); the values that do not are stray, and are
    missing in the converted frame.
    """
    types: dict[str, ColumnType] = {}
    converted: dict[str, pd.Series] = {}
    for column in frame.columns:
        series = frame[column]
        present = series.notna()
        count = int(present.sum())
        kind = _kind(series) if count else "empty"
        if kind != "text":
            types[str(column)] = ColumnType(kind, count)
            continue
        numbers = pd.to_numeric(series, errors="coerce")
        parsed = numbers.notna()
        if not pd.api.types.is_numeric_dtype(numbers.dtype) or int(parsed.sum()) < NUMERIC_MIN_SHARE * count:
            types[str(column)] = ColumnType("text", count)
            continue
        stray = np.flatnonzero((present & ~parsed).to_numpy())
        examples = list(dict.fromkeys(str(v) for v in series.iloc[stray]))[:STRAY_EXAMPLES]
        types[str(column)] = ColumnType(_kind(numbers), count, from_text=True, stray=stray, examples=examples)
        converted[column] = numbers
    return types, (frame.assign(**converted) if converted else frame)


def type_summary(types: dict[str, ColumnType]) -> list[str]:
    """Lines telling what was inferred: columns by type, then each column with stray values."""
    by_kind: dict[str, list[str]] = {}
    for column, inferred in types.items():
        by_kind.setdefault(inferred.kind, []).append(column)
    lines = ["types: " + "; ".join(f"{kind} ({len(cols)}): {', '.join(cols)}" for kind, cols in by_kind.items())]
    for column, inferred in types.items():
        if inferred.stray.size:
            count = int(inferred.stray.size)
            shown = ", ".join(f"{v!r}" for v in inferred.examples)
            rows = ", ".join(str(r) for r in inferred.stray[:STRAY_EXAMPLES]) + (", ..." if count > STRAY_EXAMPLES else "")
            lines.append(
                f"{column}: {inferred.kind}, numbers in {inferred.values - count} of {inferred.values} values; "
                f"{count} stray {'value' if count == 1 else 'values'} ({shown}) in row{'s' if count > 1 else ''} "
                f"{rows} {'fails' if count == 1 else 'fail'} the types check"
            )
        elif inferred.kind == "empty":
            lines.append(f"{column}: missing in every row; only its presence is checked, and it is no feature")
    return lines


def _kind(series: pd.Series) -> str:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_float_dtype(dtype):
        # CSV readers turn an integer column with gaps into floats: keep it integer, while a float holds it exactly.
        values = series.dropna().to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        integral = finite.size and np.all(finite == np.round(finite)) and np.abs(finite).max() <= EXACT_INT
        return "integer" if integral else "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    return "text"

