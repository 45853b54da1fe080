"""The data gate's own checks: what single-column expectations cannot say.

Each check is a pure, vectorized function over a frame (or over hashes) that
returns an `Evaluated`: a `CheckResult` plus, for row-level checks, the
positions of the rows it singles out. Severities are applied by the caller
(`normlab.gate.assessment`); a check only decides pass or fail. Which checks
the gate runs, in which stage, on which rows, is `normlab.gate.check_registry`.

Row content is compared through 64-bit hashes of canonical values (numbers as
float64, so 1 and 1.0 match across files; other values as text). Exact
duplicates are confirmed value by value, so a hash collision cannot reject a
row.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from normlab.gate.contracts import Suite
from normlab.gate.results import SAMPLE_SIZE, CheckResult, Evaluated, is_blocking, plain

WHY = {
    "columns": "training needs every column the suite and config name, and no surprise inputs",
    "types": "text in a numeric column is a broken export or a shifted field",
    "non_finite": "NaN and infinities poison normalization statistics and gradients",
    "duplicates": "copies over-weight rows and inflate evaluation when they straddle splits",
    "contamination": "a row from an earlier evaluation split must not be trained on",
    "label_noise": "labels that disagree with their neighbours signal noise or poisoning",
    "class_balance": "a class too rare to learn or to evaluate",
    "row_count": "too few rows to train and evaluate, or far more than expected",
    "rejected_share": "a batch that loses this many rows is broken as a whole",
    "leakage": "an evaluation row also seen in training inflates every metric",
    "image_layout": "a file outside root/<label>/<image> has no label, or is not an image",
    "image_readable": "a file Pillow cannot decode cannot be trained on",
    "image_mode": "an unexpected mode (CMYK, 16-bit, float) is a different kind of image",
    "image_size": "an image far smaller or larger than allowed is a thumbnail, a scan or a mistake",
    "image_duplicates": "copies over-weight images and inflate evaluation when they straddle splits",
    "empty_class": "an empty class folder silently drops a class from the model",
}
# Rows hashed per chunk (each column's chunk stays in cache) and threads hashing chunks
# (numpy releases the GIL).
_HASH_CHUNK = 32_768
_HASH_THREADS = 2


def _check(name: str, success: bool, *, scope: str, rows: np.ndarray | None = None, observed: Any = None,
           details: dict[str, Any] | None = None, column: str | None = None) -> Evaluated:
    flagged = 0 if rows is None else int(rows.size)
    result = CheckResult(
        name=name,
        success=success,
        column=column,
        unexpected_count=flagged,
        unexpected_sample=[] if rows is None else [int(r) for r in rows[:SAMPLE_SIZE]],
        why=WHY.get(name),
        observed=plain(observed),
        kind="check",
        scope=scope,
        rows_flagged=flagged,
        details=plain(details or {}),
    )
    return Evaluated(result, rows)


def off_result(name: str) -> Evaluated:
    """The result of a check that did not run (severity ``off``)."""
    result = CheckResult(name=name, success=True, kind="check", scope="table", why=WHY.get(name), outcome="off")
    return Evaluated(result)


def outcome_of(result: CheckResult, severity: str) -> str:
    """What a check's result means under its severity: passed, warned, quarantined, blocked or off."""
    if severity == "off":
        return "off"
    if result.success:
        return "passed"
    if severity == "warn":
        return "warned"
    return "blocked" if is_blocking(result) else "quarantined"


def skipped(name: str, reason: str) -> Evaluated:
    """A check that could not run on this batch (it passes, saying why)."""
    return _check(name, True, scope="table", observed=f"skipped: {reason}")


# Hashing --------------------------------------------------------------------------------


