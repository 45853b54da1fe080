"""The label-noise check: rows whose label disagrees with most of their nearest neighbours.

In training the neighbours are the batch's other rows (leave-one-out); in
monitoring they are the model's training rows, so the disagreeing share of a
batch does not depend on its size. A one-sided binomial test decides, so a
small batch needs stronger evidence than a large one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from normlab.data.encoding import FLOAT32_MAX, mean_std
from normlab.gate.checks import _check, skipped
from normlab.gate.results import Evaluated

# Query rows per block in the neighbour search: a block's distance matrix stays small.
_KNN_BLOCK = 1024

def knn_disagreement(
    x: np.ndarray,
    y: np.ndarray,
    k: int,
    reference: np.ndarray | None = None,
    reference_labels: np.ndarray | None = None,
) -> np.ndarray:
    """For each row, whether fewer than half of its k nearest neighbours share its label.

    Without ``reference`` the neighbours are the other rows of ``x``
    (leave-one-out). With it, each row of ``x`` is scored against its k
    nearest rows of ``reference`` (labels ``reference_labels``, coded like
    ``y``); a row that also appears in the reference is not excluded.
    Brute-force Euclidean search in blocks, in float32; ties go to the earlier
    reference row.
    """
    own = reference is None
    if own:
        reference, reference_labels = x, y
    elif reference_labels is None:
        raise ValueError("reference_labels are needed with a reference")
    n, m = len(x), len(reference)
    k = min(k, m - 1 if own else m)
    disagree = np.zeros(n, dtype=bool)
    if k < 1 or n == 0:
        return disagree
    x = np.ascontiguousarray(x, dtype=np.float32)  # ranking neighbours needs no more precision; half the memory traffic
    ref = x if own else np.ascontiguousarray(reference, dtype=np.float32)
    ref_y = np.asarray(reference_labels)
    sq = np.einsum("ij,ij->i", ref, ref)
    for start in range(0, n, _KNN_BLOCK):
        stop = min(start + _KNN_BLOCK, n)
        # |a - b|^2 = |a|^2 + |b|^2 - 2ab; |a|^2 is the same along a row, so it cannot change the ranking.
        dist = x[start:stop] @ ref.T
        dist *= -2.0
        dist += sq[None, :]
        rows = np.arange(stop - start)
        if own:
            dist[rows, np.arange(start, stop)] = np.inf  # a row is not its own neighbour
        # k argmin passes beat a partition for small k (and break ties by position).
        agree = np.zeros(stop - start, dtype=np.int64)
        for _ in range(k):
            nearest = dist.argmin(axis=1)
            agree += ref_y[nearest] == y[start:stop]
            dist[rows, nearest] = np.inf
        disagree[start:stop] = agree * 2 < k
    return disagree


def exceeds_share(disagreeing: int, scored: int, max_share: float) -> float:
    """One-sided exact binomial p-value of ``disagreeing`` of ``scored`` if the true share were ``max_share``.

    ``P(X >= disagreeing)`` for ``X ~ Binomial(scored, max_share)``: small when
    the batch shows convincingly more disagreement than ``max_share``.
    """
    from scipy.stats import binom

    if disagreeing <= 0 or scored <= 0:
        return 1.0
    return float(min(1.0, max(0.0, binom.sf(disagreeing - 1, scored, max_share))))


def _numeric(frame: pd.DataFrame, features: Sequence[str]) -> list[str]:
    return [c for c in features if c in frame.columns and pd.api.types.is_numeric_dtype(frame[c].dtype)]


def _sample(labelled: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if labelled.size <= size:
        return labelled
    return np.sort(rng.choice(labelled, size=size, replace=False))


def _standardized(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    # Divided first: values near the float64 limit must not overflow in the subtraction (nor in float32 later).
    scaled = x / std - np.nan_to_num(mean) / std
    return np.clip(np.nan_to_num(scaled), -FLOAT32_MAX, FLOAT32_MAX)


def _matrix(frame: pd.DataFrame, positions: np.ndarray, columns: list[str]) -> np.ndarray:
    x = frame.iloc[positions][columns].to_numpy(dtype=np.float64)  # rows first: never copy the whole frame
    x[~np.isfinite(x)] = np.nan
    return x


def check_label_noise(
    df: pd.DataFrame,
    features: Sequence[str],
    label: str,
    *,
    k: int,
    max_share: float,
    sample_rows: int,
    seed: int,
    confidence: float = 0.95,
    reference: pd.DataFrame | None = None,
) -> Evaluated:
    """The share of rows whose label disagrees with most of their k nearest neighbours.

    Neighbours are found in the standardized numeric features. With a
    ``reference`` (the model's training rows, in monitoring), each batch row
    is scored against its k nearest reference rows, standardized with the
    reference's mean and std, so the share does not depend on the batch's
    size; without one (training), against the batch's other rows. Batches and
    references larger than ``sample_rows`` are cut to seeded samples; only
    scored rows can be flagged. Labels are coded jointly, so a label the
    reference never had disagrees.

    The check fails only when a one-sided exact binomial test says the true
    disagreeing share exceeds ``max_share`` at level ``1 - confidence``: a
    small batch needs stronger evidence than a large one. ``observed`` is the
    share; ``details`` hold the p-value, the rows scored and whether a
    reference was used.
    """
    if label not in df.columns:
        return skipped("label_noise", f"no label column {label!r}")
    numeric = _numeric(df, features)
    if not numeric:
        return skipped("label_noise", "no numeric features")
    labelled = np.flatnonzero(df[label].notna().to_numpy())
    rng = np.random.default_rng(seed)
    details: dict[str, Any] = {"k": k, "max_share": max_share, "confidence": confidence}
    ref_positions = None
    if reference is not None:
        shared = _numeric(reference, numeric) if label in reference.columns else []
        ref_labelled = np.flatnonzero(reference[label].notna().to_numpy()) if shared else np.empty(0, np.int64)
        if not shared:
            details["reference_skipped"] = "the reference lacks the label or the numeric features"
        elif ref_labelled.size < k:
            details["reference_skipped"] = f"{ref_labelled.size} labelled reference rows, k={k}"
        else:
            numeric = shared
            ref_positions = _sample(ref_labelled, sample_rows, np.random.default_rng([seed, 1]))
    if labelled.size == 0 or (ref_positions is None and labelled.size <= k):
        return skipped("label_noise", f"{labelled.size} labelled rows, k={k}")
    positions = _sample(labelled, sample_rows, rng)
    x = _matrix(df, positions, numeric)
    batch_labels = df[label].iloc[positions].to_numpy(dtype=object)
    if ref_positions is None:
        mean, std = mean_std(x)
        y = pd.factorize(batch_labels)[0]
        disagree = knn_disagreement(_standardized(x, mean, std), y, k)
    else:
        r = _matrix(reference, ref_positions, numeric)
        mean, std = mean_std(r)
        ref_labels = reference[label].iloc[ref_positions].to_numpy(dtype=object)
        codes = pd.factorize(np.concatenate([batch_labels, ref_labels]))[0]
        disagree = knn_disagreement(_standardized(x, mean, std), codes[: positions.size], k,
                                    _standardized(r, mean, std), codes[positions.size:])
        details["reference_rows"] = int(ref_positions.size)
    flagged = int(disagree.sum())
    share = flagged / positions.size
    p_value = exceeds_share(flagged, int(positions.size), max_share)
    details.update({"scored_rows": int(positions.size), "disagreeing_rows": flagged,
                    "p_value": round(p_value, 6), "reference_used": ref_positions is not None})
    rows = positions[disagree].astype(np.int64)
    return _check("label_noise", p_value >= 1.0 - confidence, scope="rows", rows=rows, observed=round(share, 6),
                  details=details)
