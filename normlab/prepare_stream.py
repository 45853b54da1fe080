"""Stage 3 for a batch over ``data.memory_budget_mb``: the splits built and written a chunk of rows at a time.

`normlab.splitting.prepare_splits` comes here when even the smallest encoding
of the batch passes the budget (`encoded_floor`), so that the in-memory path
would write ``prepared/`` too. `prepare_chunked` writes the files that path
writes, with the same content, reading the batch's Parquet file back in chunks
(`normlab.data.parquet_chunks`, every chunk with the whole file's dtypes):

1. A row-selecting OOD split (column, quantile, time) reads the one column it
   names, whole (a quantile needs all its values), and masks the batch with it.
2. Pass 1: each chunk's ID rows get their content-hash split (a row's hash is
   its own: `normlab.data.fingerprint.row_hashes`), the labels are counted and
   the encoder's first statistics taken on the train rows.
3. One or two passes over the feature columns finish the means and stds, to
   the bit `FeatureEncoder.fit`'s (`normlab.data.chunked_fit`).
4. The last pass encodes each chunk and appends it to ``prepared/<split>/x.npy``
   and ``y.npy`` (made with ``np.lib.format.open_memmap``, the layout training
   maps), and appends its raw rows to ``reference.parquet`` (every train row)
   and ``eval_frames/``.
5. A derived split (corruption) is made from the whole ID test split at once,
   as in memory: the corruptions draw their noise over the whole split and
   pick their method by its size, so chunks would not give the same values.
   The ID test split's features are held (float64) while they run; the
   corrupted copies are encoded and written a chunk at a time.

Held whatever the size: a byte a batch row of split codes and one of each
OOD mask, the columns the row-selecting OOD splits name, the label's distinct
values and the encoder; on thousands of columns, Parquet's per-column reader
and writer state and its footers (`normlab.data.parquet_chunks.group_bytes`).
"""

from __future__ import annotations

import json
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from normlab.config import DataConfig, EvalConfig, SplitsConfig
from normlab.contracts import Splits
from normlab.data.chunked_fit import FeatureFit, LabelFit, encode
from normlab.data.encoding import FeatureEncoder, LabelEncoder
from normlab.data.ood import DeriveFromTest, hold_out, ood_kind
from normlab.data.parquet_chunks import ParquetChunks, ParquetSink, as_float64, chunk_rows, group_bytes
from normlab.data.splits import SPLIT_NAMES, assign_id_splits
from normlab.errors import ConfigError, DataSourceError

HELD_OUT = -1  # the split code of a row a row-selecting OOD split takes
TRAIN = SPLIT_NAMES.index("train")


def encoded_floor(rows: int, n_features: int) -> int:
    """Bytes of the smallest encoding ``rows`` rows can have: each in one split, 4 bytes a feature, 8 for its label."""
    return rows * (4 * n_features + 8)


def check_slices(slices: list[str], columns: list) -> None:
    """Raise ConfigError when an ``eval.slices`` column is not among ``columns``."""
    missing = [c for c in slices if c not in columns]
    if missing:
        raise ConfigError(f"eval.slices: columns not in the data: {', '.join(missing)}; columns: "
                          f"{', '.join(map(str, columns[:20]))}")


def eval_frame_path(folder: Path, key: str) -> Path:
    """Where the raw rows of split ``key`` (``id/test``, ``ood/noise/s1``...) are written."""
    return folder / f"{key.replace('/', '__')}.parquet"


def write_encoders(run_dir: Path, encoder: FeatureEncoder, labels: LabelEncoder, label_column: str,
                   image_mode: str | None) -> Path:
    """``encoder.json``: the feature and label encoders (saved with the model), the label column, the image mode."""
    path = run_dir / "encoder.json"
    path.write_text(
        json.dumps({"features": encoder.to_dict(), "labels": labels.to_dict(), "label_column": label_column,
                    # Image files: the mode they were decoded in (what monitoring and retraining read them as).
                    "image_mode": image_mode})
    )
    return path