def _mix(bits: np.ndarray) -> np.ndarray:
    """pandas' numeric hash, the splitmix64 finalizer, applied in place to uint64 values."""
    with np.errstate(over="ignore"):
        bits ^= bits >> np.uint64(30)
        bits *= np.uint64(0xBF58476D1CE4E5B9)
        bits ^= bits >> np.uint64(27)
        bits *= np.uint64(0x94D049BB133111EB)
        bits ^= bits >> np.uint64(31)
    return bits


def _hash_source(series: pd.Series) -> tuple[bool, np.ndarray]:
    """(True, the numbers) for a numeric column, hashed later chunk by chunk; else (False, its value hashes)."""
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "iufb":
        return True, series.to_numpy()
    if isinstance(dtype, np.dtype) and dtype.kind in "mM":
        return False, pd.util.hash_array(series.to_numpy())
    return False, pd.util.hash_array(series.astype(str).to_numpy(dtype=object))


def content_hashes(df: pd.DataFrame, columns: Sequence[str], *, start: np.ndarray | None = None) -> np.ndarray:
    """One uint64 hash per row of ``columns``' canonical values (order matters).

    Each value hashes as pandas hashes it (numbers by their float64 value, so
    1 == 1.0 and -0.0 == 0.0; other values by their text); a row combines its
    values as pandas combines columns, then mixes once more. Rows are done in
    chunks that stay in cache, by as many threads as numpy can keep busy.

    Args:
        df: The rows.
        columns: Columns to hash, in order.
        start: Row hashes of other columns to extend (a whole-row hash can
            build on a feature hash instead of hashing the features twice).
    """
    n = len(df)
    if not columns:
        return np.zeros(n, dtype=np.uint64) if start is None else start
    sources = [_hash_source(df[c]) for c in columns]
    out = np.empty(n, dtype=np.uint64)

    def hash_chunk(begin: int) -> None:
        end = min(begin + _HASH_CHUNK, n)
        acc = np.full(end - begin, 0x345678, dtype=np.uint64) if start is None else start[begin:end].copy()
        mult = np.uint64(1000003)
        with np.errstate(over="ignore"):
            for i, (numeric, values) in enumerate(sources):
                if numeric:
                    part = values[begin:end].astype(np.float64)
                    part += 0.0  # -0.0 becomes 0.0
                    acc ^= _mix(part.view(np.uint64))
                else:
                    acc ^= values[begin:end]
                # CPython's tuple-hash combine, as pandas combines columns.
                acc *= mult
                inverse = len(sources) - i
                mult += np.uint64(82520 + inverse + inverse)
            acc += np.uint64(97531)
        out[begin:end] = _mix(acc)

    with ThreadPoolExecutor(max_workers=_HASH_THREADS) as pool:
        list(pool.map(hash_chunk, range(0, n, _HASH_CHUNK)))
    return out


# Schema ---------------------------------------------------------------------------------


def check_columns(df: pd.DataFrame, *, required: Sequence[str], expected: Sequence[str] | None) -> Evaluated:
    """Missing required columns, and columns outside the expected set (when one is known)."""
    present = [str(c) for c in df.columns]
    missing = [c for c in dict.fromkeys([*required, *(expected or [])]) if c not in present]
    unexpected = [c for c in present if expected is not None and c not in set(expected) | set(required)]
    details: dict[str, Any] = {}
    if missing:
        details["missing"] = missing
    if unexpected:
        details["unexpected"] = unexpected
    observed = f"{len(missing)} missing, {len(unexpected)} unexpected"
    return _check("columns", not details, scope="table", observed=observed, details=details)


