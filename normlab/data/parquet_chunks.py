"""Parquet files read and written a chunk of rows at a time: how data over ``data.memory_budget_mb`` moves.

`ParquetChunks` reads a file back a chunk of at most ``rows`` rows at a time,
as arrow tables and as pandas frames, each frame with the dtypes
``pd.read_parquet`` gives the whole file. A chunk read alone would keep dtypes
of its own: an integer column with a missing value elsewhere in the file is
float64 read whole but int64 in a chunk without one (a boolean one object or
bool), and a row's content hash, and so its split, depends on its dtypes.
`ParquetChunks.written` gives a chunk's rows as ``frame.to_parquet`` would
write that frame, straight from arrow. `ParquetSink` gathers tables into row
groups of a bounded size and moves the file into place when closed (a reader
never sees half a file). `chunk_rows` sizes the chunks from the budget.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import pyarrow as pa

# A chunk's working set (its rows read, converted and encoded) takes at most this share of the budget.
CHUNK_SHARE = 0.25


def chunk_rows(budget_mb: float, row_bytes: float) -> int:
    """Rows per chunk when one row costs about ``row_bytes`` while it is worked on: at least 1."""
    return max(1, int(budget_mb * 2**20 * CHUNK_SHARE // max(row_bytes, 1.0)))


def group_bytes(budget_mb: float) -> float:
    """The size a `ParquetSink` gathers rows to before it writes them as a row group: an eighth of the budget.

    Not a chunk's rows: every row group costs about a kilobyte of footer a
    column, held in memory while the file is open (read or written), which on
    thousands of pixel columns outweighs the rows of a small group. Reading a
    row group back takes about twice its size.
    """
    return budget_mb * 2**20 / 8


class ParquetChunks:
    """A Parquet file read a chunk of rows at a time, every chunk with the whole file's dtypes.

    Only the footer is read when it is made. Args: ``path`` the file;
    ``rows`` the most rows a chunk holds.
    """

    def __init__(self, path: str | Path, rows: int = 65_536) -> None:
        import pyarrow.parquet as pq

        self.path, self.rows = Path(path), max(1, int(rows))
        self._file = pq.ParquetFile(self.path)
        self.schema: pa.Schema = self._file.schema_arrow
        self.n_rows = int(self._file.metadata.num_rows)
        self._casts: dict[str, np.dtype] | None = None

    @property
    def columns(self) -> list:
        """The frame's columns (a stored pandas index is the index, not a column)."""
        return list(self.schema.empty_table().to_pandas().columns)

    @property
    def empty(self) -> pd.DataFrame:
        """No rows, the whole file's columns and dtypes."""
        return self._cast(self.schema.empty_table().to_pandas())

    def with_rows(self, rows: int) -> ParquetChunks:
        """The same file read in chunks of ``rows`` (the footer is shared: on thousands of columns it is large)."""
        chunks = copy.copy(self)
        chunks.rows = max(1, int(rows))
        return chunks

    def tables(self, columns: list | None = None) -> Iterator[tuple[int, pa.Table]]:
        """(first row's position, chunk as an arrow table) in file order."""
        import pyarrow as pa

        start = 0
        for batch in self._file.iter_batches(batch_size=self.rows, columns=columns, use_pandas_metadata=True):
            yield start, pa.Table.from_batches([batch])
            start += batch.num_rows

    def frames(self, columns: list | None = None) -> Iterator[tuple[int, pd.DataFrame]]:
        """(first row's position, chunk) in file order; the chunk's index is the rows' positions."""
        for start, table in self.tables(columns):
            yield start, self.frame(table, start)

    def frame(self, table: pa.Table, start: int) -> pd.DataFrame:
        """A chunk of `tables` as pandas, with the whole file's dtypes; its index the rows' positions."""
        frame = self._cast(table.to_pandas())
        frame.index = pd.RangeIndex(start, start + len(frame))
        return frame

    def written_schema(self) -> pa.Schema:
        """The arrow schema ``frame.to_parquet(index=False)`` gives a frame of this file's rows (see `written`)."""
        if self._casts is None:
            self._casts = self._whole_file_dtypes()
        meta = json.loads((self.schema.metadata or {}).get(b"pandas", b"{}"))
        index = {c for c in meta.get("index_columns", []) if isinstance(c, str)}
        schema = self.schema
        for name in index:
            schema = schema.remove(schema.get_field_index(name))
        if meta:
            meta = {**meta, "index_columns": [], "columns": [c for c in meta["columns"] if c["field_name"] not in index]}
            schema = schema.with_metadata({**schema.metadata, b"pandas": json.dumps(meta).encode()})
        floats = [c for c, t in self._casts.items() if t == np.float64]
        return as_float64(schema, floats)

    def written(self, table: pa.Table, schema: pa.Schema) -> pa.Table:
        """A chunk's rows as ``frame.to_parquet`` writes their frame: no stored index, gappy integers as float64.

        ``schema`` is `written_schema`. Read back with pandas, the file gives
        the frame of those rows the in-memory path writes.
        """
        return _conform(table, schema)

    def _cast(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self._casts is None:
            self._casts = self._whole_file_dtypes()
        casts = {c: t for c, t in self._casts.items() if c in frame.columns and frame[c].dtype != t}
        return frame.astype(casts) if casts else frame

    def _whole_file_dtypes(self) -> dict[str, np.dtype]:
        """Column to the dtype the whole file reads as, for the columns a chunk may read otherwise.

        Integer columns with a missing value read as float64, boolean ones as
        object (unless pandas reads them as an extension dtype, Int64 or
        boolean, which holds missing values itself); the row groups'
        statistics count the missing values (a column without them is read to count).
        """
        import pyarrow as pa

        metadata = self._file.metadata
        dtypes = self.schema.empty_table().to_pandas().dtypes
        kinds = {f.name: pa.types.is_integer(f.type) for f in self.schema
                 if f.name in dtypes and isinstance(dtypes[f.name], np.dtype)
                 and (pa.types.is_integer(f.type) or pa.types.is_boolean(f.type))}
        leaves = {metadata.row_group(0).column(j).path_in_schema: j
                  for j in range(metadata.num_columns)} if metadata.num_row_groups else {}
        nulls, uncounted = dict.fromkeys(kinds, 0), set()
        for group in range(metadata.num_row_groups):
            row_group = metadata.row_group(group)
            for name in kinds:
                stats = row_group.column(leaves[name]).statistics
                if stats is None or not stats.has_null_count:
                    uncounted.add(name)
                else:
                    nulls[name] += stats.null_count
        for name in uncounted:
            nulls[name] = self._file.read(columns=[name]).column(0).null_count
        return {name: np.dtype(np.float64) if integer else np.dtype(object)
                for name, integer in kinds.items() if nulls[name]}


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table``'s columns in ``schema``'s order and types, with ``schema``'s metadata."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = [table.column(f.name) if table.schema.field(f.name).type == f.type else pc.cast(table.column(f.name), f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def as_float64(schema: pa.Schema, names: list) -> pa.Schema:
    """``schema`` with the fields ``names`` float64, their pandas metadata too (as pandas writes float64 columns)."""
    import pyarrow as pa

    chosen = set(names)
    if not chosen:
        return schema
    fields = [f.with_type(pa.float64()) if f.name in chosen else f for f in schema]
    metadata = dict(schema.metadata or {})
    if b"pandas" in metadata:
        meta = json.loads(metadata[b"pandas"])
        for column in meta.get("columns", []):
            if column.get("field_name") in chosen:
                column.update(pandas_type="float64", numpy_type="float64", metadata=None)
        metadata[b"pandas"] = json.dumps(meta).encode()
    return pa.schema(fields, metadata=metadata)


class ParquetSink:
    """One Parquet file written from arrow tables, gathered into row groups of about ``group_bytes``.

    Used as a ``with`` block: the file is moved to ``path`` when the block
    ends, or removed on an error. A file never written to gets ``schema``'s
    columns and no rows. `write_frame` converts a frame with ``schema``'s types
    (and pandas metadata of its own).
    """

    def __init__(self, path: str | Path, schema: pa.Schema, *, group_bytes: float = 64 * 2**20) -> None:
        self.path, self.schema, self.group_bytes = Path(path), schema, group_bytes
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._writer = None
        self._held: list[pa.Table] = []
        self._held_bytes = self.rows = 0

    def __enter__(self) -> ParquetSink:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self

    def write(self, table: pa.Table) -> None:
        """Append ``table``'s rows (its schema is ``schema``, up to metadata)."""
        self._held.append(table)
        self._held_bytes += table.nbytes
        self.rows += table.num_rows
        if self._held_bytes >= self.group_bytes:
            self._flush()

    def write_frame(self, frame: pd.DataFrame) -> None:
        """Append ``frame``'s rows, converted with ``schema``'s types."""
        import pyarrow as pa

        self.write(pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False))

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._held:
            return
        table = pa.concat_tables(self._held) if len(self._held) > 1 else self._held[0]
        self._held, self._held_bytes = [], 0
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, table.schema)
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            if self._writer is None and not self._held:
                self._held.append(self.schema.empty_table())
            self._flush()
        if self._writer is not None:
            self._writer.close()
        if kind is None:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def frame_types(frame: pd.DataFrame) -> pa.Schema:
    """The arrow types ``frame.to_parquet`` writes for ``frame`` (inferred from all its rows; no metadata)."""
    import pyarrow as pa

    return pa.Schema.from_pandas(frame, preserve_index=False).remove_metadata()
