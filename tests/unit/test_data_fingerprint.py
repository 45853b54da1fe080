"""Frame fingerprints and per-row hashes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from normlab.data.fingerprint import fingerprint_frame, row_hashes
from normlab.errors import DataSourceError


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({"x": [1, 2, 3, 4], "y": [0.5, 1.5, 2.5, np.nan], "s": ["a", "b", "a", None]})


def test_fingerprint_is_sha256_hex(frame: pd.DataFrame) -> None:
    digest = fingerprint_frame(frame)
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_fingerprint_ignores_the_index(frame: pd.DataFrame) -> None:
    reindexed = frame.set_axis([10, 20, 30, 40])
    renamed_index = frame.rename_axis("row_id")
    assert fingerprint_frame(reindexed) == fingerprint_frame(frame)
    assert fingerprint_frame(renamed_index) == fingerprint_frame(frame)
    assert fingerprint_frame(frame.copy()) == fingerprint_frame(frame)


def test_fingerprint_changes_with_one_value(frame: pd.DataFrame) -> None:
    changed = frame.copy()
    changed.loc[2, "y"] = 2.5000001
    assert fingerprint_frame(changed) != fingerprint_frame(frame)
    text_changed = frame.copy()
    text_changed.loc[0, "s"] = "A"
    assert fingerprint_frame(text_changed) != fingerprint_frame(frame)


def test_fingerprint_changes_with_column_name_order_and_dtype(frame: pd.DataFrame) -> None:
    base = fingerprint_frame(frame)
    assert fingerprint_frame(frame.rename(columns={"x": "x2"})) != base
    assert fingerprint_frame(frame[["y", "x", "s"]]) != base
    assert fingerprint_frame(frame.astype({"x": "float64"})) != base
    assert fingerprint_frame(frame.astype({"x": "int32"})) != base


def test_fingerprint_changes_with_row_order_and_row_count(frame: pd.DataFrame) -> None:
    assert fingerprint_frame(frame.iloc[::-1]) != fingerprint_frame(frame)
    assert fingerprint_frame(frame.iloc[:3]) != fingerprint_frame(frame)


def test_fingerprint_of_edge_frames() -> None:
    assert fingerprint_frame(pd.DataFrame()) != fingerprint_frame(pd.DataFrame({"a": []}))
    assert fingerprint_frame(pd.DataFrame(index=range(3))) != fingerprint_frame(pd.DataFrame())


def test_fingerprint_across_blocks_matches_pandas_hash() -> None:
    # Above one block of rows, the threaded path must equal one pandas call.
    from normlab.data import fingerprint as module

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.integers(0, 9, 300_000), "b": rng.choice(["p", "q"], 300_000)})
    expected = pd.util.hash_pandas_object(df, index=False).to_numpy()
    assert np.array_equal(module._hash_rows(df, hash_key=None), expected)


def test_unhashable_column_is_named() -> None:
    df = pd.DataFrame({"ok": [1, 2], "bad": [[1], [2]]})
    with pytest.raises(DataSourceError, match="'bad'"):
        fingerprint_frame(df)


def test_row_hashes_depend_only_on_the_row(frame: pd.DataFrame) -> None:
    hashes = row_hashes(frame)
    assert hashes.dtype == np.uint64 and hashes.shape == (4,)
    shuffled = frame.sample(frac=1.0, random_state=3)
    assert np.array_equal(row_hashes(shuffled), hashes[shuffled.index.to_numpy()])
    assert np.array_equal(row_hashes(frame.iloc[[2]]), hashes[[2]])


def test_row_hashes_equal_for_equal_rows_and_change_with_salt() -> None:
    df = pd.DataFrame({"a": [1, 2, 1], "b": [3.0, 4.0, 3.0]})
    hashes = row_hashes(df)
    assert hashes[0] == hashes[2] and hashes[0] != hashes[1]
    # Numeric-only frames must honour the salt too (pandas' hash_key does not).
    assert not np.array_equal(row_hashes(df, salt="other"), hashes)
    text = pd.DataFrame({"s": ["a", "b"]})
    assert not np.array_equal(row_hashes(text, salt="other"), row_hashes(text))
