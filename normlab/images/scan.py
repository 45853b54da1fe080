"""Find the images of a batch: a folder in class subfolders, or a table naming image files.

A scan reads every file once: its bytes (hashed with sha256), then Pillow's
full decode (a truncated file fails here, not in the middle of training). It
writes nothing and moves nothing. What it finds is one row per file in
`Manifest.entries`, fine or not, so that the gate can quarantine a bad file
by its path with the reason (`normlab.gate.check_registry`'s image checks).

The layout is ImageFolder's: ``root/<label>/<file>.png|jpg|jpeg``. A file in
the root itself, one nested below a class folder, or one that is not an image
by its suffix, is outside the layout (the ``outside`` column says how). A
class folder that holds no image is listed in `Manifest.empty_classes`.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from normlab.errors import DataSourceError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
# The manifest's own columns; a table naming image files may not use these names for its other columns.
IMAGE = "image"  # the file's path: relative to the root (a folder) or as the table wrote it
MANIFEST_COLUMNS: tuple[str, ...] = (IMAGE, "sha256", "bytes", "width", "height", "mode", "outside", "error")
# Files read and decoded at once: Pillow and hashlib release the GIL.
_THREADS = max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class Manifest:
    """What a scan found.

    Attributes:
        root: The folder the paths in ``entries`` are relative to.
        entries: One row per file: ``image`` (path), the label column, ``sha256``,
            ``bytes``, ``width``, ``height``, ``mode`` (0 and "" when unknown),
            ``outside`` (why the file is outside the layout, else "") and
            ``error`` (why Pillow could not decode it, else ""); a table's
            other columns follow.
        label: The label column's name (``data.label``).
        empty_classes: Class folders that hold no image file.
    """

    root: Path
    entries: pd.DataFrame
    label: str
    empty_classes: tuple[str, ...] = ()

    def fingerprint(self) -> str:
        """sha256 over every file's content hash and label, in sorted order.

        Moving or renaming the root, or renaming a file within its class, keeps
        the fingerprint; changing a byte or a label changes it.
        """
        return image_fingerprint(self.entries, self.label, self.empty_classes)


def image_fingerprint(entries: pd.DataFrame, label: str, empty_classes: Iterable[str] = ()) -> str:
    """The fingerprint of image entries (see `Manifest.fingerprint`)."""
    pairs = zip(entries[label].astype(str), entries["sha256"].astype(str), strict=True)
    lines = sorted(f"{lab}\t{digest}" for lab, digest in pairs)
    lines += sorted(f"{name}\t<empty class>" for name in empty_classes)
    digest = hashlib.sha256(b"normlab-images-v1\n")
    for line in lines:
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()


def is_image_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder (the image layout; a table is a file)."""
    return Path(path).expanduser().is_dir()


