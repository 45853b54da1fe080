"""Image batches in monitoring: opening one (scan, fingerprint, claim), and the pixels drift is measured on.

An image batch is a folder (`normlab.monitoring.landing`) or a table naming
image files (``data.image_column``). Opening it scans every file once, as a
training run does (`normlab.images.scan`): its snapshot (``batch.parquet``)
is the manifest, one row per file with its path, hash, size, mode and
findings; its fingerprint covers every file's bytes and label, so a batch
copied or renamed elsewhere is recognised as processed. The files are never
moved or changed. A folder is read once its files stood still for
`normlab.monitoring.ledger.SETTLE_S` seconds (total size and newest
modification time, `normlab.monitoring.landing.folder_identity`), and only if
they did not change while it was scanned.

After the gate, every file that decodes (quarantined ones too: a file of an
unexpected size or mode is the drift) is decoded as the model reads its
inputs, into ``typed.parquet``: pixel rows in the model's mode at
``data.image_shape``. The drift analysis compares per-image statistics of
those rows (`normlab.images.stats`) with the reference's.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pandas as pd

from normlab.config import DataConfig
from normlab.contracts import ImageSource
from normlab.data.sources import read_table
from normlab.errors import DataSourceError
from normlab.images.decode import pixel_columns, pixel_frame
from normlab.images.scan import scan_folder, scan_table
from normlab.monitoring.contracts import LandedBatch
from normlab.monitoring.landing import folder_identity, image_layout
from normlab.monitoring.ledger import (
    SETTLE_S,
    _arrow_table,
    _not_opened,
    _one_line,
    claim_batch,
    open_batch,
    record_unread,
    write_snapshot,
)


def open_image_batch(workdir: Path, model: str, path: str, data: DataConfig) -> LandedBatch:
    """Scan, fingerprint and claim an image batch for ``model``, or say why it is not processed now.

    ``data`` says how the files are read: ``label``, ``image_column`` (a
    table naming files) and ``image_shape`` (without it an image batch cannot
    be read: recorded as unreadable, with the reason).

    Returns:
        The `LandedBatch`: claimed, with its manifest snapshot and ``images``,
        or skipped, pending, unreadable or refused with the ``reason``.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return _not_opened("skipped", path, "no longer there: moved or deleted after it was listed")
    if stat.S_ISLNK(st.st_mode):
        return record_unread(workdir, path, (st.st_size, st.st_mtime_ns), "refused",
                             f"refused: {Path(path).name} is a symbolic link; only regular files and folders "
                             "in the landing folder are read, never what a link points to")
    before = _identity(path, st)
    if not _settled(path, st, before):
        return _not_opened("pending", path, f"not yet stable: still being written (changed within {SETTLE_S:g} s); "
                                            "left for the next run")
    try:
        manifest = _scan(path, data)
        fingerprint = manifest.fingerprint()
        table = _arrow_table(manifest.entries)
        failure = None
    except Exception as exc:  # noqa: BLE001 - one batch's failure, whatever it is, is recorded for that batch only
        failure = exc
    after = _identity_or_none(path)
    if after != before:
        return _not_opened("pending", path, "not yet stable: it changed while it was read; left for the next run")
    if failure is not None:
        return record_unread(workdir, path, before, "unreadable", f"unreadable, left in place: {_one_line(failure)}")
    opened = claim_batch(workdir, model, path, before, fingerprint, fingerprint, len(manifest.entries))
    if opened.skip:
        return opened
    images = ImageSource(root=str(manifest.root.resolve()), empty_classes=list(manifest.empty_classes))
    opened = opened.model_copy(update={"columns": [str(c) for c in manifest.entries.columns], "images": images})
    return write_snapshot(workdir, opened, table)


def open_landed_batch(workdir: Path, model: str, path: str, data: DataConfig) -> LandedBatch:
    """Open the batch at ``path``: image files (`open_image_batch`) or a table of rows (`open_batch`)."""
    if is_image_batch(data, path):
        return open_image_batch(workdir, model, path, data)
    return open_batch(workdir, model, path)


def is_image_batch(data: DataConfig, path: str) -> bool:
    """Whether the batch at ``path`` is image files: a folder, or a table when ``data.image_column`` is set."""
    p = Path(path)
    return (p.is_dir() and not p.is_symlink()) or data.image_column is not None


def typed_pixels(entries: pd.DataFrame, root: str, out_dir: Path, *, label: str, image_shape: tuple[int, int],
                 mode: str) -> tuple[Path, int]:
    """Decode every file of the manifest ``entries`` that decodes into pixel rows (``typed.parquet``).

    Files outside the layout or that Pillow cannot read have no pixels and are
    left out (the gate counts them); every other file is decoded in the
    model's ``mode`` at ``image_shape``, whatever the gate decided about it.

    Returns:
        The file written and its number of rows.
    """
    readable = entries[(entries["outside"].astype(str) == "") & (entries["error"].astype(str) == "")]
    if len(readable):
        frame, _ = pixel_frame(readable.reset_index(drop=True), Path(root), label=label, image_shape=image_shape,
                               mode=mode)
    else:
        channels = 1 if mode == "L" else 3
        frame = pd.DataFrame(columns=[*pixel_columns(channels, image_shape), label])
    path = out_dir / "typed.parquet"
    frame.to_parquet(path, index=False)
    return path, len(frame)


def _scan(path: str, data: DataConfig):
    if data.image_shape is None:
        raise DataSourceError(f"{Path(path).name} holds image files: set data.image_shape, the (H, W) the model "
                              "reads them at")
    if Path(path).is_dir():
        return scan_folder(path, label=data.label, flat=image_layout(path) == "flat")
    table = read_table(path)
    if data.label not in table.columns:
        table = table.assign(**{data.label: None})  # unlabelled: the ground truth has not arrived
    return scan_table(table, Path(path), column=str(data.image_column), label=data.label)


def _identity(path: str, st: os.stat_result) -> tuple[int, int]:
    return folder_identity(path) if stat.S_ISDIR(st.st_mode) else (st.st_size, st.st_mtime_ns)


def _identity_or_none(path: str) -> tuple[int, int] | None:
    try:
        return _identity(path, os.lstat(path))
    except FileNotFoundError:
        return None


def _settled(path: str, st: os.stat_result, before: tuple[int, int]) -> bool:
    """True when nothing below ``path`` changed for `SETTLE_S` seconds (waiting, at most that long)."""
    age = time.time() - before[1] / 1e9
    if age >= SETTLE_S:
        return True
    time.sleep(SETTLE_S - max(age, 0.0))
    return _identity_or_none(path) == before
