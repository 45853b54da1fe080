"""A vision transformer (patch embedding, encoder blocks) with any norm of the registry, pre- or post-norm.

After Dosovitskiy et al. (2021), sized for small images: non-overlapping
``patch_size`` patches embedded by a strided convolution, a learned position
embedding, ``depth`` encoder blocks (multi-head self-attention, then a
two-layer GELU MLP of ``mlp_ratio`` times the width), mean pooling over the
tokens and a Linear head.

``norm_position`` places the block's two norms:

- ``pre`` (the ViT default): ``x + attn(norm(x))``, ``x + mlp(norm(x))``, and
  one more norm before pooling;
- ``post`` (the original Transformer): ``norm(x + attn(x))``, ``norm(x + mlp(x))``.

Every norm of `normlab.norms.NORM_FACTORIES` works on the tokens: `TokenNorm`
applies the registry's vector form (``spatial=False``) to each token's
features, so ``layer`` is the usual LayerNorm, ``rms`` RMSNorm, ``dyt`` Dynamic
Tanh, and ``batch`` BatchNorm with statistics over every token of the batch.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from normlab.norms import NormSpec, get_norm_layer

NORM_POSITIONS: tuple[str, ...] = ("pre", "post")


class TokenNorm(nn.Module):
    """A norm of the registry over the features of each token: ``(N, T, D)`` in and out."""

    def __init__(self, norm: NormSpec, width: int, *, groups: int) -> None:
        super().__init__()
        self.norm = get_norm_layer(norm, width, spatial=False, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        return self.norm(x.reshape(n * t, d)).reshape(n, t, d)


class EncoderBlock(nn.Module):
    """Self-attention and an MLP, each with a residual connection and a norm (``pre`` or ``post``)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, *, norm: NormSpec, groups: int,
                 position: Literal["pre", "post"], dropout: float) -> None:
        super().__init__()
        self.pre = position == "pre"
        self.norm1 = TokenNorm(norm, width, groups=groups)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm2 = TokenNorm(norm, width, groups=groups)
        self.mlp = nn.Sequential(nn.Linear(width, width * mlp_ratio), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(width * mlp_ratio, width))

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre:
            x = x + self._attend(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self._attend(x))
        return self.norm2(x + self.mlp(x))


class ViT(nn.Module):
    """Vision transformer on flat images.

    Args:
        image_shape: ``(H, W)`` of each image; both divisible by ``patch_size``.
        num_classes: Number of output logits.
        patch_size: Side of the square patches (tokens: ``H * W / patch_size**2``).
        width: Token width D; divisible by ``heads``.
        depth: Encoder blocks.
        heads: Attention heads.
        mlp_ratio: Hidden width of each block's MLP, in multiples of ``width``.
        norm: Norm name or factory, see :func:`normlab.norms.get_norm_layer`.
        norm_position: ``pre`` or ``post`` (see the module docstring).
        groups: Upper bound on the number of groups for ``group``.
        dropout: Dropout in attention, MLPs and before the head (0 disables it).
        in_channels: Channels of the input; the flat input has
            ``in_channels * H * W`` features in ``(C, H, W)`` order.
    """

    def __init__(
        self,
        image_shape: tuple[int, int],
        num_classes: int,
        *,
        patch_size: int = 4,
        width: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: int = 2,
        norm: NormSpec = "layer",
        norm_position: Literal["pre", "post"] = "pre",
        groups: int = 8,
        dropout: float = 0.0,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        height, wide = image_shape
        if patch_size < 1 or height % patch_size or wide % patch_size:
            raise ValueError(f"vit: image_shape {tuple(image_shape)} is not divisible into {patch_size}x{patch_size} "
                             "patches")
        if width < 1 or heads < 1 or width % heads:
            raise ValueError(f"vit: width {width} is not divisible by heads {heads}")
        if norm_position not in NORM_POSITIONS:
            raise ValueError(f"vit: norm_position {norm_position!r}; known: {', '.join(NORM_POSITIONS)}")
        if depth < 1 or mlp_ratio < 1:
            raise ValueError(f"vit: depth and mlp_ratio must be >= 1, got {depth}, {mlp_ratio}")
        self.image_shape = (height, wide)
        self.in_channels = in_channels
        tokens = (height // patch_size) * (wide // patch_size)
        self.embed = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)
        self.position = nn.Parameter(torch.zeros(1, tokens, width))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.blocks = nn.Sequential(*[
            EncoderBlock(width, heads, mlp_ratio, norm=norm, groups=groups, position=norm_position, dropout=dropout)
            for _ in range(depth)
        ])
        # Pre-norm leaves the residual stream unnormalized: one norm before pooling, as in ViT.
        self.final = TokenNorm(norm, width, groups=groups) if norm_position == "pre" else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, in_channels * H * W)`` to logits ``(N, num_classes)``."""
        x = x.reshape(x.size(0), self.in_channels, *self.image_shape)
        x = self.embed(x).flatten(2).transpose(1, 2) + self.position
        x = self.final(self.blocks(x))
        return self.head(self.dropout(x.mean(dim=1)))