def prepare_chunked(data: DataConfig, splits: SplitsConfig, evaluation: EvalConfig, seed: int, source: ParquetChunks,
                    run_dir: str | Path, *, features: list[str], value_range: tuple[float, float] | None,
                    image_mode: str | None) -> Splits:
    """`normlab.splitting.prepare_splits` for a batch over the budget, a chunk of ``source``'s rows at a time.

    Writes what the in-memory path writes, with the same arrays and rows;
    ``prepared/`` always (the arrays pass the budget). ``features``,
    ``value_range`` and ``image_mode`` are the ones `prepare_splits` resolved.
    """
    run_dir = Path(run_dir)
    columns = source.columns
    check_slices(evaluation.slices, columns)  # before any pass (the in-memory path checks when it writes)
    fit = FeatureFit(source.empty, features, scale=data.scale)
    # A row is read (arrow and pandas, a few bytes a column), its features taken to float64 about three
    # times over (the fit's copies, the encoding's) and encoded (float32).
    source = source.with_rows(chunk_rows(data.memory_budget_mb, 8 * len(columns) + 24 * len(features) + 16))
    kinds = [(split, ood_kind(split)) for split in splits.ood]
    held_out, domains, thresholds = _select_rows(source, kinds)
    codes, label_fit = _assign(source, data, splits, held_out, fit)
    sizes = np.bincount(codes[codes != HELD_OUT], minlength=len(SPLIT_NAMES))
    for name, size in zip(SPLIT_NAMES, sizes, strict=True):
        if name != "val" and size == 0:
            raise DataSourceError(f"the ID {name} split is empty: the batch has too few rows ({int((~held_out).sum())})")
    labels = label_fit.encoder()
    while fit.next_pass():
        for start, frame in source.frames(columns=features):
            fit.observe(frame[codes[start : start + len(frame)] == TRAIN])
    encoder = fit.encoder()

    prepared, folder = run_dir / "prepared", run_dir / "eval_frames"
    shutil.rmtree(prepared, ignore_errors=True)  # a retried stage leaves no stale split behind
    counts = {f"id/{name}": int(size) for name, size in zip(SPLIT_NAMES, sizes, strict=True)}
    counts |= {f"ood/{name}": int(mask.sum()) for name, mask in domains.items()}
    derived = [(split, kind) for split, kind in kinds if isinstance(kind, DeriveFromTest)]
    group = group_bytes(data.memory_budget_mb)
    test_raw = _write_rows(source, run_dir, codes, domains, counts, encoder, labels, label=data.label,
                           features=features, keep_test=bool(derived), group=group)

    populations: dict[str, str] = {}
    leaves: dict[str, list[str]] = {}
    test = ParquetChunks(eval_frame_path(folder, "id/test"), source.rows) if derived else None
    test_y = np.load(prepared / "id" / "test" / "y.npy") if derived else None
    for split, kind in derived:
        leaves[split.name] = []
        for leaf, values in kind.derive(test_raw, split, image_shape=data.image_shape, seed=seed,
                                        value_range=value_range):
            key = f"ood/{leaf}"
            _write_derived(prepared / key, eval_frame_path(folder, key), values, encoder, test, features=features,
                           test_y=test_y, group=group)
            leaves[split.name].append(key)
            populations[key] = "id/test"
    ordered = {f"id/{name}": counts[f"id/{name}"] for name in SPLIT_NAMES}
    eval_frames = {"id/test": str(eval_frame_path(folder, "id/test"))}
    for split, _kind in kinds:
        for key in leaves.get(split.name, [f"ood/{split.name}"]):
            ordered[key] = counts.get(key, counts["id/test"])
            eval_frames[key] = str(eval_frame_path(folder, key))
    return Splits(
        path=str(prepared),
        encoder=str(write_encoders(run_dir, encoder, labels, data.label, image_mode)),
        reference=str(run_dir / "reference.parquet"),
        features=list(features),
        n_features=int(encoder.n_outputs),
        classes=[str(c) for c in labels.classes],
        counts=ordered,
        ood_thresholds=thresholds,
        eval_frames=eval_frames,
        populations=populations,
    )


def _select_rows(source: ParquetChunks, kinds: list) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, float]]:
    """The rows the row-selecting OOD splits hold out of the ID splits, each split's mask, and their thresholds.

    Each reads the one column it names (``split.column``), whole; a column not
    in the data gets the in-memory path's error, which lists the columns there are.
    """
    def column_of(split) -> pd.DataFrame:
        column = getattr(split, "column", None)
        return pd.read_parquet(source.path, columns=[column]) if column in source.columns else source.empty

    return hold_out(kinds, source.n_rows, column_of)


def _assign(source: ParquetChunks, data: DataConfig, splits: SplitsConfig, held_out: np.ndarray,
            fit: FeatureFit) -> tuple[np.ndarray, LabelFit]:
    """Pass 1: every row's split code (0 train, 1 val, 2 test, `HELD_OUT`); the labels and train rows observed."""
    codes = np.full(source.n_rows, HELD_OUT, dtype=np.int8)
    labels = LabelFit(data.label)
    for start, frame in source.frames():
        labels.observe(frame[data.label])
        ids = frame[~held_out[start : start + len(frame)]]
        split = assign_id_splits(ids, val_fraction=splits.val_fraction, test_fraction=splits.test_fraction,
                                 salt=splits.salt)
        chunk = pd.Categorical(split, categories=SPLIT_NAMES).codes
        codes[ids.index.to_numpy()] = chunk
        fit.observe(ids[chunk == TRAIN])
    return codes, labels


