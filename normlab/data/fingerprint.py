"""Content hashes of tables: one digest per frame, one hash per row.

The frame digest is the cache and lineage key of a data set (a DataFrame
argument is a bad cache key; its fingerprint is a good one). Row hashes drive
the content-based ID splits.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from normlab.errors import DataSourceError

# Rows hashed per block: blocks this size stay in cache (about 2x faster than
# one pass over a 1M-row frame), and numpy releases the GIL so blocks run in
# parallel. Row hashes do not depend on other rows, so the result is identical.
_BLOCK_ROWS = 131_072
_MAX_THREADS = 4

# splitmix64 finalizer constants (Steele et al.): a cheap bijective mixer for uint64.
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def fingerprint_frame(df: pd.DataFrame) -> str:
    """Return the sha256 hex digest of a frame's content.

    The digest covers column names (in order), dtypes and every value in row
    order; the index is ignored, so a reset or reordered index with the same
    rows gives the same digest.

    Args:
        df: Frame to fingerprint.

    Returns:
        64 hex characters.

    Raises:
        DataSourceError: A column holds values pandas cannot hash (lists, dicts).
    """
    digest = FrameDigest(df.columns, df.dtypes, len(df))
    digest.update(df)
    return digest.hexdigest()


class FrameDigest:
    """`fingerprint_frame` of a frame that arrives in consecutive row chunks, without the whole frame.

    The header (columns, dtypes, row count) is hashed first, so the columns,
    their dtypes and the total row count are given up front; then each chunk's
    row hashes, in row order. A row's hash depends on that row alone, so any
    chunking gives `fingerprint_frame`'s digest of the whole frame. (The one
    exception cannot come from a typed Parquet column: pandas hashes an object
    column that mixes bytes with other values through ``str``, chunk by chunk.)
    """

    def __init__(self, columns: Iterable[object], dtypes: Iterable[object], n_rows: int) -> None:
        self._digest = hashlib.sha256()
        # repr keeps 1 and "1" apart as column names; json keeps the header unambiguous.
        header = {"columns": [repr(c) for c in columns], "dtypes": [str(t) for t in dtypes], "n_rows": n_rows}
        self._digest.update(json.dumps(header).encode("utf-8"))

    def update(self, chunk: pd.DataFrame) -> None:
        """Hash the next rows (their columns and dtypes are the header's)."""
        if chunk.shape[1] > 0 and len(chunk) > 0:
            self._digest.update(_hash_rows(chunk, hash_key=None).tobytes())

    def hexdigest(self) -> str:
        """64 hex characters."""
        return self._digest.hexdigest()


def row_hashes(df: pd.DataFrame, *, salt: str = "normlab") -> np.ndarray:
    """Return one uint64 hash per row from that row's values alone.

    A row's hash does not depend on the index, on the row's position or on the
    other rows, so it is stable when rows are appended or shuffled. It does
    depend on the column order and on each column's dtype (1 and 1.0 differ).

    Args:
        df: Frame whose rows to hash.
        salt: Changes every hash; different salts give independent splits.

    Returns:
        Array of shape (len(df),) and dtype uint64.

    Raises:
        DataSourceError: A column holds values pandas cannot hash (lists, dicts).
    """
    salt_digest = hashlib.sha256(salt.encode("utf-8")).digest()
    if df.shape[1] == 0:
        return np.zeros(len(df), dtype=np.uint64)
    # pandas applies hash_key (16 bytes; here 16 hex characters) to text columns only...
    hashes = _hash_rows(df, hash_key=salt_digest[:8].hex())
    # ...so numeric-only frames would ignore the salt; fold it in and re-mix.
    salt_word = np.frombuffer(salt_digest[16:24], dtype=np.uint64)[0]
    return _mix64(hashes ^ salt_word)


def _hash_rows(df: pd.DataFrame, *, hash_key: str | None) -> np.ndarray:
    """Hash each row with pandas, naming the offending column if hashing fails."""
    kwargs = {} if hash_key is None else {"hash_key": hash_key}

    def hash_block(start: int) -> np.ndarray:
        block = df.iloc[start : start + _BLOCK_ROWS]
        return pd.util.hash_pandas_object(block, index=False, **kwargs).to_numpy(dtype=np.uint64)

    starts = range(0, len(df), _BLOCK_ROWS)
    try:
        if len(starts) <= 1:
            return hash_block(0)
        workers = max(1, min(_MAX_THREADS, os.cpu_count() or 1, len(starts)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return np.concatenate(list(pool.map(hash_block, starts)))
    except TypeError as exc:
        bad = _unhashable_column(df)
        raise DataSourceError(
            f"column {bad!r} holds values that cannot be hashed ({' '.join(str(exc).split())}); "
            "store scalars (numbers, text, dates) in every column"
        ) from exc


def _unhashable_column(df: pd.DataFrame) -> object:
    """Return the first column pandas cannot hash (only called on the error path)."""
    for name in df.columns:
        try:
            pd.util.hash_pandas_object(df[name], index=False)
        except TypeError:
            return name
    return None


def _mix64(values: np.ndarray) -> np.ndarray:
    """Apply the splitmix64 finalizer elementwise (uint64 arithmetic wraps by design)."""
    x = values.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= _MIX_1
        x ^= x >> np.uint64(27)
        x *= _MIX_2
        x ^= x >> np.uint64(31)
    return x
