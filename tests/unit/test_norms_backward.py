"""RMSNorm2d's hand-written backward and the in-place inference paths of RMSNorm2d and DyT match the formulas."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normlab.models import build_model
from normlab.norms import DyT, RMSNorm2d


def _rms_maps_formula(layer: RMSNorm2d, x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).mean(dim=(1, 2, 3), keepdim=True) + layer.eps) * layer.weight.view(1, -1, 1, 1)


def _dyt_formula(layer: DyT, x: torch.Tensor) -> torch.Tensor:
    shape = (1, -1, 1, 1) if layer.spatial else (1, -1)
    return torch.tanh(layer.alpha * x) * layer.weight.view(shape) + layer.bias.view(shape)


CASES = [
    ("rms-maps", lambda: RMSNorm2d(5, eps=1e-3), (3, 5, 4, 2), _rms_maps_formula),
    ("dyt-maps", lambda: DyT(5, spatial=True), (3, 5, 4, 2), _dyt_formula),
    ("dyt-vectors", lambda: DyT(5, spatial=False), (6, 5), _dyt_formula),
]


def _randomized(make, gen: torch.Generator, dtype=torch.float64) -> nn.Module:
    layer = make().to(dtype)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=dtype))
    return layer


@pytest.mark.parametrize(("name", "make", "shape", "formula"), CASES, ids=[c[0] for c in CASES])
def test_gradients_match_autograd_of_the_formula(name, make, shape, formula) -> None:
    gen = torch.Generator().manual_seed(1)
    layer = _randomized(make, gen)
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 3 + 1).requires_grad_(True)
    grad_out = torch.randn(shape, generator=gen, dtype=torch.float64)
    ours = torch.autograd.grad(layer(x), [x, *layer.parameters()], grad_out)
    expected = torch.autograd.grad(formula(layer, x), [x, *layer.parameters()], grad_out)
    for a, b in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(("name", "make", "shape", "formula"), CASES, ids=[c[0] for c in CASES])
def test_gradcheck(name, make, shape, formula) -> None:
    gen = torch.Generator().manual_seed(2)
    layer = _randomized(make, gen)
    x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    for name_, param in layer.named_parameters():
        value = param.detach().clone().requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda v, n=name_: torch.func.functional_call(layer, {n: v}, (x.detach(),)), (value,)
        )


@pytest.mark.parametrize(("name", "make", "shape", "formula"), CASES, ids=[c[0] for c in CASES])
def test_inference_path_equals_training_path(name, make, shape, formula) -> None:
    gen = torch.Generator().manual_seed(3)
    layer = _randomized(make, gen, dtype=torch.float32)
    x = torch.randn(shape, generator=gen) * 3 + 1
    with torch.no_grad():
        fast = layer(x)
    slow = layer(x)
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(fast, formula(layer, x).detach(), atol=1e-5, rtol=1e-5)
    assert slow.requires_grad and not fast.requires_grad


def test_only_the_input_or_only_the_parameters_need_gradients() -> None:
    gen = torch.Generator().manual_seed(4)
    for make, shape in [(lambda: RMSNorm2d(4), (2, 4, 3, 3)), (lambda: DyT(4, spatial=True), (2, 4, 3, 3))]:
        layer = _randomized(make, gen, dtype=torch.float32)
        x = torch.randn(shape, generator=gen, requires_grad=True)
        layer.requires_grad_(False)
        layer(x).sum().backward()
        assert x.grad is not None and all(p.grad is None for p in layer.parameters())
        layer.requires_grad_(True)
        layer(x.detach()).sum().backward()
        assert all(p.grad is not None for p in layer.parameters())


@pytest.mark.parametrize("norm", ["rms", "dyt"])
def test_models_with_these_norms_stay_fx_traceable(norm: str) -> None:
    torch.manual_seed(0)
    model = build_model("cnn", in_features=64, num_classes=3, norm=norm, image_shape=(8, 8)).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(4, 64)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))
