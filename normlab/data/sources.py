"""Load the built-in data sets and read user tables (CSV, Parquet) with clear errors.

Readers never write to the files they open; every failure is a one-line
`DataSourceError` that names the path, so a scheduled run's log says which file
to fix.

A CSV field is read as it was written: only the empty field is a missing
value. pandas' default NA tokens (``NA``, ``n/a``, ``None``, ``null``,
``NaN``, ...) stay text, so ``NA`` in a numeric column fails the gate's types
check and its row reaches the quarantine with the text it arrived with.
"""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from normlab.errors import ConfigError, DataSourceError

if TYPE_CHECKING:
    import pyarrow as pa

BUILTIN_DATASETS: tuple[str, ...] = ("digits", "shapes")

# Image geometry of the built-ins whose rows are flattened images.
_IMAGE_SHAPES: dict[str, tuple[int, int]] = {"digits": (8, 8), "shapes": (32, 32)}
# Images in the built-in shapes (generated, 600 per class; `normlab.data.shapes`).
SHAPES_ROWS = 6000

_CSV_SUFFIXES: tuple[str, ...] = (".csv", ".csv.gz")
_PARQUET_SUFFIXES: tuple[str, ...] = (".parquet", ".pq")

# Column names starting with this are the gate's own (quarantine records, row positions).
RESERVED_PREFIX = "_normlab_"

# Bytes looked at for NUL characters: text CSV never holds them, binary files
# almost always do within the first block.
_SNIFF_BYTES = 64 * 1024


def load_builtin(name: str) -> pd.DataFrame:
    """Load a bundled data set (no network).

    Args:
        name: One of `BUILTIN_DATASETS`.

    Returns:
        For "digits": 1797 rows, int columns ``pixel_0``..``pixel_63`` (0..16)
        and ``label`` (0..9). For "shapes": `SHAPES_ROWS` generated 32x32 RGB
        images of ten shapes, uint8 columns ``pixel_0``..``pixel_3071`` (0..255,
        (C, H, W) order) and ``label`` (the shape's name); the same rows on
        every machine.

    Raises:
        ConfigError: ``name`` is not a built-in data set.
    """
    if name == "digits":
        # Imported here so that importing normlab.data stays cheap.
        from sklearn.datasets import load_digits

        bunch = load_digits()
        pixels = bunch.data.astype(np.int64)
        frame = pd.DataFrame(pixels, columns=[f"pixel_{i}" for i in range(pixels.shape[1])])
        frame["label"] = bunch.target.astype(np.int64)
        return frame
    if name == "shapes":
        from normlab.data.shapes import shapes_frame

        return shapes_frame(n=SHAPES_ROWS, size=32, seed=0)
    raise ConfigError(f"unknown built-in data set {name!r}; known data sets: {', '.join(BUILTIN_DATASETS)}")


def image_shape_of(name: str) -> tuple[int, int] | None:
    """Return the (height, width) of a built-in image data set, or None if it has none."""
    return _IMAGE_SHAPES.get(name)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (``.csv``, ``.csv.gz``) or Parquet (``.parquet``, ``.pq``) table.

    Args:
        path: File to read; it is opened read-only.

    Returns:
        The table, with at least one column and one row.

    Raises:
        DataSourceError: The file is missing, a directory, has an unsupported
            extension, is empty, has a header but no rows, has rows with more
            fields than the header, holds bytes that are not UTF-8 text, is
            not a readable Parquet file, has a Parquet column of list, struct,
            map or union type, or names a column with `RESERVED_PREFIX`.
    """
    p = Path(path)
    if not p.exists():
        raise DataSourceError(f"data file {str(p)!r} does not exist; check the path in the config")
    if p.is_dir():
        raise DataSourceError(
            f"data path {str(p)!r} is a directory; point it at a .csv, .csv.gz, .parquet or .pq file"
        )
    kind = _table_kind(p)
    if p.stat().st_size == 0:
        raise DataSourceError(f"data file {str(p)!r} is empty (0 bytes); write a header and rows")
    frame = _read_csv(p) if kind == "csv" else _read_parquet(p)
    if frame.shape[1] == 0:
        raise DataSourceError(f"data file {str(p)!r} has no columns; write a header and rows")
    if frame.shape[0] == 0:
        raise DataSourceError(f"data file {str(p)!r} has a header but no rows; add data rows to it")
    _reject_reserved_names(p, frame.columns)
    return frame


def _reject_reserved_names(path: Path, columns: pd.Index) -> None:
    """Raise if a column name starts with `RESERVED_PREFIX` (the gate would overwrite or misread it)."""
    reserved = [str(c) for c in columns if str(c).startswith(RESERVED_PREFIX)]
    if reserved:
        raise DataSourceError(
            f"data file {str(path)!r}: column {reserved[0]!r} starts with {RESERVED_PREFIX!r}, which normlab "
            "reserves for its own columns; rename it"
        )


def check_readable(path: str | Path) -> Path:
    """Fail fast, without parsing, on a data path that cannot be a readable table.

    The checks `read_table` would fail on first (exists, is a file, a known
    extension, not empty, can be opened), so that a command stops on a wrong
    path before it starts any orchestration. A folder passes: it is a folder
    of images (`normlab.images.scan`).

    Raises:
        DataSourceError: The path is missing, or a file of an unsupported
            type, empty or not readable.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DataSourceError(f"data file {str(p)!r} does not exist; check the path in the config or --data")
    if p.is_dir():
        return p  # a folder of images in class subfolders: scanned file by file by the gate (normlab.images)
    _table_kind(p)
    try:
        with p.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise DataSourceError(f"data file {str(p)!r} could not be read ({_one_line(exc)})") from None
    if p.stat().st_size == 0:
        raise DataSourceError(f"data file {str(p)!r} is empty (0 bytes); write a header and rows")
    return p


