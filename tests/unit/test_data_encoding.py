"""Feature and label encoders: encoding rules, errors and the JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from normlab.data.encoding import NA_CATEGORY, FeatureEncoder, LabelEncoder
from normlab.errors import ConfigError, DataSourceError


@pytest.fixture
def train() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [20, 30, 40, 50],
            "score": [0.5, np.nan, 1.5, 2.5],
            "flag": [True, False, True, True],
            "city": ["paris", "oslo", None, "oslo"],
            "tier": pd.Categorical(["gold", "silver", "gold", "gold"]),
            "const": [7, 7, 7, 7],
        }
    )


FEATURES = ["age", "score", "flag", "city", "tier", "const"]


def test_mixed_frame_encodes_numbers_and_one_hot_categories(train: pd.DataFrame) -> None:
    encoder = FeatureEncoder.fit(train, FEATURES)
    out = encoder.transform(train)
    assert out.dtype == np.float32 and out.shape == (4, encoder.n_outputs)
    assert encoder.output_names == [
        "age",
        "score",
        "flag",
        f"city={NA_CATEGORY}",
        "city=oslo",
        "city=paris",
        "tier=gold",
        "tier=silver",
        "const",
    ]
    names = encoder.output_names
    age = out[:, names.index("age")]
    assert age.mean() == pytest.approx(0.0, abs=1e-6) and age.std() == pytest.approx(1.0, abs=1e-6)
    assert out[:, names.index("const")].tolist() == [0.0] * 4  # std 0 -> 1, no division by zero
    # A missing number becomes the training mean, i.e. 0 after scaling.
    assert out[1, names.index("score")] == 0.0
    city = out[:, names.index(f"city={NA_CATEGORY}") : names.index("city=paris") + 1]
    assert city.tolist() == [[0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 1, 0]]
    assert (out[:, names.index("tier=gold") : names.index("tier=silver") + 1].sum(axis=1) == 1).all()


def test_unseen_category_encodes_as_zeros(train: pd.DataFrame) -> None:
    encoder = FeatureEncoder.fit(train, ["city", "tier"])
    new = pd.DataFrame({"city": ["rome", "paris", None], "tier": ["bronze", "gold", "silver"]})
    out = encoder.transform(new)
    assert out.tolist() == [
        [0, 0, 0, 0, 0],  # rome and bronze unseen
        [0, 0, 1, 1, 0],
        [1, 0, 0, 0, 1],  # missing city: fit saw missing values
    ]


def test_missing_value_unseen_in_fit_encodes_as_zeros() -> None:
    encoder = FeatureEncoder.fit(pd.DataFrame({"c": ["a", "b"]}), ["c"])
    assert encoder.transform(pd.DataFrame({"c": [None, "b"]})).tolist() == [[0, 0], [0, 1]]


def test_json_round_trip_gives_identical_output(train: pd.DataFrame) -> None:
    encoder = FeatureEncoder.fit(train, FEATURES)
    restored = FeatureEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    assert restored == encoder
    assert restored.output_names == encoder.output_names
    new = train.sample(frac=1.0, random_state=0).assign(city=["rome", "oslo", None, "paris"])
    assert np.array_equal(restored.transform(new), encoder.transform(new))


def test_scale_false_keeps_raw_values() -> None:
    pixels = pd.DataFrame({"p0": [0, 8, 16], "p1": [1, 2, np.nan]})
    encoder = FeatureEncoder.fit(pixels, ["p0", "p1"], scale=False)
    assert encoder.transform(pixels).tolist() == [[0, 1], [8, 2], [16, 1.5]]
    assert FeatureEncoder.from_dict(json.loads(json.dumps(encoder.to_dict()))).scale is False


def test_numeric_text_is_parsed_and_bad_text_is_named(train: pd.DataFrame) -> None:
    encoder = FeatureEncoder.fit(train, ["age"], scale=False)
    assert encoder.transform(pd.DataFrame({"age": ["25", "31.5"]})).tolist() == [[25.0], [31.5]]
    with pytest.raises(DataSourceError, match=r"'age'.*forty") as info:
        encoder.transform(pd.DataFrame({"age": ["25", "forty"]}))
    assert "\n" not in str(info.value)


def test_missing_feature_column_is_named(train: pd.DataFrame) -> None:
    encoder = FeatureEncoder.fit(train, FEATURES)
    with pytest.raises(DataSourceError, match="'city'"):
        encoder.transform(train.drop(columns="city"))
    with pytest.raises(DataSourceError, match="'height'"):
        FeatureEncoder.fit(train, ["age", "height"])


@pytest.mark.parametrize(
    ("features", "phrase"),
    [([], "empty"), (["age", "age"], "more than once"), (["when"], "datetime")],
)
def test_bad_feature_lists_are_config_errors(train: pd.DataFrame, features: list[str], phrase: str) -> None:
    frame = train.assign(when=pd.to_datetime(["2024-01-01"] * 4))
    with pytest.raises(ConfigError, match=phrase):
        FeatureEncoder.fit(frame, features)


def test_numeric_column_without_values_is_a_data_error() -> None:
    with pytest.raises(DataSourceError, match="no finite values"):
        FeatureEncoder.fit(pd.DataFrame({"x": [np.nan, np.nan]}), ["x"])


@pytest.mark.parametrize(
    "payload",
    [
        {"format": "something.else", "version": 1},
        {"format": "normlab.FeatureEncoder", "version": 99, "scale": True, "columns": []},
        {"format": "normlab.FeatureEncoder", "version": 1, "scale": True, "columns": [{"kind": "numeric"}]},
        {
            "format": "normlab.FeatureEncoder",
            "version": 1,
            "scale": True,
            "columns": [{"name": "x", "kind": "odd"}],
        },
        ["not", "a", "dict"],
    ],
)
def test_malformed_saved_encoder_is_a_config_error(payload: object) -> None:
    with pytest.raises(ConfigError):
        FeatureEncoder.from_dict(payload)  # type: ignore[arg-type]


def test_label_encoder_sorts_numbers_numerically_and_round_trips() -> None:
    labels = pd.Series([10, 2, 1, 2, 10], name="label")
    encoder = LabelEncoder.fit(labels)
    assert encoder.classes == [1, 2, 10]
    codes = encoder.transform(labels)
    assert codes.dtype == np.int64 and codes.tolist() == [2, 1, 0, 1, 2]
    assert encoder.inverse_transform(codes).tolist() == labels.tolist()
    restored = LabelEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    assert restored == encoder and restored.classes == [1, 2, 10]
    assert np.array_equal(restored.transform(labels), codes)


def test_label_encoder_on_text_and_categories() -> None:
    assert LabelEncoder.fit(pd.Series(["cat", "ant", "bee"])).classes == ["ant", "bee", "cat"]
    categorical = pd.Series(pd.Categorical(["b", "a", "b"]))
    assert LabelEncoder.fit(categorical).transform(categorical).tolist() == [1, 0, 1]


def test_unknown_labels_are_listed() -> None:
    encoder = LabelEncoder.fit(pd.Series([0, 1, 2]))
    with pytest.raises(DataSourceError, match=r"\(7, 9\)") as info:
        encoder.transform(pd.Series([0, 7, 9, 7]))
    assert "3 labels" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("labels", "phrase"),
    [([1, None, 2], "missing"), ([1, "a"], "mixes"), ([], "no rows")],
)
def test_bad_label_columns_are_data_errors(labels: list, phrase: str) -> None:
    with pytest.raises(DataSourceError, match=phrase):
        LabelEncoder.fit(pd.Series(labels, dtype=object))


def test_inverse_transform_rejects_out_of_range_indices() -> None:
    encoder = LabelEncoder.fit(pd.Series(["a", "b"]))
    with pytest.raises(DataSourceError, match=r"0\.\.1"):
        encoder.inverse_transform([0, 2])


def test_global_scale_pools_mean_and_std_over_numeric_columns():
    train = pd.DataFrame({"p0": [0.0, 0.0, 0.0, 0.0], "p1": [0.0, 4.0, 8.0, 12.0], "c": ["a", "b", "a", "b"]})
    encoder = FeatureEncoder.fit(train, ["p0", "p1", "c"], scale="global")
    pooled = np.concatenate([train["p0"], train["p1"]])
    out = encoder.transform(train)
    # The constant border-like column is scaled by the pooled std, not by its own (zero) std.
    np.testing.assert_allclose(out[:, 0], (0.0 - pooled.mean()) / pooled.std(), rtol=1e-6)
    np.testing.assert_allclose(out[:, 1], (train["p1"] - pooled.mean()) / pooled.std(), rtol=1e-6)
    restored = FeatureEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    assert restored.scale == "global"
    np.testing.assert_array_equal(restored.transform(train), out)
