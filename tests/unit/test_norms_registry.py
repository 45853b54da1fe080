"""The norm registry: every entry builds, channel count first, and the config accepts exactly its names.

Adding a norm is one `normlab.norms.NORM_FACTORIES` entry (and its tests): the
config's ``model.norm`` and ``sweep.norms`` validate against the registry, so a
name registered there is a valid config value with nothing else changed.
"""

from __future__ import annotations

import inspect
from types import MappingProxyType

import pydantic
import pytest
import torch
from torch import nn

from normlab import norms
from normlab.config import ModelConfig, PipelineConfig, SweepConfig, load_config
from normlab.errors import ConfigError
from normlab.norms import NORM_FACTORIES, NORM_NAMES, get_norm_layer

C = 6
LAYOUTS = pytest.mark.parametrize("spatial", [False, True], ids=["vectors", "maps"])
EVERY_NORM = pytest.mark.parametrize("name", list(NORM_FACTORIES))


def _scaled(num_features: int, *, spatial: bool, eps: float, groups: int) -> nn.Module:
    """A norm the test registers: LayerNorm on vectors (any factory of the registry's signature would do)."""
    return nn.LayerNorm(num_features, eps=eps)


@pytest.fixture
def scaled_registered(monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    """The registry with one more norm, ``scaled``, as if a factory had been added to normlab/norms.py."""
    monkeypatch.setattr(norms, "NORM_FACTORIES", MappingProxyType({**NORM_FACTORIES, "scaled": _scaled}))
    return (*NORM_FACTORIES, "scaled")


def _schema_names(model: type[pydantic.BaseModel], field: str) -> list[str]:
    """The ``enum`` of a norm field in the config's JSON schema (a list field: of its items)."""
    prop = PipelineConfig.model_json_schema()["$defs"][model.__name__]["properties"][field]
    return prop.get("items", prop)["enum"]


def _input(spatial: bool, channels: int = C) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn((4, channels, 3, 3) if spatial else (4, channels), generator=gen)


def test_norm_names_are_the_registry_keys_in_order() -> None:
    assert NORM_NAMES == tuple(NORM_FACTORIES)


def test_the_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        NORM_FACTORIES["new"] = NORM_FACTORIES["none"]  # type: ignore[index]


def test_the_config_schema_and_sweep_default_list_exactly_the_registry_keys() -> None:
    # Prefect checks flow parameters against this schema; the default grid sweeps every norm.
    assert _schema_names(ModelConfig, "norm") == list(NORM_FACTORIES)
    assert _schema_names(SweepConfig, "norms") == list(NORM_FACTORIES)
    assert tuple(SweepConfig().norms) == tuple(NORM_FACTORIES)


@EVERY_NORM
def test_config_accepts_every_registered_name(name: str) -> None:
    assert ModelConfig(norm=name).norm == name
    assert SweepConfig(norms=[name]).norms == [name]


def test_a_norm_added_to_the_registry_is_a_config_value_with_nothing_else_changed(scaled_registered) -> None:
    assert ModelConfig(norm="scaled").norm == "scaled"
    assert load_config(None, ["model.norm=scaled", "sweep.norms=[batch,scaled]"]).sweep.norms == ["batch", "scaled"]
    assert tuple(SweepConfig().norms) == scaled_registered
    assert _schema_names(ModelConfig, "norm") == list(scaled_registered)
    assert isinstance(get_norm_layer("scaled", C, spatial=False), nn.LayerNorm)


def test_a_norm_removed_from_the_registry_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(norms, "NORM_FACTORIES", MappingProxyType({k: v for k, v in NORM_FACTORIES.items()
                                                                     if k != "dyt"}))
    with pytest.raises(pydantic.ValidationError):
        ModelConfig(norm="dyt")


@pytest.mark.parametrize("value", ["weight", "Batch", "", 1, None])
def test_config_refuses_an_unregistered_name_naming_every_registered_one(value: object) -> None:
    with pytest.raises(pydantic.ValidationError) as refused:
        ModelConfig(norm=value)
    (error,) = refused.value.errors()
    assert error["loc"] == ("norm",)
    assert error["msg"] == "Input should be 'none', 'batch', 'layer', 'group', 'instance', 'rms' or 'dyt'"


def test_an_unknown_norm_in_a_config_is_one_line_naming_the_registered_ones(scaled_registered) -> None:
    for override in ("model.norm=weight", "sweep.norms=[batch,weight]"):
        with pytest.raises(ConfigError) as refused:
            load_config(None, [override])
        message = str(refused.value)
        assert "\n" not in message and "'weight'" in message
        assert message.endswith("Input should be " + ", ".join(map(repr, scaled_registered[:-1]))
                                + f" or {scaled_registered[-1]!r}")


@EVERY_NORM
def test_factory_takes_the_channel_count_first(name: str) -> None:
    params = list(inspect.signature(NORM_FACTORIES[name]).parameters.values())
    assert params[0].name == "num_features"
    assert params[0].kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    keywords = {p.name for p in params[1:] if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert {"spatial", "eps", "groups"} <= keywords


@LAYOUTS
@EVERY_NORM
def test_every_factory_builds_a_module_that_keeps_the_shape(name: str, spatial: bool) -> None:
    layer = NORM_FACTORIES[name](C, spatial=spatial, eps=1e-5, groups=3)
    assert isinstance(layer, nn.Module)
    x = _input(spatial).requires_grad_()
    y = layer(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


@LAYOUTS
@EVERY_NORM
def test_per_channel_parameters_have_the_channel_count(name: str, spatial: bool) -> None:
    for channels in (4, 7):
        layer = NORM_FACTORIES[name](channels, spatial=spatial, eps=1e-5, groups=2)
        assert layer(_input(spatial, channels)).shape == _input(spatial, channels).shape
        for param in layer.parameters():
            # Per-channel vectors or scalars; never sized by anything but C.
            assert param.numel() in (1, channels), (name, tuple(param.shape))


@LAYOUTS
@EVERY_NORM
def test_get_norm_layer_builds_what_the_factory_builds(name: str, spatial: bool) -> None:
    direct = NORM_FACTORIES[name](C, spatial=spatial, eps=1e-3, groups=4)
    looked_up = get_norm_layer(name, C, spatial=spatial, eps=1e-3, groups=4)
    assert type(looked_up) is type(direct)
    assert repr(looked_up) == repr(direct)
    torch.testing.assert_close(looked_up(_input(spatial)), direct(_input(spatial)))


@EVERY_NORM
def test_every_call_builds_a_fresh_module(name: str) -> None:
    a = get_norm_layer(name, C, spatial=False)
    b = get_norm_layer(name, C, spatial=False)
    assert a is not b
    shared = {id(p) for p in a.parameters()} & {id(p) for p in b.parameters()}
    assert not shared
