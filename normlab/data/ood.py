"""OOD split kinds: one config ``kind`` -> how the split stage builds that split.

A kind plays one of two roles:

- `SelectRows` (``column``, ``quantile``, ``time``): its split is rows of the batch,
  picked by a boolean mask over the batch. Those rows are held out of the ID
  splits entirely and scored as they are.
- `DeriveFromTest` (``corruption``): its splits are transformed copies of the ID
  test split's feature matrix (same rows, same labels), one per leaf, so the
  bootstrap resamples them together with ``id/test``.

``corruption_suite`` is no kind of its own here: `normlab.config` expands it into
``corruption`` entries when the config is loaded (`CONFIG_EXPANSIONS`).

Adding a kind: its config class in the ``OODSplit`` union of normlab/config/sections.py (with
``kind: Literal["<name>"]``), a builder below and one `OOD_KINDS` entry;
tests/unit/test_data_ood.py fails while the union's kinds and the registry differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from normlab.data.shifts import CHANNELS, corrupt_images
from normlab.data.splits import ood_mask_column, ood_mask_quantile, ood_mask_time
from normlab.errors import ConfigError

if TYPE_CHECKING:
    from normlab.config import ColumnSplit, CorruptionSplit, QuantileSplit, TimeSplit


@dataclass(frozen=True)
class Selection:
    """The rows a row-selecting split takes: a mask over the batch, and the threshold it used (if any)."""

    mask: np.ndarray
    threshold: float | None = None


@dataclass(frozen=True)
class SelectRows:
    """A kind whose split is rows of the batch: ``select(frame, split) -> Selection``."""

    select: Callable[[pd.DataFrame, Any], Selection]


@dataclass(frozen=True)
class DeriveFromTest:
    """A kind whose splits are copies of the ID test features.

    ``derive(raw, split, *, image_shape, seed, value_range)`` gets the ID test
    split's raw features (float64, one row per test row; image rows are (C, H, W)
    flattened, C = 1 or 3) and the data settings
    (``value_range`` may be None: the builder picks its default), and yields
    ``(leaf name, features)`` per split it makes, lazily, in the entry's order.
    """

    derive: Callable[..., Iterator[tuple[str, np.ndarray]]]


OODKind = SelectRows | DeriveFromTest


def _select_column(frame: pd.DataFrame, split: ColumnSplit) -> Selection:
    return Selection(ood_mask_column(frame, split.column, split.values))


def _select_quantile(frame: pd.DataFrame, split: QuantileSplit) -> Selection:
    mask, threshold = ood_mask_quantile(frame, split.column, split.q, side=split.side)
    return Selection(mask, threshold)


def _select_time(frame: pd.DataFrame, split: TimeSplit) -> Selection:
    return Selection(ood_mask_time(frame, split.column, split.after))


def _derive_corruption(
    raw: np.ndarray,
    split: CorruptionSplit,
    *,
    image_shape: tuple[int, int],
    seed: int,
    value_range: tuple[float, float] | None,
) -> Iterator[tuple[str, np.ndarray]]:
    """One corrupted copy per severity of the entry; the pixel range defaults to the data's.

    The channel count (1 grayscale, 3 RGB) is the row length over H*W: rows are (C, H, W) images.
    """
    channels = _image_channels(raw, image_shape, split.name)
    lo, hi = value_range or (float(np.nanmin(raw)), float(np.nanmax(raw)))
    for leaf, level in split.leaves():
        yield leaf, corrupt_images(raw, image_shape, split.corruption, level, seed=seed, value_range=(lo, hi),
                                   channels=channels)


def _image_channels(raw: np.ndarray, image_shape: tuple[int, int], name: str) -> int:
    """C of (n, C*H*W) rows, or a ConfigError unless it is a whole 1 or 3."""
    height, width = (int(v) for v in image_shape)
    values = np.shape(raw)[1] if np.ndim(raw) == 2 else 0
    pixels = height * width
    if pixels < 1 or values % pixels or values // pixels not in CHANNELS:
        raise ConfigError(
            f"splits.ood '{name}': feature rows of {values} values are not 1 (grayscale) or 3 (RGB) channels "
            f"of data.image_shape {height}x{width} ({pixels} pixels); check data.image_shape and data.features"
        )
    return values // pixels


# Kind name -> builder, read-only. Every key is the ``kind`` Literal of one class of
# normlab.config's OODSplit union.
OOD_KINDS: Mapping[str, OODKind] = MappingProxyType({
    "column": SelectRows(_select_column),
    "quantile": SelectRows(_select_quantile),
    "time": SelectRows(_select_time),
    "corruption": DeriveFromTest(_derive_corruption),
})

# Kinds the config expands into registered kinds when it is loaded; the split stage never sees them.
CONFIG_EXPANSIONS: tuple[str, ...] = ("corruption_suite",)


def ood_kind(split: Any) -> OODKind:
    """The registered builder of ``split.kind``.

    Raises:
        ConfigError: The kind is not registered (or is an expansion the config did not expand).
    """
    kind = OOD_KINDS.get(split.kind)
    if kind is None:
        hint = " (expanded when the config is loaded; validate the config first)" if split.kind in CONFIG_EXPANSIONS else ""
        raise ConfigError(
            f"splits.ood '{getattr(split, 'name', split.kind)}': unknown kind {split.kind!r}{hint}; "
            f"known: {', '.join(OOD_KINDS)}"
        )
    return kind


def hold_out(kinds: list[tuple[Any, OODKind]], n_rows: int,
             frame_for: Callable[[Any], pd.DataFrame]) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, float]]:
    """The rows the row-selecting splits of ``kinds`` hold out of the ID splits, each split's mask, and thresholds.

    ``frame_for(split)`` gives the rows a split selects from (the batch, or
    only the column it names).

    Raises:
        ConfigError: A split selects no row.
    """
    held_out = np.zeros(n_rows, dtype=bool)
    masks: dict[str, np.ndarray] = {}
    thresholds: dict[str, float] = {}
    for split, kind in kinds:
        if not isinstance(kind, SelectRows):
            continue
        selection = kind.select(frame_for(split), split)
        if selection.threshold is not None:
            thresholds[split.name] = selection.threshold
        if not selection.mask.any():
            raise ConfigError(f"splits.ood '{split.name}': selects no rows of this batch")
        masks[split.name] = selection.mask
        held_out |= selection.mask
    return held_out, masks, thresholds
