"""What a landing folder holds: batch files (tables), and image batches (folders).

``--data`` names one batch or a landing folder of them:

- a table file (CSV/Parquet): one batch of rows; with ``data.image_column``,
  a table naming image files;
- a folder with image files directly in it: one unlabelled image batch (the
  ground truth has not arrived);
- a folder whose subfolders hold images and are all classes the model knows
  (``classes``, from the reference): one labelled batch in the class layout
  (``root/<label>/<file>``, as `normlab run --data` reads);
- any other folder is a landing folder: each table file in it is a batch, and
  so is each subfolder holding images: directly (unlabelled) or in class
  subfolders (labelled).

So a scheduled monitor pointed at ``landing/`` sees ``landing/2026-12-01/``
(flat, unlabelled) and ``landing/2026-12-01-labelled/<class>/`` as two
batches, each processed once. In a landing folder, names starting with ``.``
or ``_`` are skipped (upload as ``_part``, rename when done) and batches are
taken oldest first (modification time, then name). Symbolic links to files
are listed as they are (never followed), for `normlab.monitoring.open_batch`
to refuse; links to folders are not batches.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from normlab.errors import DataSourceError
from normlab.images.scan import holds_images

BATCH_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
ImageLayout = Literal["flat", "labelled"]


def discover_batches(data: str | Path, classes: Sequence[str] | None = None) -> list[str]:
    """The batches at ``data``: the file or image folder itself, or a landing folder's batches.

    ``classes`` are the model's classes (the reference's label encoder): a
    folder whose image subfolders are all named by them is one labelled batch.

    Raises:
        DataSourceError: ``data`` does not exist, is a file of another type,
            or is a symbolic link to a file.
    """
    path = Path(data).expanduser()
    if path.is_symlink() and not path.is_dir():
        raise DataSourceError(f"--data {str(path)!r} is a symbolic link; normlab does not follow links to batch "
                              "files: give the file itself or a landing folder")
    if not path.exists():
        raise DataSourceError(f"--data {str(path)!r} does not exist; give a batch file or a landing folder")
    if path.is_file():
        if not path.name.lower().endswith(BATCH_SUFFIXES):
            raise DataSourceError(f"--data {str(path)!r}: batch files end with {', '.join(BATCH_SUFFIXES)}")
        return [str(path.resolve())]
    folder = path.resolve()
    if holds_images(folder) or _is_labelled_batch(folder, classes):
        return [str(folder)]
    found = []
    for p in folder.iterdir():
        if p.name.startswith((".", "_")):
            continue
        if (p.is_symlink() or p.is_file()) and p.name.lower().endswith(BATCH_SUFFIXES):
            found.append(p)
        elif p.is_dir() and not p.is_symlink() and image_layout(p) is not None:
            found.append(p)
    found.sort(key=lambda p: (p.lstat().st_mtime_ns, p.name))
    return [str(p) for p in found]


def image_layout(folder: str | Path) -> ImageLayout | None:
    """``flat`` (images directly in ``folder``), ``labelled`` (images in its subfolders) or None (neither)."""
    folder = Path(folder)
    if holds_images(folder):
        return "flat"
    if any(d.is_dir() and not d.is_symlink() and holds_images(d) for d in _visible(folder)):
        return "labelled"
    return None


def folder_identity(folder: str | Path) -> tuple[int, int]:
    """(total bytes, newest modification time in ns) of every file and folder below ``folder``.

    What a monitor compares to tell whether an image batch changed or is still
    being written: adding, removing, replacing or rewriting a file changes it.
    """
    size, newest = 0, os.lstat(folder).st_mtime_ns
    for root, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            st = os.lstat(os.path.join(root, name))
            newest = max(newest, st.st_mtime_ns)
            if stat.S_ISREG(st.st_mode):
                size += st.st_size
    return size, newest


def _is_labelled_batch(folder: Path, classes: Sequence[str] | None) -> bool:
    if not classes:
        return False
    named = {str(c) for c in classes}
    with_images = [d.name for d in _visible(folder) if d.is_dir() and not d.is_symlink() and holds_images(d)]
    return bool(with_images) and all(name in named for name in with_images)


def _visible(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if not p.name.startswith((".", "_"))]
    except OSError:
        return []
