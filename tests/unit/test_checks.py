"""The gate's own checks, one by one, on small in-memory frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from normlab import label_noise
from normlab.data.fingerprint import row_hashes
from normlab.data.sources import load_builtin
from normlab.gate import checks as ck
from normlab.gate.contracts import Suite


def rows(evaluated) -> list[int]:
    return [int(r) for r in evaluated.rows]


def test_content_hashes_match_values_not_dtypes_and_respect_column_order():
    ints = pd.DataFrame({"a": [1, 2, 0], "b": ["x", "y", "z"]})
    floats = pd.DataFrame({"a": [1.0, 2.0, -0.0], "b": ["x", "y", "z"]})
    assert np.array_equal(ck.content_hashes(ints, ["a", "b"]), ck.content_hashes(floats, ["a", "b"]))
    assert not np.array_equal(ck.content_hashes(ints, ["a", "b"]), ck.content_hashes(ints, ["b", "a"]))
    assert len(set(ck.content_hashes(ints, ["a", "b"]).tolist())) == 3
    # Extending a hash of some columns tells apart rows that differ only in the others.
    same_a = pd.DataFrame({"a": [1, 1, 1], "b": ["x", "y", "x"]})
    extended = ck.content_hashes(same_a, ["b"], start=ck.content_hashes(same_a, ["a"]))
    assert extended[0] == extended[2] and extended[0] != extended[1]


def test_columns_reports_missing_and_unexpected():
    frame = pd.DataFrame({"a": [1], "extra": [2], "label": [0]})
    ok = ck.check_columns(frame, required=["a", "label"], expected=None)
    assert ok.result.success
    bad = ck.check_columns(frame, required=["a", "b", "label"], expected=["a", "b", "label"])
    assert not bad.result.success and bad.result.scope == "table"
    assert bad.result.details == {"missing": ["b"], "unexpected": ["extra"]}
    assert "missing ['b']" in bad.result.describe()


def test_types_flags_only_the_text_rows_and_converts_the_column():
    frame = pd.DataFrame({"x": ["1", "2.5", "oops", None, "7"], "s": ["a", "b", "c", "d", "e"]})
    suite = Suite.model_validate({"expectations": [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "x", "min_value": 0, "max_value": 9}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "s", "value_set": ["a", "b"]}},
    ]})
    assert ck.numeric_columns_of_suite(suite) == ["x"]
    evaluated, converted = ck.check_types(frame, ["x"])
    assert not evaluated.result.success and rows(evaluated) == [2]
    assert evaluated.result.details == {"columns": {"x": 1}}
    assert converted["x"].tolist()[:2] == [1.0, 2.5]
    assert converted["x"].isna().tolist() == [False, False, True, True, False]


def test_non_finite_flags_nan_and_infinities_in_float_columns_only():
    frame = pd.DataFrame({"f": [0.0, np.nan, np.inf, -np.inf, 1.0], "i": [1, 2, 3, 4, 5], "s": ["a"] * 5})
    evaluated = ck.check_non_finite(frame, ["f", "i", "s"])
    assert rows(evaluated) == [1, 2, 3] and evaluated.result.details == {"columns": {"f": 3}}
    assert ck.check_non_finite(frame, ["i", "s"]).result.success
    # Where the suite tolerates gaps, NaN is the suite's business; infinities still fail.
    gaps = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "f", "mostly": 0.8}}
    suite = Suite.model_validate({"expectations": [gaps]})
    assert ck.nullable_columns_of_suite(suite) == ["f"]
    assert rows(ck.check_non_finite(frame, ["f"], nullable=["f"])) == [2, 3]


def test_duplicates_keeps_the_first_copy_and_confirms_values():
    frame = pd.DataFrame({"a": [1, 2, 1, 1, 3], "b": ["x", "y", "x", "z", "x"]})
    evaluated = ck.check_duplicates(frame)
    assert rows(evaluated) == [2]
    with_features = ck.check_duplicates(frame, features=["a"], feature_hashes=ck.content_hashes(frame, ["a"]))
    assert rows(with_features) == [2]
    # Rows equal as text but not as values (1 and "1") are not duplicates.
    mixed = pd.DataFrame({"a": pd.Series([1, "1"], dtype=object)})
    assert ck.check_duplicates(mixed).result.success


def _index(frame: pd.DataFrame, features: list[str], salt: str) -> pd.DataFrame:
    return pd.DataFrame({"feature_hash": ck.content_hashes(frame, features),
                         "row_hash": row_hashes(frame, salt=salt), "salt": salt})


def test_contamination_flags_earlier_evaluation_rows_unless_they_return_to_their_split():
    earlier = pd.DataFrame({"x": [1.0, 2.0, 3.0], "label": [0, 1, 0]})
    index = _index(earlier, ["x"], "normlab")
    batch = pd.DataFrame({"x": [1.0, 2.0, 9.0, 3.0], "label": [0, 0, 1, 0]})
    hashes = ck.content_hashes(batch, ["x"])
    evaluated = ck.check_contamination(batch, hashes, index, salt="normlab")
    # Row 0 and 3 are the same rows again (same split, same salt); row 1 reuses features with a new label.
    assert rows(evaluated) == [1]
    assert rows(ck.check_contamination(batch, hashes, index, salt="other")) == [0, 1, 3]
    assert ck.check_contamination(batch, hashes, None, salt="normlab").result.observed.startswith("skipped")


def test_label_noise_passes_clean_digits_and_blocks_flipped_labels():
    digits = load_builtin("digits")
    features = [c for c in digits.columns if c != "label"]
    clean = label_noise.check_label_noise(digits, features, "label", k=5, max_share=0.1, sample_rows=5000, seed=0)
    assert clean.result.success and clean.result.observed < 0.05
    flipped = digits.copy()
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(flipped), size=len(flipped) // 4, replace=False)
    flipped.loc[chosen, "label"] = (flipped.loc[chosen, "label"] + 1) % 10
    noisy = label_noise.check_label_noise(flipped, features, "label", k=5, max_share=0.1, sample_rows=5000, seed=0)
    assert not noisy.result.success and noisy.result.observed > 0.2
    # Most flipped rows are caught, and most flagged rows were flipped.
    assert np.isin(chosen, noisy.rows).mean() > 0.85
    assert np.isin(noisy.rows, chosen).mean() > 0.6


def test_label_noise_samples_large_batches_and_skips_without_numbers():
    digits = load_builtin("digits")
    features = [c for c in digits.columns if c != "label"]
    sampled = label_noise.check_label_noise(digits, features, "label", k=5, max_share=0.2, sample_rows=500, seed=1)
    assert sampled.result.details["scored_rows"] == 500 and sampled.result.success
    text = pd.DataFrame({"s": list("abcdefghij"), "label": [0, 1] * 5})
    assert label_noise.check_label_noise(text, ["s"], "label", k=3, max_share=0.2, sample_rows=100, seed=0).result.observed \
        == "skipped: no numeric features"


def test_knn_disagreement_on_two_clusters():
    x = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    y = np.array([0, 0, 1, 1, 1, 1])
    assert label_noise.knn_disagreement(x, y, k=2).tolist() == [False, False, True, False, False, False]


@pytest.mark.parametrize(("known", "ok"), [(None, True), ([0, 1], True), ([0, 1, 2], False)])
def test_class_balance_uses_the_known_labels(known, ok):
    labels = pd.Series([0] * 60 + [1] * 40)
    evaluated = ck.check_class_balance(labels, known=known, min_share=0.05)
    assert evaluated.result.success is ok
    if not ok:
        assert evaluated.result.details["below"] == {"2": 0.0}


def test_row_count_rejected_share_and_leakage():
    assert ck.check_row_count(10, min_rows=20, max_rows=None).result.success is False
    assert ck.check_row_count(50, min_rows=20, max_rows=40).result.success is False
    assert ck.check_row_count(30, min_rows=20, max_rows=40).result.success
    assert ck.check_rejected_share(30, 100, max_share=0.2).result.success is False
    assert ck.check_rejected_share(20, 100, max_share=0.2).result.success
    train = np.array([1, 2, 3], dtype=np.uint64)
    leak = ck.check_leakage(train, np.array([3, 4, 5, 6], dtype=np.uint64), max_share=0.0)
    assert not leak.result.success and leak.result.details["leaked_rows"] == 1 and leak.result.observed == 0.25
    assert ck.check_leakage(train, np.array([4], dtype=np.uint64), max_share=0.0).result.success
