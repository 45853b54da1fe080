"""Retraining data from the drifted batches, and the record of each retraining."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from normlab.config import PipelineConfig
from normlab.monitoring.contracts import Reference
from normlab.monitoring.ledger import (
    locked_state,
    model_history,
    monitor_dir,
    now_utc,
    read_state,
)

# 11. Retraining ------------------------------------------------------------------------


def retraining_data(cfg: PipelineConfig, reference: Reference) -> dict[str, Any]:
    """Write the reference rows plus the accepted rows of the drifted batches as one Parquet file.

    Only batches with the label column can train; others are left out and counted.

    Returns:
        ``path`` (None when no new labelled rows exist), ``rows_reference``,
        ``rows_new``, ``batches_used``, ``batches_unlabelled``.
    """
    history = model_history(read_state(cfg), reference)
    ref = pd.read_parquet(reference.reference)
    new, unlabelled = [], 0
    for path in history["streak_batches"]:
        if not path or not Path(path).is_file():
            continue
        frame = pd.read_parquet(path)
        if cfg.data.label not in frame.columns or frame[cfg.data.label].isna().any():
            unlabelled += 1
            continue
        new.append(frame[list(ref.columns)] if set(ref.columns) <= set(frame.columns) else frame)
    out = {"rows_reference": len(ref), "rows_new": int(sum(len(f) for f in new)), "batches_used": len(new),
           "batches_unlabelled": unlabelled, "path": None}
    if not new:
        return out
    combined = pd.concat([ref, *new], ignore_index=True)
    folder = monitor_dir(cfg) / "retrain" / now_utc().strftime("%Y%m%dT%H%M%S%fZ")
    folder.mkdir(parents=True, exist_ok=True)
    combined.to_parquet(folder / "data.parquet", index=False)
    return {**out, "path": str(folder / "data.parquet")}


def record_retraining(cfg: PipelineConfig, reference: Reference, data: dict[str, Any],
                      result: dict[str, Any] | None, error: str | None) -> dict[str, Any]:
    """Note the retraining in the model's history and return its summary entry."""
    entry = {"at": now_utc().isoformat(), "data": data.get("path"), "rows_reference": data["rows_reference"],
             "rows_new": data["rows_new"], "run_id": (result or {}).get("run_id"), "error": error}
    if result:
        entry.update({"model_uri": result["model_uri"], "rows": result["data"]["rows"],
                      "rows_accepted": result["validation"]["rows_accepted"], "registry": result.get("registry")})
    with locked_state(cfg) as state:
        history = model_history(state, reference)
        history["retrained"] = [*history.get("retrained", []), entry][-20:]
        state["models"][reference.model] = history
    return entry