def _table_kind(path: Path) -> str:
    """Return "csv" or "parquet" from the file name, or raise for anything else."""
    name = path.name.lower()
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    allowed = ", ".join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)
    raise DataSourceError(f"data file {str(path)!r} has an unsupported extension; allowed: {allowed}")


def _one_line(exc: BaseException) -> str:
    """Squash a library message onto one line so the error stays one line."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV with the C parser, turning every parse problem into DataSourceError."""
    _reject_binary(path)
    try:
        with warnings.catch_warnings():
            # With index_col=False pandas only *warns* when the first data row
            # has more fields than the header and then drops the extra field;
            # make that an error instead of silent data loss.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            # index_col=False: a ragged first row must not silently become the index.
            # Only the empty field is missing: "NA", "null", "None"... stay the text they are.
            return pd.read_csv(path, engine="c", index_col=False, encoding="utf-8",
                               keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError as exc:
        raise DataSourceError(
            f"data file {str(path)!r} has no header or rows ({_one_line(exc)}); write a header and rows"
        ) from exc
    except (pd.errors.ParserError, pd.errors.ParserWarning) as exc:
        raise DataSourceError(
            f"data file {str(path)!r} is not a well-formed CSV ({_one_line(exc)}); "
            "every row must have at most as many fields as the header"
        ) from exc
    except UnicodeDecodeError as exc:
        raise DataSourceError(
            f"data file {str(path)!r} is not UTF-8 text ({_one_line(exc)}); save it as UTF-8 CSV"
        ) from exc
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise DataSourceError(
            f"data file {str(path)!r} could not be read ({_one_line(exc)}); check it is a valid CSV file"
        ) from exc


def _reject_binary(path: Path) -> None:
    """Raise if the start of a CSV holds NUL bytes, which the C parser would silently mangle."""
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                head = handle.read(_SNIFF_BYTES)
        else:
            with path.open("rb") as handle:
                head = handle.read(_SNIFF_BYTES)
    except (OSError, EOFError) as exc:
        raise DataSourceError(
            f"data file {str(path)!r} could not be read ({_one_line(exc)}); check it is a valid CSV file"
        ) from exc
    if b"\x00" in head:
        raise DataSourceError(
            f"data file {str(path)!r} holds binary data (NUL bytes), not CSV text; export it as UTF-8 CSV"
        )


def _read_parquet(path: Path) -> pd.DataFrame:
    """Read a Parquet file, turning every reader failure into DataSourceError."""
    # Imported here so that importing normlab.data stays cheap.
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # The footer alone: a nested column is refused before any data is read.
        schema = pq.read_schema(path)
        _reject_nested(path, schema)
        return pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataSourceError(
            f"data file {str(path)!r} is not a readable Parquet file ({_one_line(exc)}); "
            "rewrite it with pandas.DataFrame.to_parquet or pyarrow"
        ) from exc


def _reject_nested(path: Path, schema: pa.Schema) -> None:
    """Raise for the first column of list, struct, map or union type.

    Such a column reaches pandas as arrays, dicts or lists per cell: it cannot
    be hashed (fingerprints, duplicate checks), compared or used as a feature.
    """
    import pyarrow as pa

    for field in schema:
        kind = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
        if not pa.types.is_nested(kind):
            continue
        holds = ("structs" if pa.types.is_struct(kind) else "maps" if pa.types.is_map(kind)
                 else "unions" if pa.types.is_union(kind) else "lists")
        raise DataSourceError(
            f"data file {str(path)!r}: column {field.name!r} holds {holds} (Parquet type {kind}); normlab reads "
            "one number, text, date or boolean per cell: flatten it into scalar columns or drop it"
        )
