"""Decode accepted image files into pixel rows, the shape every later stage reads.

Each image is opened with Pillow, turned upright by its EXIF orientation,
converted to one mode (``L`` grayscale or ``RGB``; an alpha channel is
dropped, a palette expanded), and resized to ``data.image_shape`` (H, W) with
Pillow's bilinear filter, which widens with the scale factor when an image
shrinks (antialiased) and does not keep the aspect ratio: every image is
stretched to (H, W). A row holds C*H*W uint8 values, 0..255, in (C, H, W)
order, in columns ``pixel_0`` ... (the layout `normlab.models` reads).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from normlab.data.fingerprint import FrameDigest
from normlab.data.parquet_chunks import ParquetSink, chunk_rows, frame_types, group_bytes
from normlab.errors import DataSourceError
from normlab.images.scan import _THREADS, IMAGE, MANIFEST_COLUMNS

# Pillow modes without colour; any other accepted mode (RGB, RGBA, P, CMYK, YCbCr...) has colour.
GRAY_MODES: frozenset[str] = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"})
PIXEL_PREFIX = "pixel_"
VALUE_RANGE: tuple[float, float] = (0.0, 255.0)


def pixel_columns(channels: int, image_shape: tuple[int, int]) -> list[str]:
    """The column names of a pixel row: ``pixel_0`` ... ``pixel_{C*H*W-1}``."""
    return [f"{PIXEL_PREFIX}{i}" for i in range(channels * image_shape[0] * image_shape[1])]


def choose_mode(modes: pd.Series, configured: str | None) -> str:
    """``configured`` (``L`` or ``RGB``), else RGB when any image has colour, else L."""
    if configured:
        return configured
    return "RGB" if any(str(m) not in GRAY_MODES for m in modes) else "L"


def decode_images(paths: list[Path], image_shape: tuple[int, int], mode: str) -> np.ndarray:
    """Pixel rows of the files: (n, C*H*W) uint8, C = 1 for ``L``, 3 for ``RGB``.

    Raises:
        DataSourceError: A file cannot be decoded (it passed the scan, so it changed since).
    """
    channels = 1 if mode == "L" else 3
    height, width = image_shape
    out = np.empty((len(paths), channels * height * width), dtype=np.uint8)

    def one(i: int) -> None:
        out[i] = _decode(paths[i], (height, width), mode).reshape(-1)

    with ThreadPoolExecutor(_THREADS) as pool:
        list(pool.map(one, range(len(paths))))
    return out


def _decode(path: Path, image_shape: tuple[int, int], mode: str) -> np.ndarray:
    """One image file as a (C, H, W) uint8 array."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            converted = ImageOps.exif_transpose(image).convert(mode)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataSourceError(
            f"image {str(path)!r} no longer decodes ({' '.join(str(exc).split()) or type(exc).__name__}); "
            "it changed after the gate read it: run again"
        ) from None
    return _fit(converted, image_shape, mode)


def pixel_frame(entries: pd.DataFrame, root: Path, *, label: str, image_shape: tuple[int, int],
                mode: str | None) -> tuple[pd.DataFrame, str]:
    """The accepted entries as pixel rows, with their label and a table's other columns; and the mode used.

    The manifest's own columns (path, hash, sizes, findings) are dropped: the
    split hashes a row's content, so a renamed file keeps its split. All rows
    are decoded at once; `write_pixel_parquet` writes the same rows a chunk at a time.
    """
    chosen = choose_mode(entries["mode"], mode)
    shape = tuple(image_shape)
    pixels = decode_images(_image_paths(entries, root), shape, chosen)
    return _frame(pixels, _other_columns(entries), pixel_columns(1 if chosen == "L" else 3, shape)), chosen


@dataclass(frozen=True)
class PixelFile:
    """What `write_pixel_parquet` wrote: the file, the mode the images were read in, and its rows and columns.

    ``fingerprint`` is `normlab.data.fingerprint.fingerprint_frame` of the
    whole frame, computed a chunk at a time.
    """

    path: Path
    mode: str
    rows: int
    columns: list[str]
    fingerprint: str


