"""The bootstrap: confusion counts of resampled rows, count metrics of each resample, and intervals.

Resampling works on confusion counts, so one vectorized pass gives every
resample of accuracy, macro F1, precision and recall; splits made from the same
rows (corrupted copies of the ID test split) are resampled with the same row
indices, and a paired comparison of two models resamples both with the same
indices too.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence

import numpy as np

# Metrics that are functions of the confusion counts: they can be bootstrapped and compared.
COUNT_METRICS = ("accuracy", "f1_macro", "precision_macro", "recall_macro")
# Metrics reported with an interval.
HEADLINE = ("accuracy", "f1_macro")
# Resampled row indices held in memory at once (int64): bounds memory on large splits.
_MAX_INDEX_CELLS = 4_000_000


def resampled_counts(y: np.ndarray, pred: np.ndarray, idx: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion counts of each resample.

    Args:
        y: True class indices, shape (n,).
        pred: Predicted class indices, shape (n,); anything outside
            ``0..n_classes-1`` (a class the model does not know) counts as wrong.
        idx: Row indices of each resample, shape (b, n).
        n_classes: Number of classes k.

    Returns:
        Counts of shape (b, k, k + 1): true class by predicted class, the last
        column holding predictions of unknown classes.
    """
    k = n_classes
    known = np.where((pred >= 0) & (pred < k), pred, k)
    cells = (np.asarray(y, dtype=np.int64) * (k + 1) + known)[idx]
    b = idx.shape[0]
    offsets = (np.arange(b, dtype=np.int64) * k * (k + 1))[:, None]
    flat = np.bincount((cells + offsets).ravel(), minlength=b * k * (k + 1))
    return flat.reshape(b, k, k + 1)


def metric_from_counts(counts: np.ndarray, name: str) -> np.ndarray:
    """A count metric of each confusion table (b, k, k+1), matching scikit-learn's macro averages."""
    k = counts.shape[1]
    tp = np.diagonal(counts[:, :, :k], axis1=1, axis2=2).astype(np.float64)
    total = counts.sum(axis=(1, 2)).astype(np.float64)
    if name == "accuracy":
        return tp.sum(axis=1) / np.maximum(total, 1)
    actual = counts.sum(axis=2).astype(np.float64)
    predicted = counts[:, :, :k].sum(axis=1).astype(np.float64)
    if name == "recall_macro":
        per_class = safe_divide(tp, actual)
    elif name == "precision_macro":
        per_class = safe_divide(tp, predicted)
    elif name == "f1_macro":
        per_class = safe_divide(2 * tp, actual + predicted)
    else:
        raise ValueError(f"{name!r} is not a count metric; known: {', '.join(COUNT_METRICS)}")
    return per_class.mean(axis=1)


def safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0 (scikit-learn's zero_division=0)."""
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def count_metric(y: np.ndarray, pred: np.ndarray, name: str, *, n_classes: int) -> float:
    """One count metric on all rows (the point estimate the resamples scatter around)."""
    idx = np.arange(len(y), dtype=np.int64)[None, :]
    return float(metric_from_counts(resampled_counts(y, pred, idx, n_classes), name)[0])


def _index_chunks(n: int, samples: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Resampled row indices, ``samples`` rows of ``n`` in total, a bounded block at a time."""
    block = max(1, _MAX_INDEX_CELLS // max(n, 1))
    for start in range(0, samples, block):
        yield rng.integers(0, n, size=(min(block, samples - start), n))


def population_rng(seed: int, population: str) -> np.random.Generator:
    """A generator fixed by the seed and the population's name (same run, same resamples)."""
    return np.random.default_rng([seed, zlib.crc32(population.encode("utf-8"))])


def bootstrap(
    labels: dict[str, np.ndarray],
    predictions: dict[str, Sequence[np.ndarray]],
    *,
    n_classes: int,
    metrics: Sequence[str] = HEADLINE,
    samples: int = 1000,
    seed: int = 0,
    populations: dict[str, str] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Resample every split's rows and score each model's predictions on each resample.

    Args:
        labels: Split key to true class indices.
        predictions: Split key to one or more models' predicted class indices;
            the models are resampled with the same rows (a paired bootstrap).
        n_classes: Number of classes.
        metrics: Count metrics to compute (see `COUNT_METRICS`).
        samples: Resamples per split.
        seed: With the population name, fixes the resamples.
        populations: Split key to the name of the rows it is made of; splits of
            the same population (corrupted copies of ``id/test``) share resamples.
            Default: every split is its own population.

    Returns:
        Split key to metric to an array of shape (models, samples).
    """
    populations = populations or {}
    by_population: dict[str, list[str]] = {}
    for key in predictions:
        by_population.setdefault(populations.get(key, key), []).append(key)
    out: dict[str, dict[str, np.ndarray]] = {}
    for population, keys in by_population.items():
        sizes = {len(labels[k]) for k in keys}
        if len(sizes) != 1:
            raise ValueError(f"splits {keys} share population {population!r} but differ in rows: {sorted(sizes)}")
        n = sizes.pop()
        if n == 0:
            continue
        # parts[key][metric][model]: the resample scores, one block of resamples at a time.
        parts = {k: {m: [[] for _ in predictions[k]] for m in metrics} for k in keys}
        for idx in _index_chunks(n, samples, population_rng(seed, population)):
            for key in keys:
                for i, pred in enumerate(predictions[key]):
                    counts = resampled_counts(labels[key], pred, idx, n_classes)
                    for name in metrics:
                        parts[key][name][i].append(metric_from_counts(counts, name))
        for key in keys:
            out[key] = {name: np.stack([np.concatenate(blocks) for blocks in per_model])
                        for name, per_model in parts[key].items()}
    return out


def interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap samples."""
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)