def numeric_columns_of_suite(suite: Suite | None) -> list[str]:
    """Columns a suite treats as numeric: numeric bounds, or a value set of numbers only."""
    if not suite:
        return []
    out: list[str] = []
    for exp in suite.expectations:
        kwargs = exp.kwargs
        column = kwargs.get("column")
        if not isinstance(column, str):
            continue
        if exp.type == "expect_column_values_to_be_between":
            bounds = [kwargs.get("min_value"), kwargs.get("max_value")]
            numeric = any(_is_real(b) for b in bounds) and all(b is None or _is_real(b) for b in bounds)
        elif exp.type == "expect_column_values_to_be_in_set":
            values = kwargs.get("value_set") or []
            numeric = bool(values) and all(_is_real(v) for v in values)
        else:
            numeric = False
        if numeric and column not in out:
            out.append(column)
    return out


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_types(df: pd.DataFrame, numeric: Sequence[str]) -> tuple[Evaluated, dict[str, pd.Series]]:
    """Rows holding text in a column that should be numeric.

    Returns:
        The result, and each such column converted to numbers (unparseable
        values become NaN) for the caller to use once those rows are out.
    """
    bad = np.zeros(len(df), dtype=bool)
    converted: dict[str, pd.Series] = {}
    per_column: dict[str, int] = {}
    for column in numeric:
        if column not in df.columns or pd.api.types.is_numeric_dtype(df[column].dtype):
            continue
        raw = df[column]
        numbers = pd.to_numeric(raw, errors="coerce")
        wrong = (numbers.isna() & raw.notna()).to_numpy()
        converted[column] = numbers
        if wrong.any():
            per_column[column] = int(wrong.sum())
            bad |= wrong
    rows = np.flatnonzero(bad)
    details = {"columns": per_column} if per_column else {}
    return _check("types", rows.size == 0, scope="rows", rows=rows, observed=int(rows.size), details=details), converted


# Rows -----------------------------------------------------------------------------------


def nullable_columns_of_suite(suite: Suite | None) -> list[str]:
    """Columns whose gaps the suite tolerates (a not-null expectation with ``mostly`` below 1)."""
    out: list[str] = []
    for exp in suite.expectations if suite else []:
        kwargs = exp.kwargs
        if exp.type != "expect_column_values_to_not_be_null" or not isinstance(kwargs.get("column"), str):
            continue
        mostly = kwargs.get("mostly", 1)
        if _is_real(mostly) and mostly < 1:
            out.append(kwargs["column"])
    return out


def check_non_finite(df: pd.DataFrame, columns: Sequence[str], *, nullable: Sequence[str] = ()) -> Evaluated:
    """Rows with +/-inf, or NaN, in any numeric column of ``columns``.

    NaN is a missing value: in a ``nullable`` column (the suite tolerates gaps
    there) it is left to the suite's null policy; infinities never pass.
    """
    bad = np.zeros(len(df), dtype=bool)
    per_column: dict[str, int] = {}
    for column in columns:
        if column not in df.columns:
            continue
        dtype = df[column].dtype
        # Integers and booleans cannot hold NaN or inf: skip them without a pass over the data.
        if not isinstance(dtype, np.dtype) or dtype.kind != "f":
            continue
        values = df[column].to_numpy()
        wrong = np.isinf(values) if column in nullable else ~np.isfinite(values)
        if wrong.any():
            per_column[column] = int(wrong.sum())
            bad |= wrong
    rows = np.flatnonzero(bad)
    details = {"columns": per_column} if per_column else {}
    return _check("non_finite", rows.size == 0, scope="rows", rows=rows, observed=int(rows.size), details=details)


def check_duplicates(
    df: pd.DataFrame, *, features: Sequence[str] = (), feature_hashes: np.ndarray | None = None
) -> Evaluated:
    """Rows that exactly repeat an earlier row (the first copy stays).

    ``feature_hashes`` (`content_hashes` of ``features``) saves hashing those columns again.
    """
    if feature_hashes is None:
        features = ()
    rest = [c for c in df.columns if c not in set(features)]
    hashes = content_hashes(df, rest, start=feature_hashes)
    candidates = np.flatnonzero(pd.Series(hashes).duplicated(keep=False).to_numpy())
    rows = np.zeros(0, dtype=np.int64)
    if candidates.size:
        # Confirm value by value: equal hashes are only candidates.
        repeated = df.iloc[candidates].duplicated(keep="first").to_numpy()
        rows = candidates[repeated].astype(np.int64)
    return _check("duplicates", rows.size == 0, scope="rows", rows=rows, observed=int(rows.size))