def write_pixel_parquet(entries: pd.DataFrame, root: Path, path: Path, *, image_shape: tuple[int, int],
                        mode: str | None, budget_mb: float) -> PixelFile:
    """`pixel_frame`'s rows written to the Parquet file ``path`` a chunk at a time, never all of them in memory.

    A chunk is as many rows as fit a share of ``budget_mb`` (``data.memory_budget_mb``,
    `normlab.data.parquet_chunks.chunk_rows`), decoded and written (row groups
    of `normlab.data.parquet_chunks.group_bytes`): the file reads back as
    `pixel_frame`'s frame (same columns, dtypes, rows in order), whatever the
    chunks. Small data are one chunk.

    Raises:
        DataSourceError: A file cannot be decoded (it passed the scan, so it changed since).
    """
    import pyarrow as pa

    chosen = choose_mode(entries["mode"], mode)
    shape = tuple(image_shape)
    paths, rest = _image_paths(entries, root), _other_columns(entries)
    names = pixel_columns(1 if chosen == "L" else 3, shape)
    # A row is held decoded, as a frame, as arrow and as encoded pages: about 4 bytes a value, with its other columns.
    rest_bytes = rest.memory_usage(index=False, deep=True).sum() / max(len(rest), 1)
    rows = chunk_rows(budget_mb, 4 * len(names) + rest_bytes)
    pixel_types = frame_types(pd.DataFrame(np.zeros((0, len(names)), dtype=np.uint8), columns=names))
    rest_types = frame_types(rest)
    digest = FrameDigest([*names, *rest.columns], [np.dtype(np.uint8)] * len(names) + list(rest.dtypes), len(rest))
    schema = None  # with the pandas metadata of the first chunk's frame, as to_parquet writes it
    with ParquetSink(path, pa.schema([*pixel_types, *rest_types]), group_bytes=group_bytes(budget_mb)) as sink:
        for start in range(0, max(len(paths), 1), rows):
            pixels = decode_images(paths[start : start + rows], shape, chosen)
            others = rest.iloc[start : start + rows].reset_index(drop=True)
            frame = _frame(pixels, others, names)
            digest.update(frame)
            if schema is None:
                schema = pa.Table.from_pandas(frame, schema=sink.schema, preserve_index=False).schema
            # Built from the arrays: converting thousands of pixel columns through pandas costs more than decoding.
            planes = np.ascontiguousarray(pixels.T)
            arrays = [pa.array(plane) for plane in planes]
            arrays += pa.Table.from_pandas(others, schema=rest_types, preserve_index=False).columns
            sink.write(pa.Table.from_arrays(arrays, schema=schema))
    return PixelFile(path=Path(path), mode=chosen, rows=len(rest), columns=[str(c) for c in frame.columns],
                     fingerprint=digest.hexdigest())


def _image_paths(entries: pd.DataFrame, root: Path) -> list[Path]:
    return [Path(p) if Path(p).is_absolute() else root / p for p in entries[IMAGE]]


def _other_columns(entries: pd.DataFrame) -> pd.DataFrame:
    """The entries' label and a table's other columns: the manifest's own are dropped."""
    return entries.drop(columns=[c for c in MANIFEST_COLUMNS if c in entries.columns]).reset_index(drop=True)


def _frame(pixels: np.ndarray, rest: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Pixel rows (columns ``names``, ``pixel_0`` ...) followed by their ``rest`` columns."""
    return pd.concat([pd.DataFrame(pixels, columns=names), rest.reset_index(drop=True)], axis=1)


def pixel_rows(images: np.ndarray | pd.Series | list, image_shape: tuple[int, int], mode: str) -> np.ndarray:
    """Pixel rows (n, C*H*W) of image files or arrays, read as in training (what a served image model takes).

    ``images`` is an array (n, H, W) or (n, H, W, C), or paths. An array at
    ``image_shape`` with the mode's channels keeps its values; another array
    must be uint8 (0..255) and is converted and resized like a file.

    Raises:
        DataSourceError: An input is neither a readable image file nor an image array.
    """
    from PIL import Image

    channels = 1 if mode == "L" else 3
    if isinstance(images, np.ndarray) and images.ndim in (3, 4) and images.dtype != object:
        array = images if images.ndim == 4 else images[..., None]
        if tuple(array.shape[1:3]) == tuple(image_shape) and array.shape[3] == channels:
            return array.transpose(0, 3, 1, 2).reshape(len(array), -1)
        if array.dtype != np.uint8:
            raise DataSourceError(
                f"image arrays of shape {images.shape[1:]} are not the model's {tuple(image_shape)} x {channels}: "
                "send them as uint8 (0..255) to be resized, or at the model's size"
            )
        pictures = [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in array]
        return np.stack([_fit(picture, image_shape, mode).reshape(-1) for picture in pictures])
    rows = []
    for item in list(images):
        if isinstance(item, (str, Path)):
            rows.append(_decode(Path(item), image_shape, mode).reshape(-1))
        elif isinstance(item, np.ndarray):
            rows.append(pixel_rows(item[None], image_shape, mode)[0])
        else:
            raise DataSourceError(f"an image input is a file path or an array; got {type(item).__name__}")
    return np.stack(rows) if rows else np.zeros((0, channels * image_shape[0] * image_shape[1]), dtype=np.uint8)


def _fit(image, image_shape: tuple[int, int], mode: str) -> np.ndarray:
    """A Pillow image converted to ``mode`` and resized to ``image_shape``, as a (C, H, W) uint8 array."""
    from PIL import Image

    converted = image.convert(mode)
    height, width = image_shape
    if converted.size != (width, height):
        converted = converted.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(converted, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
