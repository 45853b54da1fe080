"""What rebuilds a trained network: the model family, its sizes and its norm (a run's ``model.json``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ModelSpec:
    """What rebuilds a trained network: `build_model`'s arguments, as a run's ``model.json`` holds them.

    A plain dataclass without torch, config or pydantic: the stage contracts
    carry it, and the served model reads it.
    """

    family: str
    in_features: int
    num_classes: int
    norm: str
    image_shape: tuple[int, int] | None
    hidden: tuple[int, ...]
    channels: tuple[int, ...]
    groups: int
    dropout: float
    # The residual CNN's and the vision transformer's (defaults: a model.json written before they existed).
    blocks: int = 2
    patch_size: int = 4
    width: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: int = 2
    norm_position: str = "pre"
    in_channels: int = 1  # the image families' input channels: 1 (grayscale) or 3 (RGB)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ModelSpec:
        """The spec ``model.json`` holds (lists become tuples); `ValueError` for missing or unknown keys.

        Keys with a default may be missing (a spec written before they existed).
        """
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        missing, unknown = sorted(required - set(data)), sorted(set(data) - names)
        if missing or unknown:
            raise ValueError(f"model spec: missing keys {missing}, unknown keys {unknown}")
        shape = data["image_shape"]
        optional = {f.name: f.type for f in fields(cls) if f.default is not MISSING and f.name in data}
        return cls(
            family=str(data["family"]), in_features=int(data["in_features"]), num_classes=int(data["num_classes"]),
            norm=str(data["norm"]), image_shape=tuple(shape) if shape is not None else None,
            hidden=tuple(data["hidden"]), channels=tuple(data["channels"]), groups=int(data["groups"]),
            dropout=float(data["dropout"]),
            **{name: (str if kind == "str" else int)(data[name]) for name, kind in optional.items()},
        )

    @classmethod
    def read(cls, path: str | Path) -> ModelSpec:
        """The spec in a ``model.json`` file."""
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_json(self) -> dict[str, object]:
        """The spec as ``model.json`` holds it (tuples as lists)."""
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def build(self) -> torch.nn.Module:
        """The network, freshly initialised (see `normlab.models.build_model`)."""
        from normlab.models import build_model  # torch: imported when a network is built

        return build_model(self.family, in_features=self.in_features, num_classes=self.num_classes, norm=self.norm,
                           image_shape=self.image_shape, hidden=self.hidden, channels=self.channels,
                           groups=self.groups, dropout=self.dropout, blocks=self.blocks,
                           patch_size=self.patch_size, width=self.width, depth=self.depth, heads=self.heads,
                           mlp_ratio=self.mlp_ratio, norm_position=self.norm_position, in_channels=self.in_channels)
