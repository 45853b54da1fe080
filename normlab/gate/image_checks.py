"""The gate's checks of image files, over a batch's manifest (`normlab.images.scan.Manifest.entries`).

Each returns the `Evaluated` of one check: the rows (files) it singles out,
and what it observed. `normlab.gate.check_registry` registers them; their
rows reach the quarantine with the file's path and the scan's own finding
(``outside``, ``error``) beside the check's reason.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from normlab.gate.checks import _check
from normlab.gate.results import Evaluated


def _flagged(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask).astype(np.int64)


def _examples(paths: pd.Series, rows: np.ndarray, limit: int = 5) -> list[str]:
    return [str(p) for p in paths.iloc[rows[:limit]]]


def check_layout(entries: pd.DataFrame) -> Evaluated:
    """Files outside the class layout or not images by their names (the scan's ``outside`` finding)."""
    rows = _flagged(entries["outside"].astype(str).ne("").to_numpy())
    return _check("image_layout", rows.size == 0, scope="rows", rows=rows, observed=int(rows.size),
                  details={"files": _examples(entries["image"], rows)})


def check_readable(entries: pd.DataFrame) -> Evaluated:
    """Files Pillow could not open or decode in full (the scan's ``error`` finding)."""
    rows = _flagged(entries["error"].astype(str).ne("").to_numpy())
    return _check("image_readable", rows.size == 0, scope="rows", rows=rows, observed=int(rows.size),
                  details={"files": _examples(entries["image"], rows)})


def check_mode(entries: pd.DataFrame, *, allowed: Sequence[str]) -> Evaluated:
    """Images whose Pillow mode is not ``allowed``."""
    modes = entries["mode"].astype(str)
    rows = _flagged(~modes.isin(list(allowed)).to_numpy())
    found = sorted(set(modes.iloc[rows]))
    return _check("image_mode", rows.size == 0, scope="rows", rows=rows, observed=found,
                  details={"allowed": list(allowed), "files": _examples(entries["image"], rows)})


def check_size(entries: pd.DataFrame, *, min_side: int, max_side: int) -> Evaluated:
    """Images with a side below ``min_side`` or above ``max_side`` pixels, before resizing."""
    width = entries["width"].to_numpy(np.int64)
    height = entries["height"].to_numpy(np.int64)
    short, long = np.minimum(width, height), np.maximum(width, height)
    rows = _flagged((short < min_side) | (long > max_side))
    sizes = sorted({f"{w}x{h}" for w, h in zip(width[rows], height[rows], strict=True)})
    return _check("image_size", rows.size == 0, scope="rows", rows=rows, observed=sizes[:10],
                  details={"min_side": min_side, "max_side": max_side, "files": _examples(entries["image"], rows)})


def check_duplicates(entries: pd.DataFrame) -> Evaluated:
    """Images whose bytes equal an earlier image's (by sha256), whatever their names and labels; the first stays."""
    rows = _flagged(entries["sha256"].duplicated(keep="first").to_numpy())
    firsts = entries.drop_duplicates("sha256").set_index("sha256")["image"]
    pairs = [f"{entries['image'].iloc[r]} = {firsts[entries['sha256'].iloc[r]]}" for r in rows[:5]]
    return _check("image_duplicates", rows.size == 0, scope="rows", rows=rows, observed=int(rows.size),
                  details={"copies": pairs})


def check_empty_classes(empty: Sequence[str]) -> Evaluated:
    """Class folders with no image file (nothing to quarantine: the batch is reported or blocked)."""
    return _check("empty_class", not empty, scope="table", observed=list(empty))
