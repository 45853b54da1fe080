"""The OOD split-kind registry: every config kind is registered or expanded by the config, and each builds."""

from __future__ import annotations

import typing

import numpy as np
import pandas as pd
import pytest

from normlab.config import (
    ColumnSplit,
    CorruptionSplit,
    CorruptionSuite,
    OODSplit,
    QuantileSplit,
    SplitsConfig,
    TimeSplit,
)
from normlab.data.ood import (
    CONFIG_EXPANSIONS,
    OOD_KINDS,
    DeriveFromTest,
    Selection,
    SelectRows,
    ood_kind,
)
from normlab.data.shifts import corrupt_images
from normlab.data.splits import ood_mask_column, ood_mask_quantile, ood_mask_time
from normlab.errors import ConfigError


def _union_members() -> tuple[type, ...]:
    """The classes of config's ``OODSplit`` (an ``Annotated`` discriminated union)."""
    union, *_ = typing.get_args(OODSplit)
    return typing.get_args(union)


def _kind_of(cls: type) -> str:
    """The one name of a split class's ``kind: Literal[...]`` field."""
    annotation = cls.model_fields["kind"].annotation
    assert typing.get_origin(annotation) is typing.Literal, (cls, annotation)
    (name,) = typing.get_args(annotation)
    return name


CONFIG_KINDS = {_kind_of(cls): cls for cls in _union_members()}


def test_the_union_is_the_five_split_classes() -> None:
    assert set(_union_members()) == {CorruptionSplit, CorruptionSuite, ColumnSplit, QuantileSplit, TimeSplit}
    assert len(CONFIG_KINDS) == len(_union_members())  # one kind name per class


def test_every_config_kind_is_registered_or_expanded_by_the_config() -> None:
    # A split class added to the config without a builder (or the reverse) fails here.
    assert set(OOD_KINDS).isdisjoint(CONFIG_EXPANSIONS)
    assert set(CONFIG_KINDS) == set(OOD_KINDS) | set(CONFIG_EXPANSIONS)


@pytest.mark.parametrize("kind", CONFIG_EXPANSIONS)
def test_expanded_kinds_never_reach_the_split_stage(kind: str) -> None:
    # Honest about the exception: the config turns these entries into registered kinds.
    assert kind not in OOD_KINDS
    assert CONFIG_KINDS[kind] is CorruptionSuite
    splits = SplitsConfig(ood=[{"kind": kind, "corruptions": ["blur", "contrast"], "severity": [2]}])
    assert [s.kind for s in splits.ood] == ["corruption", "corruption"]
    assert all(s.kind in OOD_KINDS for s in splits.ood)
    with pytest.raises(ConfigError, match="expanded when the config is loaded"):
        ood_kind(CorruptionSuite(kind=kind))


def test_the_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        OOD_KINDS["other"] = OOD_KINDS["column"]  # type: ignore[index]


def test_an_unknown_kind_is_a_config_error_naming_the_known_ones() -> None:
    class Fake:
        name, kind = "odd", "fog"

    with pytest.raises(ConfigError, match="'odd': unknown kind 'fog'; known: column, quantile, time, corruption"):
        ood_kind(Fake())


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "site": ["a", "b", "a", "c", "b", "a"],
        "size": [1.0, 5.0, 2.0, 9.0, 3.0, 7.0],
        "when": ["2024-01-01", "2024-03-01", "2024-02-01", "2024-05-01", "2024-01-15", "2024-04-01"],
    })


# One example entry per registered kind, and what it must build.
ROW_EXAMPLES = {
    "column": (ColumnSplit(name="a", kind="column", column="site", values=["a"]),
               lambda f: (ood_mask_column(f, "site", ["a"]), None)),
    "quantile": (QuantileSplit(name="big", kind="quantile", column="size", q=0.5, side="below"),
                 lambda f: ood_mask_quantile(f, "size", 0.5, side="below")),
    "time": (TimeSplit(name="late", kind="time", column="when", after="2024-02-15"),
             lambda f: (ood_mask_time(f, "when", "2024-02-15"), None)),
}
DERIVED_EXAMPLES = {
    "corruption": CorruptionSplit(name="noise", kind="corruption", corruption="gaussian_noise", severity=[1, 3]),
}


