"""Content-hash ID splits and the OOD masks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab.data.sources import load_builtin
from normlab.data.splits import (
    SPLIT_NAMES,
    assign_id_splits,
    ood_mask_column,
    ood_mask_quantile,
    ood_mask_time,
)
from normlab.errors import ConfigError, DataSourceError


@pytest.fixture(scope="module")
def digits() -> pd.DataFrame:
    return load_builtin("digits")


def test_fractions_roughly_respected_on_digits(digits: pd.DataFrame) -> None:
    splits = assign_id_splits(digits, val_fraction=0.15, test_fraction=0.2)
    shares = splits.value_counts(normalize=True)
    assert set(shares.index) == set(SPLIT_NAMES)
    assert shares["test"] == pytest.approx(0.20, abs=0.03)
    assert shares["val"] == pytest.approx(0.15, abs=0.03)
    assert shares["train"] == pytest.approx(0.65, abs=0.03)


def test_split_keeps_index_and_is_repeatable(digits: pd.DataFrame) -> None:
    shifted = digits.set_axis(digits.index + 1000)
    splits = assign_id_splits(shifted)
    assert splits.index.equals(shifted.index)
    assert splits.name == "split"
    pd.testing.assert_series_equal(assign_id_splits(shifted), splits)
    assert np.array_equal(splits.to_numpy(), assign_id_splits(digits).to_numpy())


def test_salt_changes_the_assignment(digits: pd.DataFrame) -> None:
    a = assign_id_splits(digits)
    b = assign_id_splits(digits, salt="another")
    assert (a != b).mean() > 0.2


def test_zero_fractions_put_everything_in_train(digits: pd.DataFrame) -> None:
    splits = assign_id_splits(digits, val_fraction=0.0, test_fraction=0.0)
    assert (splits == "train").all()


rows = st.lists(
    st.tuples(st.integers(-5, 5), st.sampled_from(["a", "b", "c"]), st.floats(-1, 1, allow_nan=False)),
    min_size=1,
    max_size=40,
)


def _frame(data: list[tuple[int, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(data, columns=["i", "s", "f"]).astype({"i": "int64", "s": object, "f": "float64"})


@settings(max_examples=60, deadline=None)
@given(old=rows, new=rows)
def test_appending_rows_never_moves_old_ones(old: list, new: list) -> None:
    before = assign_id_splits(_frame(old), val_fraction=0.3, test_fraction=0.3)
    after = assign_id_splits(
        pd.concat([_frame(old), _frame(new)], ignore_index=True), val_fraction=0.3, test_fraction=0.3
    )
    assert np.array_equal(after.iloc[: len(old)].to_numpy(), before.to_numpy())


@settings(max_examples=60, deadline=None)
@given(data=rows, seed=st.integers(0, 2**32 - 1))
def test_shuffling_keeps_each_rows_split_and_duplicates_together(data: list, seed: int) -> None:
    df = _frame(data)
    splits = assign_id_splits(df, val_fraction=0.3, test_fraction=0.3)
    shuffled = df.sample(frac=1.0, random_state=seed % (2**32))
    shuffled_splits = assign_id_splits(shuffled, val_fraction=0.3, test_fraction=0.3)
    pd.testing.assert_series_equal(shuffled_splits.sort_index(), splits)
    # Exact duplicates can never straddle splits (no train/test leakage).
    per_row = df.assign(split=splits).groupby(["i", "s", "f"])["split"].nunique()
    assert (per_row == 1).all()


@pytest.mark.parametrize(
    ("val", "test"),
    [
        (-0.1, 0.1),
        (0.1, -0.01),
        (0.5, 0.5),
        (0.7, 0.4),
        (float("nan"), 0.1),
        (0.1, float("inf")),
        ("0.1", 0.1),
        (True, 0.1),
    ],
)
def test_bad_fractions_are_config_errors(val: object, test: object) -> None:
    with pytest.raises(ConfigError, match="fraction"):
        assign_id_splits(pd.DataFrame({"a": [1]}), val_fraction=val, test_fraction=test)  # type: ignore[arg-type]


@pytest.fixture
def domains() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "site": ["a", "b", "c", "a", None],
            "code": ["1", "2", "3", "3", "1"],
            "region": [1, 2, 3, 3, 1],
            "kind": pd.Categorical(["x", "y", "x", "z", "y"]),
            "size": [1.0, 5.0, 3.0, np.nan, 9.0],
            "when": ["2024-01-01", "2024-02-15", "2024-03-01T12:00", None, "2023-12-31"],
        }
    )


def test_column_mask_matches_values(domains: pd.DataFrame) -> None:
    assert ood_mask_column(domains, "site", ["a", "c"]).tolist() == [True, False, True, True, False]
    assert ood_mask_column(domains, "site", "b").tolist() == [False, True, False, False, False]
    assert ood_mask_column(domains, "kind", ["z"]).tolist() == [False, False, False, True, False]
    assert ood_mask_column(domains, "region", [3]).tolist() == [False, False, True, True, False]


def test_column_mask_matches_yaml_numbers_to_text_and_back(domains: pd.DataFrame) -> None:
    # YAML reads `3` as an int: it must still select the text "3", and "3" the int 3.
    assert ood_mask_column(domains, "code", [3]).tolist() == [False, False, True, True, False]
    assert ood_mask_column(domains, "region", ["3"]).tolist() == [False, False, True, True, False]


def test_column_mask_errors(domains: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match=r"'domain'.*site, code") as info:
        ood_mask_column(domains, "domain", ["a"])
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="empty"):
        ood_mask_column(domains, "site", [])


def test_quantile_mask_above_and_below(domains: pd.DataFrame) -> None:
    mask, threshold = ood_mask_quantile(domains, "size", 0.5)
    assert threshold == pytest.approx(4.0)
    assert mask.tolist() == [False, True, False, False, True]
    mask, threshold = ood_mask_quantile(domains, "size", 0.25, side="below")
    assert threshold == pytest.approx(2.5)
    assert mask.tolist() == [True, False, False, False, False]


def test_quantile_mask_holds_out_roughly_the_top_share(digits: pd.DataFrame) -> None:
    values = digits["pixel_20"] + digits["label"] * 0.01  # break ties
    mask, _ = ood_mask_quantile(digits.assign(v=values), "v", 0.8)
    assert mask.mean() == pytest.approx(0.2, abs=0.05)


@pytest.mark.parametrize(
    ("column", "q", "side", "error"),
    [
        ("site", 0.5, "above", ConfigError),
        ("size", 0.0, "above", ConfigError),
        ("size", 1.0, "above", ConfigError),
        ("size", 0.5, "left", ConfigError),
        ("nope", 0.5, "above", ConfigError),
    ],
)
def test_quantile_mask_errors(domains: pd.DataFrame, column: str, q: float, side: str, error: type) -> None:
    with pytest.raises(error):
        ood_mask_quantile(domains, column, q, side)  # type: ignore[arg-type]


def test_quantile_mask_on_all_missing_column_is_a_data_error() -> None:
    with pytest.raises(DataSourceError, match="no non-missing"):
        ood_mask_quantile(pd.DataFrame({"v": [np.nan, np.nan]}), "v", 0.5)


def test_time_mask_on_text_and_datetime_columns(domains: pd.DataFrame) -> None:
    expected = [False, True, True, False, False]
    assert ood_mask_time(domains, "when", "2024-02-01").tolist() == expected
    as_datetimes = domains.assign(when=pd.to_datetime(domains["when"], format="mixed"))
    assert ood_mask_time(as_datetimes, "when", "2024-02-01").tolist() == expected
    aware = as_datetimes.assign(when=as_datetimes["when"].dt.tz_localize("UTC"))
    assert ood_mask_time(aware, "when", "2024-02-01").tolist() == expected
    assert ood_mask_time(aware, "when", "2024-02-01T00:00+00:00").tolist() == expected


def test_time_mask_reads_mixed_offsets_in_utc() -> None:
    df = pd.DataFrame({"t": ["2024-01-01T00:00+01:00", "2024-06-01T00:00+05:00"]})
    assert ood_mask_time(df, "t", "2024-03-01").tolist() == [False, True]


def test_time_mask_errors(domains: pd.DataFrame) -> None:
    with pytest.raises(DataSourceError, match="'banana'"):
        ood_mask_time(domains.assign(when=["2024-01-01", "banana", None, None, None]), "when", "2024-01-01")
    with pytest.raises(ConfigError, match="not a date"):
        ood_mask_time(domains, "when", "next tuesday-ish")
    with pytest.raises(ConfigError, match="numeric"):
        ood_mask_time(domains, "region", "2024-01-01")
    with pytest.raises(ConfigError, match="time zone"):
        ood_mask_time(domains, "when", "2024-01-01T00:00Z")
