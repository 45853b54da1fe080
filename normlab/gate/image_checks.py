"""The gate's checks of image files, over a batch's manifest (`normlab.images.scan.Manifest.entries`).

Each returns the `Evaluated` of one check: the rows (files) it singles out,
and what it observed. `normlab.gate.check_registry` registers them; their
rows reach the quarantine with the file's path and the scan's own finding
(``outside``, ``error``) beside the check's reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from normlab.data.fingerprint import row_hashes
from normlab.data.parquet_chunks import chunk_rows
from normlab.gate.checks import _check, content_hashes, skipped
from normlab.gate.results import Evaluated
from normlab.images.decode import choose_mode, pixel_columns, pixel_frame


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


def check_contamination(
    entries: pd.DataFrame,
    index: pd.DataFrame | None,
    *,
    root: Path,
    label: str,
    salt: str,
    image_shape: tuple[int, int] | None,
    mode: str | None,
    features: Sequence[str] | None = None,
    budget_mb: float = 1024.0,
) -> Evaluated:
    """Images whose pixels already sit in an evaluation split of an earlier run.

    An image run's evaluation index (`normlab.gate.split_audit`) holds the
    hashes of the rows its split saw: decoded pixel rows, not files. So each
    file the scan decoded is decoded here as the accepted files will be (one
    mode, resized to ``image_shape``) and hashed like those rows: a copy under
    another name, in another class or re-encoded without loss (other bytes,
    the same pixels) is found. An image whose whole row (pixels, label and a
    table's other columns) is an indexed evaluation row under the same split
    salt is not contamination: the split puts it back into the evaluation
    split it came from.

    Args:
        entries: The manifest rows this stage sees.
        index: Earlier runs' evaluation rows (``feature_hash``, ``row_hash``,
            ``salt``), or None when no run has recorded any.
        root: The folder the entries' paths are relative to.
        label: The label column.
        salt: The split salt of this run.
        image_shape: ``data.image_shape``, (H, W).
        mode: ``data.image_mode``; None: RGB when any of the entries has
            colour, as the accepted files are decoded.
        features: ``data.features``; None: the pixel columns (what image runs train on).
        budget_mb: ``data.memory_budget_mb``: the files are decoded a chunk of them at a time.
    """
    if index is None or index.empty:
        return skipped("contamination", "no evaluation rows recorded yet")
    if image_shape is None:
        return skipped("contamination", "data.image_shape is not set: the files cannot be decoded as training reads them")
    chosen = choose_mode(entries["mode"], mode)
    names = pixel_columns(1 if chosen == "L" else 3, image_shape)
    # The files the scan decoded; the others (outside the layout, unreadable) have no pixels to compare.
    decoded = np.flatnonzero((entries["error"].astype(str).eq("") & entries["mode"].astype(str).ne("")).to_numpy())
    indexed = index["feature_hash"].to_numpy(dtype=np.uint64)
    same_salt = index.loc[index["salt"] == salt, "row_hash"].to_numpy(dtype=np.uint64)
    flagged: list[np.ndarray] = []
    step = chunk_rows(budget_mb, 4 * len(names))
    for start in range(0, decoded.size, step):
        at = decoded[start : start + step]
        pixels, _ = pixel_frame(entries.iloc[at], root, label=label, image_shape=image_shape, mode=chosen)
        present = [c for c in (features or names) if c in pixels.columns]
        seen = np.flatnonzero(np.isin(content_hashes(pixels, present), indexed))
        if seen.size:
            own = np.isin(row_hashes(pixels.iloc[seen], salt=salt), same_salt)
            flagged.append(at[seen[~own]])
    rows = np.concatenate(flagged).astype(np.int64) if flagged else np.zeros(0, dtype=np.int64)
    return _check("contamination", rows.size == 0, scope="rows", rows=rows, observed=int(rows.size),
                  details={"indexed_rows": len(index), "files": _examples(entries["image"], rows)})


def check_empty_classes(empty: Sequence[str]) -> Evaluated:
    """Class folders with no image file (nothing to quarantine: the batch is reported or blocked)."""
    return _check("empty_class", not empty, scope="table", observed=list(empty))
