"""Config loading, overrides and one-line errors."""

from __future__ import annotations

import pytest

from normlab.config import PipelineConfig, apply_overrides, flatten, load_config, parse_override, to_yaml
from normlab.errors import ConfigError


def test_default_config_file_loads(repo_root):
    cfg = load_config()
    assert cfg.data.source == "digits"
    assert cfg.data.image_shape == (8, 8)
    assert {s.name for s in cfg.splits.ood} >= {"noise", "contrast", "rotation"}


def test_overrides_are_typed(repo_root):
    cfg = load_config(None, ["train.batch_size=8", "model.norm=group", "train.lr=0.1", "data.scale=false"])
    assert cfg.train.batch_size == 8 and isinstance(cfg.train.batch_size, int)
    assert cfg.model.norm == "group"
    assert cfg.train.lr == pytest.approx(0.1)
    assert cfg.data.scale is False


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (["train.batch_size=abc"], "train.batch_size='abc'"),
        (["train.bogus=1"], "unknown key 'train.bogus'"),
        (["model.norm=weird"], "'none', 'batch', 'layer', 'group', 'instance', 'rms' or 'dyt'"),
        (["train.epochs=0"], "train.epochs=0"),
        (["model.family=cnn", "data.image_shape=null"], "needs data.image_shape"),
        (["name=../escape"], "name='../escape'"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_key(repo_root, override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, override)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_override_needs_key_and_value():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("train.batch_size")


def test_override_cannot_descend_into_a_value():
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"train": {"epochs": 3}}, ["train.epochs.x=1"])


def test_missing_config_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)


def test_ood_splits_are_discriminated_by_kind():
    cfg = PipelineConfig.model_validate({
        "data": {"source": "digits", "image_shape": [8, 8]},
        "splits": {"ood": [
            {"name": "a", "kind": "column", "column": "c", "values": ["x"]},
            {"name": "b", "kind": "quantile", "column": "v", "q": 0.8},
            {"name": "c", "kind": "corruption", "corruption": "blur", "severity": 2},
            {"name": "d", "kind": "time", "column": "t", "after": "2024-01-01"},
        ]},
    })
    assert [s.kind for s in cfg.splits.ood] == ["column", "quantile", "corruption", "time"]


def test_duplicate_ood_names_are_refused():
    with pytest.raises(ConfigError, match="repeated: a"):
        load_config(None, ["splits.ood=[{name: a, kind: column, column: c, values: [1]},"
                           " {name: a, kind: column, column: c, values: [2]}]"])


def test_flatten_and_yaml_round_trip(repo_root):
    cfg = load_config()
    flat = flatten(cfg)
    assert flat["train.batch_size"] == cfg.train.batch_size
    assert flat["splits.ood.noise.corruption"] == "gaussian_noise"
    assert PipelineConfig.model_validate(__import__("yaml").safe_load(to_yaml(cfg))) == cfg
