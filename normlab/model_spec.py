"""What rebuilds a trained network: the model family, its sizes and its norm (a run's ``model.json``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
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

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ModelSpec:
        """The spec ``model.json`` holds (lists become tuples); `ValueError` for missing or unknown keys."""
        names = {f.name for f in fields(cls)}
        if set(data) != names:
            missing, unknown = sorted(names - set(data)), sorted(set(data) - names)
            raise ValueError(f"model spec: missing keys {missing}, unknown keys {unknown}")
        shape = data["image_shape"]
        return cls(
            family=str(data["family"]), in_features=int(data["in_features"]), num_classes=int(data["num_classes"]),
            norm=str(data["norm"]), image_shape=tuple(shape) if shape is not None else None,
            hidden=tuple(data["hidden"]), channels=tuple(data["channels"]), groups=int(data["groups"]),
            dropout=float(data["dropout"]),
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
                           groups=self.groups, dropout=self.dropout)
