"""The norm registry: every entry builds, channel count first, and the config lists exactly its names.

Adding a norm is one `normlab.norms.NORM_FACTORIES` entry, the same name in
``normlab.config.NormName``, and its tests; the tie tests below fail while the
two lists differ.
"""

from __future__ import annotations

import inspect
import typing

import pydantic
import pytest
import torch
from torch import nn

from normlab.config import ModelConfig, NormName, SweepConfig
from normlab.norms import NORM_FACTORIES, NORM_NAMES, get_norm_layer

C = 6
LAYOUTS = pytest.mark.parametrize("spatial", [False, True], ids=["vectors", "maps"])
EVERY_NORM = pytest.mark.parametrize("name", list(NORM_FACTORIES))


def _literal_names(annotation: object) -> tuple[str, ...]:
    """The strings of a ``Literal[...]`` annotation (or of ``list[Literal[...]]``)."""
    if typing.get_origin(annotation) is list:
        (annotation,) = typing.get_args(annotation)
    assert typing.get_origin(annotation) is typing.Literal, annotation
    return typing.get_args(annotation)


def _input(spatial: bool, channels: int = C) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn((4, channels, 3, 3) if spatial else (4, channels), generator=gen)


def test_norm_names_are_the_registry_keys_in_order() -> None:
    assert NORM_NAMES == tuple(NORM_FACTORIES)


def test_the_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        NORM_FACTORIES["new"] = NORM_FACTORIES["none"]  # type: ignore[index]


def test_config_norm_name_lists_exactly_the_registry_keys() -> None:
    # A norm registered without its config name (or the reverse) fails here.
    assert _literal_names(NormName) == tuple(NORM_FACTORIES)


def test_model_and_sweep_config_norm_fields_use_the_registry_names() -> None:
    assert _literal_names(ModelConfig.model_fields["norm"].annotation) == tuple(NORM_FACTORIES)
    assert _literal_names(SweepConfig.model_fields["norms"].annotation) == tuple(NORM_FACTORIES)
    assert tuple(SweepConfig().norms) == tuple(NORM_FACTORIES)


@EVERY_NORM
def test_config_accepts_every_registered_name(name: str) -> None:
    assert ModelConfig(norm=name).norm == name


def test_config_refuses_an_unregistered_name() -> None:
    with pytest.raises(pydantic.ValidationError):
        ModelConfig(norm="weight")


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
