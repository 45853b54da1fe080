"""Retraining data from the drifted batches, and the record of each retraining."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from normlab.config import DataConfig
from normlab.contracts import RunSummary
from normlab.data.image_folders import write_image_folder
from normlab.images.decode import PIXEL_PREFIX
from normlab.images.stats import pixel_channels
from normlab.monitoring.contracts import Reference, RetrainedRun, RetrainingData, RetrainingRecord
from normlab.monitoring.ledger import (
    locked_state,
    model_history,
    monitor_dir,
    now_utc,
    read_state,
)
from normlab.monitoring.reference import reference_image_mode

# 11. Retraining ------------------------------------------------------------------------


def retraining_data(data: DataConfig, workdir: Path, reference: Reference) -> RetrainingData:
    """Write the reference rows plus the accepted rows of the drifted batches as one Parquet file.

    For a model trained on image files they are written as an image folder in the class layout
    instead (``retrain/<stamp>/images/<label>/<n>.png``, lossless, at
    ``data.image_shape``), which the retraining run reads as any image run.

    Only batches with the label column (``data.label``) can train; others are
    left out and counted. The streak is read from ``workdir``'s state and the
    file written under ``<workdir>/monitoring/retrain/``.

    Returns:
        The `RetrainingData`: ``path`` (None when no new labelled rows exist),
        ``rows_reference``, ``rows_new``, ``batches_used``, ``batches_unlabelled``.
    """
    history = model_history(read_state(workdir), reference)
    ref = pd.read_parquet(reference.reference)
    new, unlabelled = [], 0
    for path in history.streak_batches:
        if not path or not Path(path).is_file():
            continue
        frame = pd.read_parquet(path)
        if data.label not in frame.columns or frame[data.label].isna().any():
            unlabelled += 1
            continue
        new.append(frame[list(ref.columns)] if set(ref.columns) <= set(frame.columns) else frame)
    out = RetrainingData(rows_reference=len(ref), rows_new=int(sum(len(f) for f in new)), batches_used=len(new),
                         batches_unlabelled=unlabelled, path=None)
    if not new:
        return out
    combined = pd.concat([ref, *new], ignore_index=True)
    folder = monitor_dir(workdir) / "retrain" / now_utc().strftime("%Y%m%dT%H%M%S%fZ")
    folder.mkdir(parents=True, exist_ok=True)
    pixels = [str(c) for c in ref.columns if str(c).startswith(PIXEL_PREFIX)]
    channels = pixel_channels(pixels, data.image_shape) if reference_image_mode(reference) else None
    if channels is not None:
        # An image model retrains on image files, like any image run: its pixel rows as lossless PNGs.
        return out.model_copy(update={"path": str(_image_folder(combined, pixels, channels, data, folder / "images"))})
    combined.to_parquet(folder / "data.parquet", index=False)
    return out.model_copy(update={"path": str(folder / "data.parquet")})


def _image_folder(rows: pd.DataFrame, pixels: list[str], channels: int, data: DataConfig, root: Path) -> Path:
    """Write pixel rows as ``root/<label>/<n>.png`` at the model's size (the decode of a run reads them back unchanged)."""
    height, width = data.image_shape
    images = rows[pixels].to_numpy(dtype=np.uint8).reshape(len(rows), channels, height, width).transpose(0, 2, 3, 1)
    labels = rows[data.label].astype(str)
    names = sorted(labels.unique())
    write_image_folder(root, images[..., 0] if channels == 1 else images,
                       labels.map({n: i for i, n in enumerate(names)}).to_numpy(), names)
    return root


def retrained_run(summary: RunSummary) -> RetrainedRun:
    """What monitoring keeps of a retraining's run: ``summary`` is what `normlab.flows.training.training_flow` returns."""
    return RetrainedRun(run_id=summary.run_id, model_uri=summary.model_uri, rows=summary.data.rows,
                        rows_accepted=summary.validation.rows_accepted, registry=summary.registry)


def record_retraining(workdir: Path, reference: Reference, data: RetrainingData,
                      result: RetrainedRun | None, error: str | None) -> RetrainingRecord:
    """Note the retraining in the model's history (``workdir``'s state) and return its summary entry."""
    entry = RetrainingRecord(at=now_utc().isoformat(), data=data.path, rows_reference=data.rows_reference,
                             rows_new=data.rows_new, run_id=result.run_id if result else None, error=error)
    if result:
        entry = entry.model_copy(update={"model_uri": result.model_uri, "rows": result.rows,
                                         "rows_accepted": result.rows_accepted, "registry": result.registry})
    with locked_state(workdir) as state:
        history = model_history(state, reference)
        state.models[reference.model] = history.model_copy(update={"retrained": [*history.retrained, entry][-20:]})
    return entry
