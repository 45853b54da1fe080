"""Write image folders in the ImageFolder layout, clean or with one of each fault a reader meets.

The layout is ``root/<class_name>/<name>.<ext>``: the class is the name of the
folder an image sits in. `write_image_folder` writes arrays that way;
`write_faulty_folder` writes a small tree from `generate_shapes` plus one file
(or folder) per fault and returns a `FaultyFolder` that says where each one is,
so tests and benchmarks of an image reader need no download and no fixtures on
disk; `write_manifest` writes the (path, label) table of the fine files.
Everything is written with Pillow and is the same bytes for the same arguments.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path, PurePath

import numpy as np
import pandas as pd
from PIL import Image

from normlab.data.shapes import SHAPE_CLASSES, generate_shapes

# File suffix (lower case, no dot) -> Pillow format name.
IMAGE_FORMATS: Mapping[str, str] = {
    "png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "bmp": "BMP", "gif": "GIF", "tif": "TIFF", "tiff": "TIFF",
    "webp": "WEBP",
}
# Pillow's JPEG default (75) smears 32x32 shapes; 95 keeps their edges.
_JPEG_QUALITY = 95
_NOT_AN_IMAGE = b"This file is named like an image but holds text, not image data.\n"
_NOTES = b"Notes a person left next to the images; not an image.\n"
_TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


def write_image_folder(
    root: str | Path,
    images: np.ndarray | Sequence[np.ndarray],
    labels: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    *,
    fmt: str = "png",
    names: Sequence[str] | None = None,
) -> list[Path]:
    """Write each image to ``root/<class_name>/<name>.<fmt>``.

    Args:
        root: Folder to write into; it and the class folders are created as
            needed, and only classes that receive an image get a folder.
        images: ``uint8`` arrays, ``(H, W, 3)`` RGB, ``(H, W, 4)`` RGBA or
            ``(H, W)`` grayscale: a stacked ``(n, ...)`` array or a sequence
            (whose sizes may differ).
        labels: Class index of each image into ``class_names``.
        class_names: Folder name of each class.
        fmt: File format and suffix, a key of `IMAGE_FORMATS`.
        names: File stem of each image (no suffix, no folder); default the
            input position, ``00000``, ``00001``, ...

    Returns:
        The written paths, in input order.

    Raises:
        ValueError: Lengths differ, a label is out of range, a stem repeats
            within a class or holds a path separator, an image is not
            ``uint8`` of a supported shape, or ``fmt`` is unknown.
        FileExistsError: A file to be written exists already (nothing is overwritten).
    """
    fmt = fmt.lower()
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"write_image_folder: unknown format {fmt!r}; known: {', '.join(IMAGE_FORMATS)}")
    labels = np.asarray(labels)
    stems = [f"{i:05d}" for i in range(len(images))] if names is None else [str(s) for s in names]
    if not (len(images) == len(labels) == len(stems)):
        raise ValueError(f"write_image_folder: {len(images)} images, {len(labels)} labels and {len(stems)} names")
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0
                        or labels.max() >= len(class_names)):
        raise ValueError(f"write_image_folder: labels must be class indices 0..{len(class_names) - 1}")
    base = Path(root)
    paths = [base / class_names[int(label)] / f"{stem}.{fmt}" for label, stem in zip(labels, stems, strict=True)]
    for stem in stems:
        if not stem or PurePath(stem).name != stem or stem in (".", ".."):
            raise ValueError(f"write_image_folder: name {stem!r} must be a bare file stem")
    if len(set(paths)) != len(paths):
        raise ValueError("write_image_folder: two images of one class have the same name")
    for path in paths:
        if path.exists():
            raise FileExistsError(f"write_image_folder: {str(path)!r} exists already; write into an empty folder")
    for image, path in zip(images, paths, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(_to_pil(image), path)
    return paths


def save_image(image: Image.Image, path: Path) -> None:
    """Save with the format named by the suffix (`IMAGE_FORMATS`), JPEG at quality 95."""
    fmt = IMAGE_FORMATS[path.suffix.lower().lstrip(".")]
    options = {"quality": _JPEG_QUALITY} if fmt == "JPEG" else {}
    image.save(path, format=fmt, **options)


def _to_pil(image: np.ndarray) -> Image.Image:
    array = np.asarray(image)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(f"write_image_folder: images must be uint8 (H, W), (H, W, 3) or (H, W, 4), got "
                         f"{array.dtype} {array.shape}")
    return Image.fromarray(np.ascontiguousarray(array))


@dataclass(frozen=True)
class FaultyFolder:
    """Where `write_faulty_folder` put each fault; paths are relative to ``root``, in POSIX form.

    Attributes:
        root: The folder.
        classes: The class folders that hold images (the first three `SHAPE_CLASSES`).
        valid: Files a reader should load, sorted: the plain PNGs (the first
            of each duplicate group among them), ``grayscale`` and ``rgba``.
        corrupt: A truncated PNG (the first half of a valid file's bytes).
        not_image: Text bytes in a file named ``.jpg``.
        duplicates: Byte-identical files: the original (in ``valid``), a copy
            under another name in its class, and a copy in another class.
        empty_class: A class folder with nothing in it.
        outside_root: An image directly in the root, in no class.
        too_deep: An image one folder below a class folder.
        non_image_file: A ``.txt`` file in a class folder.
        cmyk: A JPEG in CMYK mode: it decodes, but a reader must convert it
            (or refuse it) on purpose, so it is not in ``valid``.
        too_small: A 4x4 RGB PNG, too small to resize up; not in ``valid``.
        grayscale: A valid mode ``L`` PNG of another size (40 wide, 24 high), to be resized.
        rgba: A valid RGBA PNG.
    """

    root: Path
    classes: tuple[str, ...]
    valid: tuple[str, ...]
    corrupt: str
    not_image: str
    duplicates: tuple[str, ...]
    empty_class: str
    outside_root: str
    too_deep: str
    non_image_file: str
    cmyk: str
    too_small: str
    grayscale: str
    rgba: str

    def faults(self) -> Mapping[str, str | tuple[str, ...]]:
        """Each fault's name and its path(s), e.g. ``{"corrupt": "circle/truncated.png", ...}``."""
        skip = ("root", "classes", "valid")
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def label_of(self, relative: str) -> str:
        """The class of a file in the layout, i.e. its first folder."""
        return PurePath(relative).parts[0]


def write_faulty_folder(root: str | Path, *, seed: int = 0, per_class: int = 6, size: int = 32) -> FaultyFolder:
    """Write a three-class ImageFolder tree from `generate_shapes` with one of each fault.

    Args:
        root: Folder to create; it must be absent or empty.
        seed: Seed of the shapes.
        per_class: Plain PNGs per class (at least 1).
        size: Side of the plain images in pixels (at least 8).

    Returns:
        Where each file and fault is, see `FaultyFolder`.

    Raises:
        ValueError: ``per_class`` or ``size`` is too small.
        FileExistsError: ``root`` exists and is not empty.
    """
    if per_class < 1 or size < 8:
        raise ValueError(f"write_faulty_folder: need per_class >= 1 and size >= 8, got {per_class}, {size}")
    base = Path(root)
    if base.exists() and any(base.iterdir()):
        raise FileExistsError(f"write_faulty_folder: {str(base)!r} is not empty; give it a new folder")
    extra = 3  # per class: source images of the seven faults that are images
    images, labels, _ = generate_shapes(len(SHAPE_CLASSES) * (per_class + extra), size=size, seed=seed)
    first, second, third = classes = SHAPE_CLASSES[:3]
    picks = [np.flatnonzero(labels == k) for k in range(len(classes))]
    plain = np.concatenate([p[:per_class] for p in picks])
    written = write_image_folder(base, images[plain], labels[plain], classes)
    spare = iter(images[np.concatenate([p[per_class:] for p in picks])])

    def rel(*parts: str) -> str:
        return PurePath(*parts).as_posix()

    def put(relative: str, data: bytes | Image.Image) -> None:
        path = base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            save_image(data, path)

    original = written[0].relative_to(base).as_posix()
    duplicates = (original, rel(first, "duplicate.png"), rel(second, "duplicate.png"))
    for copy in duplicates[1:]:
        shutil.copyfile(base / original, base / copy)
    folder = FaultyFolder(
        root=base, classes=classes, valid=(),
        corrupt=rel(first, "truncated.png"), not_image=rel(second, "not_image.jpg"), duplicates=duplicates,
        empty_class=SHAPE_CLASSES[3], outside_root="stray.png", too_deep=rel(first, "extra", "deep.png"),
        non_image_file=rel(second, "notes.txt"), cmyk=rel(third, "cmyk.jpg"), too_small=rel(third, "tiny.png"),
        grayscale=rel(first, "gray.png"), rgba=rel(second, "rgba.png"),
    )
    put(folder.corrupt, Image.fromarray(next(spare)))
    whole = (base / folder.corrupt).read_bytes()
    put(folder.corrupt, whole[: len(whole) // 2])
    put(folder.not_image, _NOT_AN_IMAGE)
    (base / folder.empty_class).mkdir()
    put(folder.outside_root, Image.fromarray(next(spare)))
    put(folder.too_deep, Image.fromarray(next(spare)))
    put(folder.non_image_file, _NOTES)
    put(folder.cmyk, Image.fromarray(next(spare)).convert("CMYK"))
    put(folder.too_small, Image.fromarray(next(spare)).resize((4, 4), Image.Resampling.BILINEAR))
    put(folder.grayscale, Image.fromarray(next(spare)).resize((40, 24), Image.Resampling.BILINEAR).convert("L"))
    rgba = Image.fromarray(next(spare)).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))  # alpha varies, so it is not droppable
    put(folder.rgba, rgba)
    valid = [p.relative_to(base).as_posix() for p in written] + [folder.grayscale, folder.rgba]
    return replace(folder, valid=tuple(sorted(valid)))


def write_manifest(
    root: str | Path | FaultyFolder, table_path: str | Path, *, column: str = "file", label: str = "label"
) -> pd.DataFrame:
    """Write the (path, label) table of an image folder's files as CSV or Parquet.

    Args:
        root: A `FaultyFolder` (its ``valid`` files are listed) or a folder in
            the ImageFolder layout (every file with a suffix of `IMAGE_FORMATS`
            directly in a class folder is listed; contents are not checked).
        table_path: The table to write; ``.csv``, ``.csv.gz``, ``.parquet``
            or ``.pq``. Its folder is created as needed.
        column: Name of the path column; paths are relative to the table's
            folder, in POSIX form.
        label: Name of the label column (the class folder's name).

    Returns:
        The table as written, rows sorted by path within the folder.

    Raises:
        ValueError: The suffix is not a table's, or the two column names are equal.
    """
    table = Path(table_path)
    if not table.name.lower().endswith(_TABLE_SUFFIXES):
        raise ValueError(f"write_manifest: {str(table)!r} must end with one of {', '.join(_TABLE_SUFFIXES)}")
    if column == label:
        raise ValueError(f"write_manifest: the path and label columns are both named {column!r}")
    if isinstance(root, FaultyFolder):
        base, files = root.root, list(root.valid)
    else:
        base = Path(root)
        files = sorted(
            p.relative_to(base).as_posix()
            for p in base.glob("*/*")
            if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_FORMATS
        )
    table.parent.mkdir(parents=True, exist_ok=True)
    here = table.parent.resolve()
    frame = pd.DataFrame({
        column: [PurePath(os.path.relpath(base.resolve() / f, here)).as_posix() for f in files],
        label: [PurePath(f).parts[0] for f in files],
    })
    if table.name.lower().endswith((".csv", ".csv.gz")):
        frame.to_csv(table, index=False)
    else:
        frame.to_parquet(table, index=False)
    return frame