def test_every_registered_kind_has_an_example_below() -> None:
    assert set(ROW_EXAMPLES) | set(DERIVED_EXAMPLES) == set(OOD_KINDS)
    assert {k for k, v in OOD_KINDS.items() if isinstance(v, SelectRows)} == set(ROW_EXAMPLES)
    assert {k for k, v in OOD_KINDS.items() if isinstance(v, DeriveFromTest)} == set(DERIVED_EXAMPLES)


@pytest.mark.parametrize("kind", list(ROW_EXAMPLES))
def test_row_kinds_select_what_their_mask_function_selects(frame: pd.DataFrame, kind: str) -> None:
    split, expected = ROW_EXAMPLES[kind]
    selection = ood_kind(split).select(frame, split)
    assert isinstance(selection, Selection)
    mask, threshold = expected(frame)
    assert selection.mask.dtype == bool and selection.mask.shape == (len(frame),)
    assert np.array_equal(selection.mask, mask)
    assert selection.threshold == threshold


@pytest.mark.parametrize("kind", list(DERIVED_EXAMPLES))
def test_derived_kinds_yield_one_copy_per_leaf_in_order(kind: str) -> None:
    split = DERIVED_EXAMPLES[kind]
    raw = np.random.default_rng(0).uniform(0, 16, size=(20, 64))
    original = raw.copy()
    derived = list(ood_kind(split).derive(raw, split, image_shape=(8, 8), seed=3, value_range=(0.0, 16.0)))
    assert [leaf for leaf, _ in derived] == [leaf for leaf, _ in split.leaves()] == ["noise/s1", "noise/s3"]
    for (_, features), (_, level) in zip(derived, split.leaves(), strict=True):
        assert features.shape == raw.shape
        assert np.array_equal(features, corrupt_images(raw, (8, 8), "gaussian_noise", level, seed=3,
                                                       value_range=(0.0, 16.0)))
    assert np.array_equal(raw, original)


def test_corruption_defaults_to_the_data_range() -> None:
    split = CorruptionSplit(name="b", kind="corruption", corruption="brightness", severity=5)
    raw = np.linspace(2.0, 10.0, 4 * 64).reshape(4, 64)
    ((leaf, features),) = ood_kind(split).derive(raw, split, image_shape=(8, 8), seed=0, value_range=None)
    assert leaf == "b"
    assert np.array_equal(features, corrupt_images(raw, (8, 8), "brightness", 5, value_range=(2.0, 10.0)))


@pytest.mark.parametrize(("shape", "channels"), [((8, 8), 3), ((32, 32), 3), ((32, 32), 1)])
def test_corruption_infers_the_channels_from_the_row_length(shape: tuple[int, int], channels: int) -> None:
    # splitting.py passes raw (n, C*H*W) rows and no channel count: rows are (C, H, W) images.
    split = CorruptionSplit(name="n", kind="corruption", corruption="gaussian_noise", severity=2)
    raw = np.random.default_rng(1).uniform(0, 255, size=(5, channels * shape[0] * shape[1]))
    ((_, features),) = ood_kind(split).derive(raw, split, image_shape=shape, seed=4, value_range=(0.0, 255.0))
    expected = corrupt_images(raw, shape, "gaussian_noise", 2, seed=4, value_range=(0.0, 255.0), channels=channels)
    assert np.array_equal(features, expected)


@pytest.mark.parametrize("values", [100, 2 * 64, 4 * 64])  # not a multiple of H*W; 2 or 4 channels
def test_rows_that_are_not_1_or_3_channels_are_a_one_line_config_error(values: int) -> None:
    split = CorruptionSplit(name="odd", kind="corruption", corruption="blur", severity=1)
    raw = np.zeros((3, values))
    with pytest.raises(ConfigError, match=rf"'odd': feature rows of {values} values are not 1 \(grayscale\) or 3") as info:
        list(ood_kind(split).derive(raw, split, image_shape=(8, 8), seed=0, value_range=(0.0, 16.0)))
    assert "\n" not in str(info.value)
