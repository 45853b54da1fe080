"""Unit tests for the normalization registry."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from normlab.norms import (
    NORM_NAMES,
    DyT,
    InstanceNorm1dFeatures,
    RMSNorm2d,
    get_norm_layer,
    has_batch_stats,
)

C = 6


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _randomize_params(module: nn.Module, gen: torch.Generator) -> None:
    """Move parameters off their init so affine terms are actually exercised."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))


def test_norm_names_exact() -> None:
    assert NORM_NAMES == ("none", "batch", "layer", "group", "instance", "rms", "dyt")


@pytest.mark.parametrize("spatial", [False, True], ids=["vectors", "maps"])
@pytest.mark.parametrize("name", NORM_NAMES)
def test_every_name_keeps_shape_and_is_finite(name: str, spatial: bool, gen: torch.Generator) -> None:
    layer = get_norm_layer(name, C, spatial=spatial)
    x = torch.randn((4, C, 3, 3) if spatial else (4, C), generator=gen, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert torch.isfinite(y).all()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize(
    ("name", "spatial", "cls"),
    [
        ("none", False, nn.Identity),
        ("none", True, nn.Identity),
        ("batch", False, nn.BatchNorm1d),
        ("batch", True, nn.BatchNorm2d),
        ("layer", False, nn.LayerNorm),
        ("layer", True, nn.GroupNorm),
        ("group", False, nn.GroupNorm),
        ("group", True, nn.GroupNorm),
        ("instance", False, InstanceNorm1dFeatures),
        ("instance", True, nn.InstanceNorm2d),
        ("rms", False, nn.RMSNorm),
        ("rms", True, RMSNorm2d),
        ("dyt", False, DyT),
        ("dyt", True, DyT),
    ],
)
def test_name_resolves_to_documented_class(name: str, spatial: bool, cls: type[nn.Module]) -> None:
    assert type(get_norm_layer(name, C, spatial=spatial)) is cls


@pytest.mark.parametrize("name", ["batch", "layer", "group", "instance", "rms"])
@pytest.mark.parametrize("spatial", [False, True], ids=["vectors", "maps"])
def test_eps_is_passed_through(name: str, spatial: bool) -> None:
    layer = get_norm_layer(name, C, spatial=spatial, eps=1e-3)
    assert layer.eps == pytest.approx(1e-3)


def test_rms_vectors_eps_is_not_machine_epsilon() -> None:
    # nn.RMSNorm defaults eps to None (dtype epsilon); the registry must pin it.
    assert get_norm_layer("rms", C, spatial=False).eps == 1e-5


def test_layer_on_maps_normalizes_over_chw(gen: torch.Generator) -> None:
    layer = get_norm_layer("layer", C, spatial=True, eps=1e-5)
    _randomize_params(layer, gen)
    x = torch.randn(3, C, 4, 5, generator=gen) * 3 + 1
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    var = x.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-5) * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_rms_on_maps_matches_formula(gen: torch.Generator) -> None:
    layer = get_norm_layer("rms", C, spatial=True, eps=1e-5)
    _randomize_params(layer, gen)
    x = torch.randn(3, C, 4, 5, generator=gen) * 3 + 1
    rms = torch.sqrt(x.pow(2).mean(dim=(1, 2, 3), keepdim=True) + 1e-5)
    expected = x / rms * layer.weight.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    assert [n for n, _ in layer.named_parameters()] == ["weight"]  # RMSNorm has no bias


def test_rms_on_vectors_matches_formula(gen: torch.Generator) -> None:
    layer = get_norm_layer("rms", C, spatial=False, eps=1e-5)
    _randomize_params(layer, gen)
    x = torch.randn(5, C, generator=gen) * 3 + 1
    expected = x / torch.sqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-5) * layer.weight
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spatial", [False, True], ids=["vectors", "maps"])
def test_dyt_init_and_formula(spatial: bool, gen: torch.Generator) -> None:
    layer = get_norm_layer("dyt", C, spatial=spatial)
    assert layer.alpha.item() == 0.5
    assert layer.alpha.shape == ()
    torch.testing.assert_close(layer.weight.detach(), torch.ones(C))
    torch.testing.assert_close(layer.bias.detach(), torch.zeros(C))
    _randomize_params(layer, gen)
    x = torch.randn((2, C, 3, 3) if spatial else (2, C), generator=gen)
    shape = (1, C, 1, 1) if spatial else (1, C)
    expected = layer.weight.view(shape) * torch.tanh(layer.alpha * x) + layer.bias.view(shape)
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize(("channels", "groups", "expected"), [(12, 8, 6), (16, 8, 8), (7, 8, 7), (13, 8, 1), (4, 8, 4)])
@pytest.mark.parametrize("spatial", [False, True], ids=["vectors", "maps"])
def test_group_picks_largest_divisor(channels: int, groups: int, expected: int, spatial: bool) -> None:
    layer = get_norm_layer("group", channels, spatial=spatial, groups=groups)
    assert layer.num_groups == expected


