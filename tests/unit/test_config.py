"""Config loading, overrides and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from normlab.config import (
    PipelineConfig,
    apply_overrides,
    flatten,
    load_config,
    parse_override,
    to_yaml,
    validate_config,
)
from normlab.errors import ConfigError
from tests.conftest import REPO


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


def test_there_is_one_default_pipeline():
    """The pydantic defaults, the packaged default and configs/digits.yaml are one config."""
    built_in = PipelineConfig().model_dump()
    assert built_in == load_config(None).model_dump() == load_config(REPO / "configs" / "digits.yaml").model_dump()
    assert built_in == validate_config({}).model_dump()


def test_the_default_loads_from_any_folder(tmp_path, monkeypatch):
    from_repo = load_config(None)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None)
    assert cfg.model_dump() == from_repo.model_dump() == PipelineConfig().model_dump()
    suite = Path(cfg.data.expectations)
    assert suite.is_absolute() and suite.read_bytes() == (REPO / "expectations" / "digits.json").read_bytes()
    assert json.loads(suite.read_text())["expectations"]
    # The work folder stays where the command runs.
    assert cfg.workdir == ".normlab" and cfg.workdir_path() == (tmp_path / ".normlab").resolve()


def test_a_users_config_keeps_its_relative_paths(tmp_path, monkeypatch):
    """A copy of the default is the user's own file: its paths stay relative to the current folder."""
    (tmp_path / "my.yaml").write_text((REPO / "configs" / "digits.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    cfg = load_config("my.yaml", ["data.path=rows.csv"])
    assert (cfg.data.expectations, cfg.data.path) == ("expectations/digits.json", "rows.csv")
    # An override of the default names a file relative to the current folder too.
    assert load_config(None, ["data.expectations=mine.json"]).data.expectations == "mine.json"


def test_a_config_with_data_of_its_own_starts_without_ood_splits_or_thresholds():
    cfg = validate_config({"name": "tab", "data": {"path": "x.csv", "label": "y"}})
    assert cfg.splits.ood == [] and cfg.promotion.thresholds == {}
    assert cfg.data.image_shape is None and cfg.data.expectations is None and cfg.data.scale is True
    # Without a data section it is the default pipeline's data, splits and gate.
    default = PipelineConfig()
    bare = validate_config({"name": "other", "train": {"epochs": 1}})
    assert (bare.data, bare.splits, bare.promotion) == (default.data, default.splits, default.promotion)
