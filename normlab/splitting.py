"""Stage 3 of the pipeline: split the batch into ID and OOD splits, encode them, and read them back.

`prepare_splits` writes, under the run folder::

    prepared.npz         encoded features and labels per split (``<split>/x``, ``<split>/y``)
    encoder.json         feature and label encoders (saved with the model)
    reference.parquet    raw training rows: the drift reference
    eval_frames/         raw rows of each scored split (slices, champion re-scoring)

and returns what the later stages take (``prepared``, a `Splits`); `load_prepared`
and `load_eval_frames` read the files back. How each OOD ``kind`` is built is
`normlab.data.ood.OOD_KINDS`'s business. A batch whose smallest encoding
passes ``data.memory_budget_mb`` is split and encoded a chunk of rows at a
time instead (`normlab.prepare_stream`): the same files, the same content,
``prepared/`` instead of ``prepared.npz``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from normlab.config import DataConfig, EvalConfig, SplitsConfig, TimeSplit
from normlab.contracts import Batch, Splits
from normlab.data.encoding import FeatureEncoder, LabelEncoder
from normlab.data.ood import DeriveFromTest, hold_out, ood_kind
from normlab.data.parquet_chunks import ParquetChunks
from normlab.data.splits import assign_id_splits
from normlab.errors import ConfigError, DataSourceError
from normlab.images.decode import PIXEL_PREFIX, VALUE_RANGE
from normlab.prepare_stream import check_slices, encoded_floor, eval_frame_path, prepare_chunked, write_encoders


def feature_columns(data: DataConfig, splits: SplitsConfig, columns: list[str], *, images: bool = False) -> list[str]:
    """The configured features, or every column but the label and time-split columns.

    For decoded image files (``images``) the default is the pixel columns: a
    table's other columns are for slices and OOD splits, not inputs.
    """
    if data.features:
        missing = [c for c in data.features if c not in columns]
        if missing:
            raise ConfigError(f"data.features: columns not in the data: {', '.join(missing)}")
        return list(data.features)
    if images:
        return [c for c in columns if c.startswith(PIXEL_PREFIX)]
    excluded = {data.label} | {s.column for s in splits.ood if isinstance(s, TimeSplit)}
    return [c for c in columns if c not in excluded]


def prepare_splits(
    data: DataConfig, splits: SplitsConfig, evaluation: EvalConfig, seed: int, batch: Batch, run_dir: str | Path,
) -> Splits:
    """Split the batch into ID train/val/test and the OOD splits, and encode them.

    Row-selecting OOD kinds (column, quantile, time) are held out of the ID splits
    entirely; derived kinds (corruption) are transformed copies of the ID test split.
    ``data`` names the columns and the scaling, ``splits`` the fractions, salt and
    OOD splits, ``evaluation`` the slice columns the scored rows must have;
    ``seed`` draws the corruptions.
    """
    run_dir = Path(run_dir)
    source = ParquetChunks(batch.path)  # the footer: rows and columns
    features = feature_columns(data, splits, source.columns, images=batch.images is not None)
    # Decoded image files hold 0..255 pixels whatever the batch's extremes.
    value_range = data.value_range or (VALUE_RANGE if batch.images is not None else None)
    image_mode = batch.images.mode if batch.images is not None else None
    if encoded_floor(source.n_rows, len(features)) > data.memory_budget_mb * 2**20:
        # Even the smallest encoding passes the budget: never the whole batch in memory.
        return prepare_chunked(data, splits, evaluation, seed, source, run_dir, features=features,
                               value_range=value_range, image_mode=image_mode)
    frame = pd.read_parquet(batch.path)
    kinds = [(split, ood_kind(split)) for split in splits.ood]
    held_out, domain_masks, thresholds = hold_out(kinds, len(frame), lambda split: frame)

    id_frame = frame.loc[~held_out]
    id_split = assign_id_splits(
        id_frame, val_fraction=splits.val_fraction, test_fraction=splits.test_fraction, salt=splits.salt
    )
    parts = {name: id_frame.loc[id_split == name] for name in ("train", "val", "test")}
    for name, part in parts.items():
        if name != "val" and len(part) == 0:
            raise DataSourceError(f"the ID {name} split is empty: the batch has too few rows ({len(id_frame)})")

    labels = LabelEncoder.fit(frame[data.label])
    encoder = FeatureEncoder.fit(parts["train"], features, scale=data.scale)
    arrays: dict[str, np.ndarray] = {}
    scored: dict[str, pd.DataFrame] = {}  # raw rows of the scored splits, for slices and the champion
    # Derived splits are copies of the ID test rows: the bootstrap resamples them together.
    populations: dict[str, str] = {}

    def add(key: str, part: pd.DataFrame, raw_override: np.ndarray | None = None) -> None:
        if raw_override is not None:
            part = part.copy()
            part[features] = raw_override
        arrays[f"{key}/x"] = encoder.transform(part)
        arrays[f"{key}/y"] = labels.transform(part[data.label])
        if key == "id/test" or key.startswith("ood/"):
            scored[key] = part

    for name, part in parts.items():
        add(f"id/{name}", part)
    for split, kind in kinds:
        if isinstance(kind, DeriveFromTest):
            raw = parts["test"][features].to_numpy(dtype=np.float64)
            for leaf, derived in kind.derive(raw, split, image_shape=data.image_shape, seed=seed,
                                             value_range=value_range):
                add(f"ood/{leaf}", parts["test"], derived)
                populations[f"ood/{leaf}"] = "id/test"
        else:
            add(f"ood/{split.name}", frame.loc[domain_masks[split.name]])

    # Over the memory budget, one .npy file per array (prepared/<split>/x.npy): training maps them and
    # streams batches from disk (normlab.streaming). Here the batch's smallest encoding fit the budget, so
    # the arrays were built in memory (categories and derived copies can still take them past it).
    if sum(a.nbytes for a in arrays.values()) > data.memory_budget_mb * 2**20:
        prepared_path = run_dir / "prepared"
        shutil.rmtree(prepared_path, ignore_errors=True)  # a retried stage leaves no stale split behind
        for key, array in arrays.items():
            (prepared_path / key).parent.mkdir(parents=True, exist_ok=True)
            np.save(prepared_path / f"{key}.npy", array)
    else:
        prepared_path = run_dir / "prepared.npz"
        np.savez(prepared_path, **arrays)
    write_encoders(run_dir, encoder, labels, data.label, image_mode)
    parts["train"].to_parquet(run_dir / "reference.parquet", index=False)
    counts = {key[:-2]: len(v) for key, v in arrays.items() if key.endswith("/y")}
    eval_frames = save_eval_frames(scored, run_dir / "eval_frames", slices=evaluation.slices)
    return Splits(
        path=str(prepared_path),
        encoder=str(run_dir / "encoder.json"),
        reference=str(run_dir / "reference.parquet"),
        features=features,
        n_features=int(encoder.n_outputs),
        classes=[str(c) for c in labels.classes],
        counts=counts,
        ood_thresholds=thresholds,
        eval_frames=eval_frames,
        populations=populations,
    )


def save_eval_frames(frames: dict[str, pd.DataFrame], folder: Path, *, slices: list[str]) -> dict[str, str]:
    """Write the raw rows of each scored split (one Parquet file each); split key to path.

    Raises:
        ConfigError: An ``eval.slices`` column is not in the data.
    """
    check_slices(slices, list(next(iter(frames.values())).columns) if frames else [])
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    for key, frame in frames.items():
        path = eval_frame_path(folder, key)
        frame.to_parquet(path, index=False)
        paths[key] = str(path)
    return paths


def load_eval_frames(prepared: Splits) -> dict[str, pd.DataFrame]:
    """Split key to the raw rows of that scored split (``id/test``, ``ood/...``)."""
    return {key: pd.read_parquet(path) for key, path in prepared.eval_frames.items()}


def load_prepared(prepared: Splits | str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Split key (``id/train``, ``ood/noise``...) to (features, labels); ``prepared`` or its path.

    A ``prepared.npz`` is read into memory; a ``prepared/`` folder (splits over
    ``data.memory_budget_mb``) gives read-only ``np.memmap`` arrays, which
    `normlab.training.train_model` streams from.
    """
    path = Path(prepared.path if isinstance(prepared, Splits) else prepared)
    if path.is_dir():
        keys = sorted({f.relative_to(path).with_suffix("").parent.as_posix() for f in path.rglob("*.npy")})
        return {k: (np.load(path / k / "x.npy", mmap_mode="r"), np.load(path / k / "y.npy", mmap_mode="r"))
                for k in keys}
    with np.load(path) as npz:
        keys = sorted({k[:-2] for k in npz.files})
        return {k: (npz[f"{k}/x"], npz[f"{k}/y"]) for k in keys}


def load_split(prepared: Splits | str | Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """One split's (features, labels), ``key`` e.g. ``id/test``, read alone from either form of `load_prepared`."""
    path = Path(prepared.path if isinstance(prepared, Splits) else prepared)
    if path.is_dir():
        return np.load(path / key / "x.npy", mmap_mode="r"), np.load(path / key / "y.npy", mmap_mode="r")
    with np.load(path) as npz:
        return npz[f"{key}/x"], npz[f"{key}/y"]


def prepared_path(run_dir: str | Path) -> Path:
    """Where a run folder's encoded splits are: ``prepared/`` (streamed) or ``prepared.npz``."""
    folder = Path(run_dir) / "prepared"
    return folder if folder.is_dir() else Path(run_dir) / "prepared.npz"
