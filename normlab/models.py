"""Model families whose normalization layer is a constructor argument.

Every model takes a flat float tensor ``(N, F)`` and returns logits
``(N, num_classes)``, so one serving wrapper (e.g. a pyfunc on a DataFrame) fits all
families. The norm is resolved once in ``__init__`` through
:func:`normlab.norms.get_norm_layer`, and each Linear/Conv is immediately followed by
its norm so a BatchNorm can be folded into it for inference. ``forward`` has no
Python branching on tensor values or shapes, so the models stay ``torch.fx``
traceable (``torch.fx.experimental.optimization.fuse`` relies on that).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from normlab.norms import NormSpec, get_norm_layer
from normlab.resnet import ResNet
from normlab.vit import ViT

MODEL_FAMILIES: tuple[str, ...] = ("mlp", "cnn", "resnet", "vit")
# The families that read their flat input as images (they need image_shape).
IMAGE_FAMILIES: tuple[str, ...] = ("cnn", "resnet", "vit")



class MLP(nn.Module):
    """Multi-layer perceptron with blocks ``Linear -> norm -> ReLU [-> Dropout]``.

    Args:
        in_features: Width F of the flat input.
        num_classes: Number of output logits.
        hidden: Width of each hidden block.
        norm: Norm name or factory, see :func:`normlab.norms.get_norm_layer`.
        groups: Upper bound on the number of groups for ``group``.
        dropout: Dropout probability after each ReLU (0 disables it).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        hidden: Sequence[int] = (128, 128),
        norm: NormSpec = "batch",
        groups: int = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        width = in_features
        for out in hidden:
            layers: list[nn.Module] = [
                nn.Linear(width, out),
                get_norm_layer(norm, out, spatial=False, groups=groups),
                nn.ReLU(),
            ]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            self.blocks.append(nn.Sequential(*layers))
            width = out
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, in_features)`` to logits ``(N, num_classes)``."""
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class CNN(nn.Module):
    """Small CNN on flat images: ``Conv3x3 -> norm -> ReLU [-> MaxPool2d(2)]`` blocks.

    A block is followed by a 2x2 max-pool while its spatial size is >= 4 (8x8 inputs:
    8 -> 4 -> 2), then global average pooling and a Linear head.

    Args:
        image_shape: ``(H, W)`` of each image.
        num_classes: Number of output logits.
        channels: Output channels of each conv block.
        norm: Norm name or factory, see :func:`normlab.norms.get_norm_layer`.
        groups: Upper bound on the number of groups for ``group``.
        dropout: Dropout probability before the head (0 disables it).
        in_channels: Channels of the input; the flat input has
            ``in_channels * H * W`` features in ``(C, H, W)`` order.
    """

    def __init__(
        self,
        image_shape: tuple[int, int],
        num_classes: int,
        *,
        channels: Sequence[int] = (16, 32),
        norm: NormSpec = "batch",
        groups: int = 8,
        dropout: float = 0.0,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        height, width = image_shape
        if height < 1 or width < 1 or in_channels < 1:
            raise ValueError(f"image_shape and in_channels must be positive, got {image_shape}, {in_channels}")
        self.image_shape = (height, width)
        self.in_channels = in_channels
        self.blocks = nn.ModuleList()
        prev = in_channels
        for out in channels:
            layers: list[nn.Module] = [
                nn.Conv2d(prev, out, kernel_size=3, padding=1),
                get_norm_layer(norm, out, spatial=True, groups=groups),
                nn.ReLU(),
            ]
            # Padding keeps the size, so pool while there is still a 2x2 map left after it.
            if min(height, width) >= 4:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            self.blocks.append(nn.Sequential(*layers))
            prev = out
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, in_channels * H * W)`` to logits ``(N, num_classes)``."""
        x = x.reshape(x.size(0), self.in_channels, *self.image_shape)
        for block in self.blocks:
            x = block(x)
        x = torch.flatten(self.pool(x), 1)
        return self.head(self.dropout(x))


def build_model(
    family: str,
    *,
    in_features: int,
    num_classes: int,
    norm: NormSpec,
    image_shape: tuple[int, int] | None = None,
    hidden: Sequence[int] = (128, 128),
    channels: Sequence[int] = (16, 32),
    groups: int = 8,
    dropout: float = 0.0,
    in_channels: int = 1,
    blocks: int = 2,
    patch_size: int = 4,
    width: int = 64,
    depth: int = 2,
    heads: int = 4,
    mlp_ratio: int = 2,
    norm_position: str = "pre",
) -> nn.Module:
    """Build a model of ``family`` for flat inputs of width ``in_features``.

    Args:
        family: One of ``MODEL_FAMILIES``.
        in_features: Width F of the flat input.
        num_classes: Number of output logits.
        norm: Norm name or factory, see :func:`normlab.norms.get_norm_layer`.
        image_shape: ``(H, W)``; required for the image families (``cnn``, ``resnet``, ``vit``).
        hidden: MLP hidden widths.
        channels: CNN block channels; ResNet stage widths.
        groups: Upper bound on the number of groups for ``group``.
        dropout: Dropout probability.
        in_channels: Input channels of the image families.
        blocks: ResNet basic blocks per stage.
        patch_size, width, depth, heads, mlp_ratio, norm_position: the ViT's
            (see `normlab.vit.ViT`).

    Returns:
        The model, in training mode.

    Raises:
        ValueError: If the family is unknown or the image shape does not fit the input.
    """
    if family == "mlp":
        return MLP(in_features, num_classes, hidden=hidden, norm=norm, groups=groups, dropout=dropout)
    if family not in IMAGE_FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(MODEL_FAMILIES)}")
    if image_shape is None:
        raise ValueError(f"family {family!r} needs image_shape=(H, W)")
    height, wide = image_shape
    if in_features != in_channels * height * wide:
        raise ValueError(
            f"family {family!r}: in_features={in_features} != in_channels*H*W = "
            f"{in_channels}*{height}*{wide} = {in_channels * height * wide}"
        )
    if family == "cnn":
        return CNN((height, wide), num_classes, channels=channels, norm=norm, groups=groups, dropout=dropout,
                   in_channels=in_channels)
    if family == "resnet":
        return ResNet((height, wide), num_classes, channels=channels, blocks=blocks, norm=norm, groups=groups,
                      dropout=dropout, in_channels=in_channels)
    if family == "vit":
        return ViT((height, wide), num_classes, patch_size=patch_size, width=width, depth=depth, heads=heads,
                   mlp_ratio=mlp_ratio, norm=norm, norm_position=norm_position, groups=groups, dropout=dropout,
                   in_channels=in_channels)
    raise ValueError(f"unknown model family {family!r}; known: {', '.join(MODEL_FAMILIES)}")
