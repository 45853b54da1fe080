"""The split audit: evaluation rows that leak training content, and the index of evaluation rows.

A passing split records its evaluation rows (hashes) under
``<workdir>/gate/<name>/evaluation/``; later batches' ``contamination``
check reads them back.

For a batch of image files the rows split and indexed are the decoded pixel
rows (``pixels.parquet``: the files' manifest columns are not part of them), so
an image run's index identifies its evaluation images by their pixels, at its
``data.image_shape`` and mode: what training reads, whatever the file's name
or encoding. The check on a later image batch decodes its files the same way
(`normlab.gate.image_checks.check_contamination`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

import normlab.gate.checks as ck
from normlab import tracking
from normlab.contracts import Batch, Splits
from normlab.errors import DataValidationError
from normlab.gate.check_registry import CHECKS, SplitHashes
from normlab.gate.contracts import LeakageAudit
from normlab.gate.quarantine import write_parquet
from normlab.gate.scope import GateScope
from normlab.tracking import TrackingStore


def read_evaluation_index(folder: Path) -> pd.DataFrame | None:
    """Every run's evaluation rows (``feature_hash``, ``row_hash``, ``salt``), or None if none."""
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return None
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True).drop_duplicates()


def check_splits(
    scope: GateScope, batch: Batch, prepared: Splits, run_dir: str | Path,
    *, store: TrackingStore | None = None, run_id: str | None = None,
) -> LeakageAudit:
    """After the split: block evaluation rows that leak training content, then index them.

    Training rows are the rows of ``prepared.reference``; since splits hash
    whole rows, a batch row identical to a training row is a training row, so
    every other row is an evaluation row. Once the check passes, this run's
    evaluation rows are recorded for later batches' contamination check.
    With ``store`` and ``run_id``, the result is logged to that MLflow run.

    Returns:
        The `LeakageAudit`: the leakage check's record and the number of evaluation rows recorded.

    Raises:
        DataValidationError: Leakage above ``gate.leakage.max_share`` with severity ``block``.
        ValueError: One of ``store`` and ``run_id`` without the other.
    """
    from normlab.data.fingerprint import row_hashes

    if (store is None) != (run_id is None):
        raise ValueError("check_splits: logging to a run needs both its store and its run_id")

    run_dir = Path(run_dir)
    leakage = CHECKS["leakage"]  # the split stage's check
    setting = leakage.settings(scope.gate)
    if setting.severity == "off":
        return LeakageAudit(leakage=ck.off_result("leakage").result.record(), evaluation_rows=0)
    frame = pd.read_parquet(batch.path)
    train = pd.read_parquet(prepared.reference)
    salt = scope.salt
    rows = row_hashes(frame, salt=salt)
    is_train = np.isin(rows, row_hashes(train, salt=salt))
    features = ck.content_hashes(frame, prepared.features)
    evaluated = leakage.evaluate(SplitHashes(train=features[is_train], evaluation=features[~is_train]), setting)
    result = evaluated.result
    result.severity = setting.severity
    result.outcome = ck.outcome_of(result, setting.severity)
    record = result.record()
    (run_dir / "leakage.json").write_text(json.dumps(record.model_dump(), indent=1, default=str), encoding="utf-8")
    if store is not None:
        tracking.log_metrics(store, run_id, {"gate/leakage_share": float(result.observed),
                                             "gate/leaked_rows": result.details["leaked_rows"]})
        tracking.log_artifact(store, run_id, run_dir / "leakage.json", "validation")
    if result.outcome == "blocked":
        raise DataValidationError(
            f"split leaks: {result.details['leaked_rows']} of {result.details['evaluation_rows']} evaluation rows "
            f"share their features with training rows (share {result.observed} > {setting.max_share}); "
            "deduplicate the features or set gate.leakage", report=record.model_dump(),
        )
    index = pd.DataFrame({"feature_hash": features[~is_train], "row_hash": rows[~is_train], "salt": salt})
    # Named by content: the runs and sweep points that make the same split share one file.
    digest = hashlib.sha256(pd.util.hash_pandas_object(index, index=False).to_numpy().tobytes()).hexdigest()
    path = scope.evaluation_index / f"{digest[:20]}.parquet"
    if not path.exists():
        write_parquet(index, path)
    return LeakageAudit(leakage=record, evaluation_rows=len(index))