def scan_folder(root: str | Path, *, label: str = "label", flat: bool = False) -> Manifest:
    """Every file below ``root``, read and decoded once, as a `Manifest`.

    ``flat`` reads an unlabelled batch (what a monitor sees before the ground
    truth arrives): the images are directly in ``root``, their label is
    missing, and a file in a subfolder is outside that layout.

    Raises:
        DataSourceError: ``root`` is missing, not a folder, or holds no file at all.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataSourceError(f"image folder {str(root)!r} does not exist; check the path in the config or --data")
    if not root.is_dir():
        raise DataSourceError(f"{str(root)!r} is not a folder of images")
    found: list[tuple[str, str, str]] = []  # (relative path, label, outside reason)
    classes: list[str] = []
    with_images: set[str] = set()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        rel_folder = PurePosixPath(Path(folder).relative_to(root).as_posix())
        depth = 0 if str(rel_folder) == "." else len(rel_folder.parts)
        if depth == 1:
            classes.append(rel_folder.parts[0])
        for name in sorted(files):
            rel = (rel_folder / name).as_posix() if depth else name
            if flat:
                found.append(_flat_entry(rel, depth, name))
            elif depth == 0:
                found.append((rel, "", "outside the layout: directly in the root, not in a class folder"))
            elif depth > 1:
                found.append((rel, rel_folder.parts[0], "outside the layout: nested below the class folder"))
            elif not name.lower().endswith(IMAGE_SUFFIXES):
                found.append((rel, rel_folder.parts[0],
                              f"not an image file by its name (allowed: {', '.join(IMAGE_SUFFIXES)})"))
            else:
                found.append((rel, rel_folder.parts[0], ""))
                with_images.add(rel_folder.parts[0])
    if not found:
        raise DataSourceError(f"image folder {str(root)!r} holds no files; put images in root/<label>/ folders")
    entries = _read_all(root, [(rel, lab, why) for rel, lab, why in found], label)
    if flat:
        entries[label] = None  # no ground truth yet
        return Manifest(root=root, entries=entries, label=label)
    empty = tuple(c for c in classes if c not in with_images)
    return Manifest(root=root, entries=entries, label=label, empty_classes=empty)


def _flat_entry(rel: str, depth: int, name: str) -> tuple[str, str, str]:
    """(path, label, outside reason) of a file in an unlabelled batch: images belong directly in the root."""
    if depth:
        return rel, "", "outside the layout: in a subfolder of an unlabelled batch (its images sit in the root)"
    if not name.lower().endswith(IMAGE_SUFFIXES):
        return rel, "", f"not an image file by its name (allowed: {', '.join(IMAGE_SUFFIXES)})"
    return rel, "", ""


def holds_images(folder: str | Path) -> bool:
    """Whether image files (by suffix) sit directly in ``folder`` (hidden and ``_`` names aside)."""
    try:
        return any(e.is_file() and not e.name.startswith((".", "_")) and e.name.lower().endswith(IMAGE_SUFFIXES)
                   for e in os.scandir(folder))
    except OSError:
        return False


def scan_table(table: pd.DataFrame, table_path: str | Path, *, column: str, label: str) -> Manifest:
    """The files a table names (``column``, relative to the table's folder or absolute), read and decoded once.

    The table's other columns are kept, beside the manifest's.

    Raises:
        DataSourceError: ``column`` is missing, or another column has a manifest column's name.
    """
    table_path = Path(table_path).expanduser().resolve()
    if column not in table.columns:
        raise DataSourceError(
            f"{str(table_path)!r}: image column {column!r} (data.image_column) not found; "
            f"columns: {', '.join(map(str, table.columns[:20]))}"
        )
    clashing = [c for c in MANIFEST_COLUMNS if c in table.columns and c != column]
    if clashing:
        raise DataSourceError(
            f"{str(table_path)!r}: column {clashing[0]!r} has the name of a column normlab adds to image data "
            f"({', '.join(MANIFEST_COLUMNS)}); rename it"
        )
    root = table_path.parent
    paths = table[column]
    found = []
    for value in paths:
        if not isinstance(value, str) or not value.strip():
            found.append((str(value), "", "no file named: the image column is empty in this row"))
        elif not value.lower().endswith(IMAGE_SUFFIXES):
            found.append((value, "", f"not an image file by its name (allowed: {', '.join(IMAGE_SUFFIXES)})"))
        else:
            found.append((value, "", ""))
    entries = _read_all(root, found, label)
    entries = entries.drop(columns=[label])
    rest = table.drop(columns=[column]).reset_index(drop=True)
    if label not in rest.columns:
        raise DataSourceError(
            f"{str(table_path)!r}: label column {label!r} not found; columns: {', '.join(map(str, table.columns[:20]))}"
        )
    lab = rest.pop(label)
    entries.insert(1, label, lab)
    return Manifest(root=root, entries=pd.concat([entries, rest], axis=1), label=label)


def _read_all(root: Path, found: list[tuple[str, str, str]], label: str) -> pd.DataFrame:
    """One manifest row per (relative path, label, outside reason); files in the layout are read and decoded."""
    with ThreadPoolExecutor(_THREADS) as pool:
        facts = list(pool.map(lambda item: _read_one(root, item[0]) if not item[2] else _hash_only(root, item[0]),
                              found))
    return pd.DataFrame({
        IMAGE: [rel for rel, _, _ in found],
        label: [lab for _, lab, _ in found],
        "sha256": [f[0] for f in facts],
        "bytes": pd.array([f[1] for f in facts], dtype="int64"),
        "width": pd.array([f[2] for f in facts], dtype="int64"),
        "height": pd.array([f[3] for f in facts], dtype="int64"),
        "mode": [f[4] for f in facts],
        "outside": [why for _, _, why in found],
        "error": [f[5] for f in facts],
    })


def _hash_only(root: Path, rel: str) -> tuple[str, int, int, int, str, str]:
    """The content hash of a file outside the layout (it is not decoded)."""
    try:
        data = (root / rel).read_bytes()
    except OSError as exc:
        return "", 0, 0, 0, "", f"cannot be read ({_one_line(exc)})"
    return hashlib.sha256(data).hexdigest(), len(data), 0, 0, "", ""


def _read_one(root: Path, rel: str) -> tuple[str, int, int, int, str, str]:
    """(sha256, bytes, width, height, mode, error) of one image file, decoded in full."""
    from PIL import Image, UnidentifiedImageError

    path = Path(rel) if Path(rel).is_absolute() else root / rel
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "", 0, 0, 0, "", "no such file"
    except OSError as exc:
        return "", 0, 0, 0, "", f"cannot be read ({_one_line(exc)})"
    digest = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            # A decompression-bomb warning is an error here: such a file is refused, not half-read.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height, mode = image.width, image.height, image.mode
                image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:
        return digest, len(data), 0, 0, "", f"Pillow cannot decode it ({_one_line(exc)})"
    return digest, len(data), int(width), int(height), str(mode), ""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
