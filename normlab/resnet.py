"""A residual CNN (basic blocks) whose normalization layer follows every convolution.

Layout, after He et al. (2016), sized for small images: a 3x3 stem convolution,
then one stage per entry of ``channels`` with ``blocks`` basic blocks each
(``conv3x3 -> norm -> ReLU -> conv3x3 -> norm``, plus the shortcut, then ReLU);
every stage after the first halves the spatial size with a stride-2 first
block, whose shortcut is ``conv1x1 -> norm``. Global average pooling and a
Linear head follow. Each convolution is directly followed by its norm, so a
BatchNorm folds into it exactly (`normlab.inference`), and ``forward`` has no
branching on values, so the model stays ``torch.fx`` traceable.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from normlab.norms import NormSpec, get_norm_layer


class BasicBlock(nn.Module):
    """``conv3x3 -> norm -> ReLU -> conv3x3 -> norm``, added to the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, norm: NormSpec, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.norm1 = get_norm_layer(norm, out_channels, spatial=True, groups=groups)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm2 = get_norm_layer(norm, out_channels, spatial=True, groups=groups)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                get_norm_layer(norm, out_channels, spatial=True, groups=groups),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Residual CNN on flat images.

    Args:
        image_shape: ``(H, W)`` of each image.
        num_classes: Number of output logits.
        channels: Width of each stage (the stem has the first stage's width).
        blocks: Basic blocks per stage.
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
        blocks: int = 2,
        norm: NormSpec = "batch",
        groups: int = 8,
        dropout: float = 0.0,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        height, width = image_shape
        if height < 1 or width < 1 or in_channels < 1 or blocks < 1 or not channels:
            raise ValueError(f"resnet: image_shape, in_channels, blocks and channels must be positive, got "
                             f"{image_shape}, {in_channels}, {blocks}, {list(channels)}")
        self.image_shape = (height, width)
        self.in_channels = in_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], kernel_size=3, padding=1, bias=False),
            get_norm_layer(norm, channels[0], spatial=True, groups=groups),
            nn.ReLU(),
        )
        stages: list[nn.Module] = []
        prev = channels[0]
        for index, out in enumerate(channels):
            stride = 1 if index == 0 else 2
            stage = [BasicBlock(prev, out, stride=stride, norm=norm, groups=groups)]
            stage += [BasicBlock(out, out, stride=1, norm=norm, groups=groups) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            prev = out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, in_channels * H * W)`` to logits ``(N, num_classes)``."""
        x = x.reshape(x.size(0), self.in_channels, *self.image_shape)
        x = self.stages(self.stem(x))
        x = torch.flatten(self.pool(x), 1)
        return self.head(self.dropout(x))