@settings(max_examples=60, deadline=None)
@given(channels=st.integers(1, 256), groups=st.integers(1, 64))
def test_group_count_is_a_maximal_divisor(channels: int, groups: int) -> None:
    g = get_norm_layer("group", channels, spatial=True, groups=groups).num_groups
    assert channels % g == 0 and g <= groups
    assert not any(channels % h == 0 for h in range(g + 1, groups + 1))


def test_group_on_vectors_normalizes_within_groups(gen: torch.Generator) -> None:
    layer = get_norm_layer("group", 12, spatial=False, groups=8)  # 6 groups of 2
    x = torch.randn(4, 12, generator=gen) * 2 + 3
    xg = x.view(4, 6, 2)
    expected = (xg - xg.mean(-1, keepdim=True)) / torch.sqrt(xg.var(-1, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(layer(x), expected.view(4, 12), atol=1e-4, rtol=1e-4)


def test_instance_on_vectors_uses_scalar_affine(gen: torch.Generator) -> None:
    layer = get_norm_layer("instance", C, spatial=False)
    assert sum(p.numel() for p in layer.parameters()) == 2
    x = torch.randn(4, C, generator=gen) * 2 + 1
    # At init it equals layer norm: they differ only by the affine.
    torch.testing.assert_close(layer(x), get_norm_layer("layer", C, spatial=False)(x))
    with torch.no_grad():
        layer.weight.fill_(2.0)
        layer.bias.fill_(-1.0)
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, unbiased=False, keepdim=True)
    torch.testing.assert_close(layer(x), 2.0 * (x - mean) / torch.sqrt(var + 1e-5) - 1.0, atol=1e-5, rtol=1e-5)


def test_instance_on_maps_has_no_running_stats(gen: torch.Generator) -> None:
    layer = get_norm_layer("instance", C, spatial=True)
    assert layer.affine and not layer.track_running_stats
    x = torch.randn(2, C, 4, 4, generator=gen)
    y_train = layer.train()(x)
    torch.testing.assert_close(layer.eval()(x), y_train)


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError) as info:
        get_norm_layer("foo", C, spatial=False)
    message = str(info.value)
    assert "'foo'" in message
    assert "\n" not in message
    for name in NORM_NAMES:
        assert name in message


@pytest.mark.parametrize("name", ["Batch", "LAYER", "groupnorm", "ln", ""])
def test_names_are_strict(name: str) -> None:
    with pytest.raises(ValueError, match="unknown norm"):
        get_norm_layer(name, C, spatial=False)


def test_class_is_called_with_num_features() -> None:
    layer = get_norm_layer(nn.LayerNorm, C, spatial=False)
    assert isinstance(layer, nn.LayerNorm) and layer.normalized_shape == (C,)


def test_partial_is_called_with_num_features() -> None:
    layer = get_norm_layer(functools.partial(nn.GroupNorm, 3), C, spatial=True)
    assert isinstance(layer, nn.GroupNorm)
    assert (layer.num_groups, layer.num_channels) == (3, C)


def test_lambda_factory_is_accepted() -> None:
    layer = get_norm_layer(lambda c: nn.BatchNorm1d(c, momentum=0.3), C, spatial=False)
    assert isinstance(layer, nn.BatchNorm1d) and layer.momentum == 0.3


def test_built_module_is_rejected() -> None:
    # Sharing one instance across blocks would silently tie their parameters.
    with pytest.raises(TypeError, match="not a built module"):
        get_norm_layer(nn.LayerNorm(C), C, spatial=False)


def test_factory_returning_non_module_is_rejected() -> None:
    with pytest.raises(TypeError, match=r"not an nn\.Module"):
        get_norm_layer(lambda c: c, C, spatial=False)


def test_non_callable_is_rejected() -> None:
    with pytest.raises(TypeError):
        get_norm_layer(3, C, spatial=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(("num_features", "groups"), [(0, 8), (C, 0)])
def test_invalid_sizes_raise(num_features: int, groups: int) -> None:
    with pytest.raises(ValueError):
        get_norm_layer("group", num_features, spatial=False, groups=groups)


def test_each_call_builds_a_fresh_layer() -> None:
    a = get_norm_layer("layer", C, spatial=False)
    b = get_norm_layer("layer", C, spatial=False)
    assert a is not b and a.weight is not b.weight


@pytest.mark.parametrize("name", NORM_NAMES)
@pytest.mark.parametrize("spatial", [False, True], ids=["vectors", "maps"])
def test_has_batch_stats(name: str, spatial: bool) -> None:
    model = nn.Sequential(nn.Linear(C, C), get_norm_layer(name, C, spatial=spatial))
    assert has_batch_stats(model) is (name == "batch")