def _write_rows(source: ParquetChunks, run_dir: Path, codes: np.ndarray, domains: dict[str, np.ndarray],
                counts: dict[str, int], encoder: FeatureEncoder, labels: LabelEncoder, *, label: str,
                features: list[str], keep_test: bool, group: float) -> np.ndarray | None:
    """The last pass: each chunk's rows encoded into their split's ``.npy`` files, their raw rows into Parquet.

    Raw rows go to ``reference.parquet`` (train) and ``eval_frames/`` (ID
    test, each row-selecting OOD split), straight from arrow as
    ``to_parquet`` writes their frame. With ``keep_test`` the ID test split's
    features are returned (float64, one row per test row), for the derived splits.
    """
    import pyarrow as pa

    schema = source.written_schema()
    folder = run_dir / "eval_frames"
    test_raw = np.empty((counts["id/test"], len(features))) if keep_test else None
    files = [("id/train", run_dir / "reference.parquet"), ("id/test", eval_frame_path(folder, "id/test")),
             *[(f"ood/{name}", eval_frame_path(folder, f"ood/{name}")) for name in domains]]
    with ExitStack() as stack:
        outputs = {key: stack.enter_context(_Output(run_dir / "prepared" / key, rows, encoder.n_outputs))
                   for key, rows in counts.items()}
        sinks = {key: stack.enter_context(ParquetSink(path, schema, group_bytes=group)) for key, path in files}
        for start, table in source.tables():
            frame = source.frame(table, start)
            stop = start + len(frame)
            parts = [(f"id/{name}", codes[start:stop] == code) for code, name in enumerate(SPLIT_NAMES)]
            for key, rows in parts + [(f"ood/{name}", mask[start:stop]) for name, mask in domains.items()]:
                if not rows.any():
                    continue
                part = frame[rows]
                if key == "id/test" and test_raw is not None:
                    done = outputs[key].filled
                    test_raw[done : done + len(part)] = part[features].to_numpy(dtype=np.float64)
                outputs[key].add(encode(encoder, part), labels.transform(part[label]))
                if key in sinks:
                    sinks[key].write(source.written(table.filter(pa.array(rows)), schema))
    return test_raw


def _write_derived(folder: Path, frame_path: Path, values: np.ndarray, encoder: FeatureEncoder, test: ParquetChunks,
                   *, features: list[str], test_y: np.ndarray, group: float) -> None:
    """One derived split: ``values`` (the ID test features, transformed) encoded, and the test rows carrying them.

    The raw rows are the ID test split's eval frame (``test``) with the
    features replaced (float64, as the in-memory path writes them), read back
    a chunk at a time.
    """
    import pyarrow as pa

    chosen = set(features)
    schema = as_float64(test.schema, features)
    others = [name for name in schema.names if name not in chosen]
    with _Output(folder, len(values), encoder.n_outputs) as out, ParquetSink(frame_path, schema,
                                                                            group_bytes=group) as sink:
        for start, table in test.tables(columns=others):
            stop = start + table.num_rows
            block = pd.DataFrame(values[start:stop], columns=features)
            out.add(encode(encoder, block), test_y[start:stop])
            columns = [pa.array(block[name].to_numpy()) if name in chosen else table.column(name)
                       for name in schema.names]
            sink.write(pa.Table.from_arrays(columns, schema=schema))


class _Output:
    """One encoded split's ``x.npy`` and ``y.npy``, appended to in row order (a ``with`` block).

    The files are made by ``np.lib.format.open_memmap`` at their full size and
    then written through file handles: a written chunk stays in the page
    cache, not in this process's memory, as it would through a map.
    """

    def __init__(self, folder: Path, rows: int, width: int) -> None:
        self.folder, self.rows, self.width, self.filled = folder, rows, width, 0
        self._files: list[BinaryIO] = []

    def __enter__(self) -> _Output:
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, dtype, shape in (("x", np.float32, (self.rows, self.width)), ("y", np.int64, (self.rows,))):
            mapped = np.lib.format.open_memmap(self.folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
            offset = mapped.offset
            del mapped
            handle = open(self.folder / f"{name}.npy", "r+b")  # closed in __exit__
            handle.seek(offset)
            self._files.append(handle)
        return self

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """The next rows' encoded features (float32) and labels (int64)."""
        self._files[0].write(memoryview(np.ascontiguousarray(x, dtype=np.float32)))
        self._files[1].write(memoryview(np.ascontiguousarray(y, dtype=np.int64)))
        self.filled += len(y)

    def __exit__(self, kind, error, tb) -> None:
        for handle in self._files:
            handle.close()
        if kind is None and self.filled != self.rows:
            raise RuntimeError(f"{self.folder}: {self.filled} rows written of {self.rows}")
