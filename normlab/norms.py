"""Normalization registry: one name (or factory) -> one layer, channel count first.

`NORM_FACTORIES` maps each name to a factory ``factory(num_features, *, spatial, eps,
groups)``; `NORM_NAMES` lists its keys. It is the one list of norms: the config's
``model.norm`` and ``sweep.norms`` accept exactly its keys (``normlab.config.NormName``
reads them when it validates).
Models call :func:`get_norm_layer` once per block in ``__init__``, so the norm is a
config value and every layer is swappable. Two input layouts are supported:
feature vectors ``(N, C)`` (``spatial=False``, MLPs) and channel maps
``(N, C, H, W)`` (``spatial=True``, CNNs).

What each name computes (the choice for vectors matters, because several norms that
differ on maps collapse onto each other for vectors):

- ``none``: ``nn.Identity``.
- ``batch``: ``nn.BatchNorm1d`` / ``nn.BatchNorm2d``. Per-channel statistics over the
  batch (and positions) in training, running averages at eval; the only norm whose
  output depends on the other samples, and the only one that can be folded into the
  preceding Linear/Conv.
- ``layer``: vectors: ``nn.LayerNorm(C)``. Maps: each sample normalized over
  ``(C, H, W)`` with a per-channel affine, i.e. ``nn.GroupNorm(1, C)`` (the
  definition of Ba et al. 2016 as used by Wu & He 2018), not a LayerNorm over C
  at each position.
- ``group``: ``nn.GroupNorm(g, C)`` for both layouts, where ``g`` is the largest
  divisor of ``C`` that is ``<= groups``, so any width works (a prime width falls
  back to one group, i.e. ``layer``).
- ``instance``: maps: ``nn.InstanceNorm2d(C, affine=True)`` without running stats,
  so train and eval compute the same thing. Vectors: a sample's features are its one
  "instance", normalized over its C features with a single scalar gain and bias
  (:class:`InstanceNorm1dFeatures`). On vectors it therefore differs from ``layer``
  only by that scalar affine (the two are equal at initialization).
- ``rms``: vectors: ``nn.RMSNorm(C, eps=eps)``. Maps: each sample divided by its RMS
  over ``(C, H, W)`` with a per-channel gain and no bias (:class:`RMSNorm2d`), the
  RMS counterpart of ``layer`` on maps (Zhang & Sennrich 2019).
- ``dyt``: :class:`DyT`, ``weight * tanh(alpha * x) + bias`` with a learnable scalar
  ``alpha`` (init 0.5) and a per-channel affine; no statistics at all (Zhu, Chen, He,
  LeCun, Liu 2025).

Speed: PyTorch has fused CPU kernels for LayerNorm, GroupNorm and BatchNorm, not for
RMSNorm (``F.rms_norm`` runs as six separate ops on the CPU) or DyT. Where no gradient
is needed, :class:`RMSNorm2d` and :class:`DyT` therefore work in place on their own
temporaries, and :class:`RMSNorm2d` computes its backward pass by hand (autograd's takes
about twice the passes over the data). DyT keeps autograd's backward: a hand-written one
is faster only on large tensors, and its Python overhead makes small models, this
project's usual ones, slower. The results are the same as the plain formulas;
``bench/norms.py`` measures them against LayerNorm.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.batchnorm import _BatchNorm

NormSpec = str | type[nn.Module] | Callable[..., nn.Module]


class InstanceNorm1dFeatures(nn.Module):
    """Normalize each feature vector over its features, with a scalar gain and bias.

    Args:
        num_features: Number of features C of the ``(N, C)`` input.
        eps: Added to the variance for numerical stability.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``weight * (x - mean) / sqrt(var + eps) + bias`` per sample."""
        # F.layer_norm is the fused kernel for exactly this reduction; the stored
        # width (not x.shape) keeps the module traceable by torch.fx.
        return F.layer_norm(x, (self.num_features,), eps=self.eps) * self.weight + self.bias

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class RMSNorm2d(nn.Module):
    """RMS-normalize each channel map sample over ``(C, H, W)`` with a per-channel gain.

    Args:
        num_features: Number of channels C of the ``(N, C, H, W)`` input.
        eps: Added to the mean square for numerical stability.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x / sqrt(mean(x^2 over C,H,W) + eps) * weight``."""
        # A Python flag, not a tensor value: the branch stays torch.fx traceable.
        if torch.is_grad_enabled():
            return _RMSNormMaps.apply(x, self.weight, self.eps)
        return (x * _inv_rms_maps(x, self.eps)).mul_(self.weight.view(1, -1, 1, 1))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class DyT(nn.Module):
    """Dynamic Tanh: ``weight * tanh(alpha * x) + bias``, a statistics-free norm.

    Args:
        num_features: Number of channels C (dim 1 of the input).
        alpha_init: Initial value of the learnable scalar ``alpha``.
        spatial: True for ``(N, C, H, W)`` input, False for ``(N, C)``.
    """

    def __init__(self, num_features: int, alpha_init: float = 0.5, *, spatial: bool = False) -> None:
        super().__init__()
        self.num_features = num_features
        self.spatial = spatial
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``weight * tanh(alpha * x) + bias`` with the affine on dim 1."""
        weight, bias = self.weight, self.bias
        if self.spatial:
            weight, bias = weight.view(1, -1, 1, 1), bias.view(1, -1, 1, 1)
        # A Python flag, not a tensor value: the branch stays torch.fx traceable.
        if torch.is_grad_enabled():
            return torch.tanh(self.alpha * x) * weight + bias
        # No graph to keep: one temporary, updated in place (one allocation instead of four).
        return torch.mul(x, self.alpha).tanh_().mul_(weight).add_(bias)

    def extra_repr(self) -> str:
        return f"{self.num_features}, spatial={self.spatial}"