def check_contamination(
    df: pd.DataFrame,
    feature_hashes: np.ndarray,
    index: pd.DataFrame | None,
    *,
    salt: str,
) -> Evaluated:
    """Rows whose features already sit in an evaluation split of an earlier run.

    A row identical to an indexed evaluation row (all columns, same split
    salt) is not contamination: the content-hashed split puts it back into the
    evaluation split it came from.

    Args:
        df: The batch.
        feature_hashes: `content_hashes` of its feature columns (the label
            is not part of a row's content).
        index: Earlier runs' evaluation rows (``feature_hash``, ``row_hash``,
            ``salt``), or None when no run has recorded any.
        salt: The split salt of this run.
    """
    from normlab.data.fingerprint import row_hashes

    if index is None or index.empty:
        return skipped("contamination", "no evaluation rows recorded yet")
    candidates = np.flatnonzero(np.isin(feature_hashes, index["feature_hash"].to_numpy(dtype=np.uint64)))
    rows = candidates
    if candidates.size:
        same_salt = index.loc[index["salt"] == salt, "row_hash"].to_numpy(dtype=np.uint64)
        own = np.isin(row_hashes(df.iloc[candidates], salt=salt), same_salt)
        rows = candidates[~own].astype(np.int64)
    return _check("contamination", rows.size == 0, scope="rows", rows=rows, observed=int(rows.size),
                  details={"indexed_rows": len(index)})


# Batch ----------------------------------------------------------------------------------


def check_class_balance(labels: pd.Series, *, known: Sequence[Any] | None, min_share: float) -> Evaluated:
    """Every class (the known set, else the observed ones) holds at least ``min_share`` of the rows."""
    values = labels.dropna()
    if values.empty:
        return _check("class_balance", False, scope="table", observed="no labelled rows")
    counts = values.value_counts()
    classes = list(known) if known is not None else list(counts.index)
    shares = {c: float(counts.get(c, 0)) / len(values) for c in classes}
    rare = {str(c): round(s, 6) for c, s in shares.items() if s < min_share}
    details: dict[str, Any] = {"min_share": min_share}
    if rare:
        details["below"] = dict(list(rare.items())[:SAMPLE_SIZE])
    return _check("class_balance", not rare, scope="table", observed=round(min(shares.values()), 6), details=details)


def check_row_count(n: int, *, min_rows: int, max_rows: int | None) -> Evaluated:
    """The accepted rows are within bounds."""
    ok = n >= min_rows and (max_rows is None or n <= max_rows)
    return _check("row_count", ok, scope="table", observed=n, details={"min_rows": min_rows, "max_rows": max_rows})


def check_rejected_share(rejected: int, rows_in: int, *, max_share: float) -> Evaluated:
    """The share of rows quarantined stays below the point where the batch itself is suspect."""
    share = rejected / rows_in if rows_in else 0.0
    return _check("rejected_share", share <= max_share, scope="table", observed=round(share, 6),
                  details={"rejected": rejected, "max_share": max_share})


def check_leakage(train: np.ndarray, evaluation: np.ndarray, *, max_share: float) -> Evaluated:
    """Evaluation rows whose feature hash also appears among the training rows.

    Args:
        train: Feature hashes of the training rows.
        evaluation: Feature hashes of the evaluation rows.
        max_share: Largest share of leaking evaluation rows that passes.
    """
    leaked = np.isin(evaluation, train)
    share = float(leaked.mean()) if evaluation.size else 0.0
    return _check("leakage", share <= max_share, scope="table", observed=round(share, 6),
                  details={"leaked_rows": int(leaked.sum()), "evaluation_rows": int(evaluation.size),
                           "max_share": max_share})