def _inv_rms_maps(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``1 / sqrt(mean(x^2) + eps)`` per sample over ``(C, H, W)``, shape ``(N, 1, 1, 1)``.

    The norm reduction reads ``x`` once and allocates nothing of its size
    (``x.pow(2).mean()`` would write a full temporary first).
    """
    count = x.shape[1] * x.shape[2] * x.shape[3]
    norm = torch.linalg.vector_norm(x, dim=(1, 2, 3), keepdim=True)
    return norm.square_().div_(count).add_(eps).rsqrt_()


class _RMSNormMaps(torch.autograd.Function):
    """:class:`RMSNorm2d` with a hand-written backward pass.

    With ``xhat = x * r`` and ``r = (mean(x^2) + eps)^-1/2`` per sample, and
    ``gh = grad * weight``: ``grad_x = r * (gh - xhat * mean(gh * xhat))`` and
    ``grad_weight = sum(grad * xhat)`` over N, H, W.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        inv_rms = _inv_rms_maps(x, eps)
        xhat = x * inv_rms
        ctx.save_for_backward(xhat, inv_rms, weight)
        return xhat * weight.view(1, -1, 1, 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        xhat, inv_rms, weight = ctx.saved_tensors
        needs_x, needs_weight = ctx.needs_input_grad[:2]
        grad_x = grad_weight = buffer = None
        if needs_weight:
            buffer = grad * xhat
            grad_weight = buffer.sum(dim=(0, 2, 3))
        if needs_x:
            n = xhat.shape[0]
            count = xhat.shape[1] * xhat.shape[2] * xhat.shape[3]
            # One temporary the size of x for the whole pass: the weight gradient's is reused.
            gh = torch.mul(grad, weight.view(1, -1, 1, 1), out=buffer)
            # One batched dot product per sample: no temporary the size of x.
            dot = torch.bmm(gh.reshape(n, 1, count), xhat.reshape(n, count, 1)).view(n, 1, 1, 1).div_(count)
            grad_x = gh.addcmul_(xhat, dot, value=-1).mul_(inv_rms)
        return grad_x, grad_weight, None


def _num_groups(num_features: int, groups: int) -> int:
    """Return the largest divisor of ``num_features`` that is ``<= groups``."""
    return max(g for g in range(1, min(groups, num_features) + 1) if num_features % g == 0)


# The registry --------------------------------------------------------------------------
#
# Each factory takes the channel count first and the layout and hyperparameters as
# keywords: ``factory(num_features, *, spatial, eps, groups) -> nn.Module``. A factory
# ignores the keywords it has no use for and returns a fresh module on every call.
#
# Adding a norm: write its factory below, add it to `NORM_FACTORIES` and describe it in
# this module's docstring. The config accepts the name from then on (``NormName`` in
# normlab/config/sections.py validates against this registry), and a sweep's default grid
# includes it. tests/unit/test_norms_registry.py builds every entry.


class NormFactory(Protocol):
    """Builds one norm layer for ``num_features`` channels (dim 1 of the input)."""

    def __call__(self, num_features: int, *, spatial: bool, eps: float, groups: int) -> nn.Module: ...


def _none(num_features: int, *, spatial: bool, eps: float, groups: int) -> nn.Module:
    return nn.Identity()


def _batch(num_features: int, *, spatial: bool, eps: float, groups: int) -> nn.Module:
    return nn.BatchNorm2d(num_features, eps=eps) if spatial else nn.BatchNorm1d(num_features, eps=eps)


def _layer(num_features: int, *, spatial: bool, eps: float, groups: int) -> nn.Module:
    return nn.GroupNorm(1, num_features, eps=eps) if spatial else nn.LayerNorm(num_features, eps=eps)


def _group(num_features: int, *, spatial: bool, eps: float, groups: int) -> nn.Module:
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    return nn.GroupNorm(_num_groups(num_features, groups), num_features, eps=eps)


def _instance(num_features: int, *, spatial: bool, eps: float, groups: int) -> nn.Module:
    if spatial:
        return nn.InstanceNorm2d(num_features, eps=eps, affine=True, track_running_stats=False)
    return InstanceNorm1dFeatures(num_features, eps=eps)


def _rms(num_features: int, *, spatial: bool, eps: float, groups: int) -> nn.Module:
    # nn.RMSNorm's default eps is the dtype's machine epsilon; pin it.
    return RMSNorm2d(num_features, eps=eps) if spatial else nn.RMSNorm(num_features, eps=eps)


def _dyt(num_features: int, *, spatial: bool, eps: float, groups: int) -> nn.Module:
    return DyT(num_features, alpha_init=0.5, spatial=spatial)


# Name -> factory, read-only. Its order is NORM_NAMES' order (sweep grids, reports, benchmarks).
NORM_FACTORIES: Mapping[str, NormFactory] = MappingProxyType({
    "none": _none,
    "batch": _batch,
    "layer": _layer,
    "group": _group,
    "instance": _instance,
    "rms": _rms,
    "dyt": _dyt,
})

NORM_NAMES: tuple[str, ...] = tuple(NORM_FACTORIES)


def get_norm_layer(
    norm: NormSpec,
    num_features: int,
    *,
    spatial: bool,
    groups: int = 8,
    eps: float = 1e-5,
) -> nn.Module:
    """Build the normalization layer for ``num_features`` channels.

    Args:
        norm: A name from ``NORM_NAMES`` (exact, lower case; a key of `NORM_FACTORIES`),
            or a class or callable called as ``norm(num_features)`` (e.g. ``functools.partial``).
        num_features: Channel count C (dim 1 of the input).
        spatial: True for ``(N, C, H, W)`` channel maps, False for ``(N, C)`` vectors.
        groups: Upper bound on the number of groups for ``group``.
        eps: Numerical-stability constant for the statistics-based norms.

    Returns:
        A fresh module; nothing is shared between calls.

    Raises:
        ValueError: If the name is unknown or ``num_features``/``groups`` is < 1.
        TypeError: If ``norm`` is neither a name nor a factory of modules.
    """
    if num_features < 1:
        raise ValueError(f"num_features must be >= 1, got {num_features}")
    if isinstance(norm, nn.Module):
        # A built module is callable too, but reusing it would share parameters.
        raise TypeError(f"pass a norm class or factory, not a built module: {norm!r}")
    if not isinstance(norm, str):
        if not callable(norm):
            raise TypeError(f"norm must be a name, class or callable, got {type(norm).__name__}")
        layer = norm(num_features)
        if not isinstance(layer, nn.Module):
            raise TypeError(f"norm factory {norm!r} returned {type(layer).__name__}, not an nn.Module")
        return layer
    factory = NORM_FACTORIES.get(norm)
    if factory is None:
        raise ValueError(f"unknown norm {norm!r}; known: {', '.join(NORM_FACTORIES)}")
    return factory(num_features, spatial=spatial, eps=eps, groups=groups)


def has_batch_stats(module: nn.Module) -> bool:
    """Return True if ``module`` contains any BatchNorm layer (batch-dependent in training)."""
    return any(isinstance(m, _BatchNorm) for m in module.modules())
