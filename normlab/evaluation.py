"""Metrics per split in one namespaced shape, with bootstrap intervals and slices.

Every split (``id/test`` and ``ood/<name>``) gets the same metrics: accuracy,
macro F1, macro precision and recall, expected calibration error and negative
log-likelihood. The result is one flat dict used unchanged in MLflow, the
summary JSON and reports. Keys, for a split ``S``:

- ``S/<metric>`` and ``S/rows``; OOD splits also ``S/accuracy_drop`` (ID test
  accuracy minus the split's);
- ``S/accuracy_ci_low``, ``S/accuracy_ci_high`` (and the same for ``f1_macro``):
  percentile bootstrap interval over the split's rows;
- an OOD split listed with several severities is a group: its splits are
  ``ood/<name>/s<k>`` and ``ood/<name>/<metric>`` is their mean;
- ``ood/mean/<metric>``: the mean over the configured OOD splits (a group
  counts once, with its mean), with an interval;
- ``S/adapted/<metric>`` and ``S/adapted/accuracy_gain``: the same split scored
  with BatchNorm statistics re-estimated on it (BatchNorm models only);
- ``id/test/class/<label>/{precision,recall,f1,support}`` and
  ``id/test/slice/<column>/<value>/{accuracy,f1_macro,rows}``.

Resampling works on confusion counts, so one vectorized pass gives every
resample of accuracy, macro F1, precision and recall; splits made from the same
rows (corrupted copies of the ID test split) are resampled with the same row
indices, and a paired comparison of two models resamples both with the same
indices too.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix
from torch import nn

from normlab.config import EvalConfig
from normlab.norms import has_batch_stats

METRICS = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "ece", "nll")
# Metrics that are functions of the confusion counts: they can be bootstrapped and compared.
COUNT_METRICS = ("accuracy", "f1_macro", "precision_macro", "recall_macro")
# Metrics reported with an interval.
HEADLINE = ("accuracy", "f1_macro")
MEAN = "ood/mean"
# Resampled row indices held in memory at once (int64): bounds memory on large splits.
_MAX_INDEX_CELLS = 4_000_000
# A leaf OOD split key: ood/<name> or ood/<name>/s<k>.
_OOD_LEAF = re.compile(r"ood/(?P<name>[^/]+)(?:/s(?P<level>\d+))?")
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_.\- :]")


@torch.no_grad()
def predict_proba(model: nn.Module, x: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    """Class probabilities of ``model`` in eval mode, as float64."""
    model.eval()
    xt = torch.as_tensor(x, dtype=torch.float32)
    # Softmax in float64 so probabilities sum to one within sklearn's tolerance.
    chunks = [torch.softmax(model(xt[i : i + batch_size]).double(), dim=1) for i in range(0, len(xt), batch_size)]
    if not chunks:
        return np.zeros((0, 0))
    return torch.cat(chunks).numpy()


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, *, n_bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017)."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    # Bin i holds confidences in (edge_i, edge_{i+1}]; a confidence of 0 joins bin 0.
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(bins, weights=correct.astype(float), minlength=n_bins)
    nonempty = counts > 0
    gaps = np.abs(acc_sum[nonempty] - conf_sum[nonempty])
    return float(gaps.sum() / max(len(y), 1))


def classification_metrics(y: np.ndarray, proba: np.ndarray, *, n_classes: int, ece_bins: int = 15) -> dict[str, float]:
    """The standard metric set for one split."""
    if len(y) == 0:
        raise ValueError("cannot score an empty split")
    pred = proba.argmax(axis=1)
    # One confusion table gives the count metrics; they equal scikit-learn's macro
    # averages over all classes with zero_division=0 (tested), at a fraction of the cost.
    counts = resampled_counts(y, pred, np.arange(len(y), dtype=np.int64)[None, :], n_classes)
    out = {name: float(metric_from_counts(counts, name)[0]) for name in COUNT_METRICS}
    # Clipped, then renormalized per row, as scikit-learn's log_loss does.
    clipped = np.clip(proba, 1e-12, 1.0)
    clipped /= clipped.sum(axis=1, keepdims=True)
    out["ece"] = expected_calibration_error(y, proba, n_bins=ece_bins)
    out["nll"] = float(-np.log(clipped[np.arange(len(y)), y]).mean())
    return out


# Bootstrap ------------------------------------------------------------------------------


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
        per_class = _safe_divide(tp, actual)
    elif name == "precision_macro":
        per_class = _safe_divide(tp, predicted)
    elif name == "f1_macro":
        per_class = _safe_divide(2 * tp, actual + predicted)
    else:
        raise ValueError(f"{name!r} is not a count metric; known: {', '.join(COUNT_METRICS)}")
    return per_class.mean(axis=1)


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
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


# OOD groups and aggregates --------------------------------------------------------------


def ood_groups(keys: Sequence[str]) -> dict[str, list[str]]:
    """Configured OOD split (``ood/<name>``) to its leaf splits (itself, or its severities)."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        if _is_ood_leaf(key):
            groups.setdefault(f"ood/{_OOD_LEAF.fullmatch(key)['name']}", []).append(key)
    return groups


def aggregate(leaves: dict[str, np.ndarray | float]) -> dict[str, np.ndarray | float]:
    """Group means (``ood/<name>`` over its severities) and ``ood/mean`` over the groups.

    Works on point values and on bootstrap samples alike; leaves come back too.
    """
    out: dict[str, np.ndarray | float] = dict(leaves)
    groups = ood_groups(list(leaves))
    means = []
    for group, members in groups.items():
        if members != [group]:
            out[group] = np.mean([leaves[m] for m in members], axis=0)
        means.append(out[group])
    if means:
        out[MEAN] = np.mean(means, axis=0)
    return out


def ood_summary(metrics: dict[str, float], *, reference: str = "id/test") -> dict[str, float]:
    """Severity-group means, ``ood/mean`` and the accuracy drop of every OOD split and aggregate.

    Args:
        metrics: Flat metrics of the leaf splits (``ood/<name>/<metric>``,
            ``ood/<name>/s<k>/<metric>``) and of ``reference``.
        reference: The split drops are measured against.
    """
    out: dict[str, float] = {}
    leaves = sorted({split for split in (k.rsplit("/", 1)[0] for k in metrics) if _is_ood_leaf(split)})
    for name in METRICS:
        values = {k: metrics[f"{k}/{name}"] for k in leaves if f"{k}/{name}" in metrics}
        for key, value in aggregate(values).items():
            if key not in values:
                out[f"{key}/{name}"] = float(value)
    ref = metrics.get(f"{reference}/accuracy")
    if ref is not None:
        merged = {**metrics, **out}
        for key in [*leaves, *sorted({k.rsplit("/", 1)[0] for k in out})]:
            if f"{key}/accuracy" in merged:
                out[f"{key}/accuracy_drop"] = ref - merged[f"{key}/accuracy"]
    return out


def _is_ood_leaf(split: str) -> bool:
    match = _OOD_LEAF.fullmatch(split)
    return bool(match) and match["name"] != "mean"


# Scoring ----------------------------------------------------------------------------------


def summarize_predictions(
    labels: dict[str, np.ndarray],
    probas: dict[str, np.ndarray],
    *,
    n_classes: int,
    ece_bins: int = 15,
    reference: str = "id/test",
    bootstrap_samples: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
    populations: dict[str, str] | None = None,
) -> dict[str, float]:
    """Metrics, aggregates and intervals of every split from its predicted probabilities.

    Args:
        labels: Split key to true class indices.
        probas: Split key to predicted probabilities (rows x classes).
        n_classes: Number of classes.
        ece_bins: Bins for the calibration error.
        reference: The split OOD drops are measured against.
        bootstrap_samples: Resamples for the intervals (0: none).
        confidence: Coverage of the intervals.
        seed: Fixes the resamples.
        populations: See `bootstrap`.
    """
    out: dict[str, float] = {}
    scored = [k for k in probas if len(labels[k])]
    for key in scored:
        for name, value in classification_metrics(labels[key], probas[key], n_classes=n_classes,
                                                  ece_bins=ece_bins).items():
            out[f"{key}/{name}"] = value
        out[f"{key}/rows"] = float(len(labels[key]))
    out.update(ood_summary(out, reference=reference))
    for group, members in ood_groups(scored).items():
        if members != [group]:
            out[f"{group}/rows"] = float(sum(len(labels[m]) for m in members))
    if bootstrap_samples > 0 and scored:
        preds = {k: [probas[k].argmax(axis=1)] for k in scored}
        samples = bootstrap(labels, preds, n_classes=n_classes, metrics=HEADLINE, samples=bootstrap_samples,
                            seed=seed, populations=populations)
        for name in HEADLINE:
            for key, values in aggregate({k: s[name][0] for k, s in samples.items()}).items():
                low, high = interval(np.asarray(values), confidence)
                out[f"{key}/{name}_ci_low"], out[f"{key}/{name}_ci_high"] = low, high
    return out


def evaluate_splits(
    model: nn.Module,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    n_classes: int,
    ece_bins: int = 15,
    batch_size: int = 512,
    reference: str = "id/test",
    bootstrap_samples: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
    populations: dict[str, str] | None = None,
) -> dict[str, float]:
    """Score every split, the OOD aggregates and drops, and (optionally) intervals.

    Args:
        model: A trained model.
        splits: Split key (``id/test``, ``ood/<name>``, ``ood/<name>/s<k>``) to features and labels.
        n_classes: Number of classes (for macro averages over all classes).
        ece_bins: Bins for the calibration error.
        batch_size: Inference batch size.
        reference: The split OOD drops are measured against.
        bootstrap_samples: Resamples for the intervals (0: none).
        confidence: Coverage of the intervals.
        seed: Fixes the resamples.
        populations: See `bootstrap`.

    Returns:
        Flat namespaced metrics, e.g. ``ood/noise/accuracy_drop``.
    """
    probas = {k: predict_proba(model, x, batch_size=batch_size) for k, (x, y) in splits.items() if len(y)}
    labels = {k: y for k, (_, y) in splits.items() if len(y)}
    return summarize_predictions(labels, probas, n_classes=n_classes, ece_bins=ece_bins, reference=reference,
                                 bootstrap_samples=bootstrap_samples, confidence=confidence, seed=seed,
                                 populations=populations)


def adapted_metrics(
    model: nn.Module,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    plain: dict[str, float],
    *,
    n_classes: int,
    ece_bins: int = 15,
    batch_size: int = 512,
) -> dict[str, float]:
    """Score each OOD split with BatchNorm statistics re-estimated on that split (AdaBN).

    Args:
        model: A trained model with BatchNorm layers (left unchanged).
        splits: OOD split key to features and labels.
        plain: The plain metrics of the same splits (for the gains).
        n_classes: Number of classes.
        ece_bins: Bins for the calibration error.
        batch_size: Batch size of the statistics pass and of scoring.

    Returns:
        ``<split>/adapted/<metric>`` and ``<split>/adapted/accuracy_gain`` for
        every split, severity group and ``ood/mean``.
    """
    from normlab.inference import adapt_batchnorm

    leaves: dict[str, dict[str, float]] = {}
    for key, (x, y) in splits.items():
        # One row has no batch statistics to re-estimate.
        if len(y) >= 2:
            adapted = adapt_batchnorm(model, x, batch_size=batch_size)
            proba = predict_proba(adapted, x, batch_size=batch_size)
            leaves[key] = classification_metrics(y, proba, n_classes=n_classes, ece_bins=ece_bins)
    out: dict[str, float] = {}
    for name in METRICS:
        for key, value in aggregate({k: m[name] for k, m in leaves.items()}).items():
            out[f"{key}/adapted/{name}"] = float(value)
    for key in {k.split("/adapted/")[0] for k in out}:
        if f"{key}/accuracy" in plain:
            out[f"{key}/adapted/accuracy_gain"] = out[f"{key}/adapted/accuracy"] - plain[f"{key}/accuracy"]
    return out


def evaluate_run(
    model: nn.Module,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    classes: Sequence[object],
    settings: EvalConfig,
    seed: int = 0,
    populations: dict[str, str] | None = None,
    frames: dict[str, pd.DataFrame] | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Everything the evaluation stage reports for one model.

    Args:
        model: The trained model.
        splits: ``id/test`` and the OOD splits: features and labels.
        classes: Class labels in index order.
        settings: The ``eval`` config section.
        seed: Fixes the bootstrap resamples.
        populations: Splits made of the same rows (see `bootstrap`).
        frames: Raw rows of each split (needed for ``settings.slices``).

    Returns:
        The flat metrics, and each split's predicted class indices.
    """
    n_classes = len(classes)
    probas = {k: predict_proba(model, x, batch_size=settings.batch_size) for k, (x, y) in splits.items() if len(y)}
    labels = {k: splits[k][1] for k in probas}
    metrics = summarize_predictions(labels, probas, n_classes=n_classes, ece_bins=settings.ece_bins,
                                    bootstrap_samples=settings.bootstrap_samples, confidence=settings.confidence,
                                    seed=seed, populations=populations)
    predictions = {k: p.argmax(axis=1) for k, p in probas.items()}
    if "id/test" in predictions and settings.per_class:
        metrics.update(per_class_metrics(labels["id/test"], predictions["id/test"], classes, prefix="id/test"))
    if "id/test" in predictions and settings.slices:
        if frames is None or "id/test" not in frames:
            raise ValueError("eval.slices needs the raw rows of the ID test split")
        for column in settings.slices:
            metrics.update(slice_metrics(labels["id/test"], predictions["id/test"], frames["id/test"][column],
                                         column=column, n_classes=n_classes, max_values=settings.max_slice_values))
    if settings.adapt_batchnorm and has_batch_stats(model):
        ood = {k: v for k, v in splits.items() if k.startswith("ood/")}
        metrics.update(adapted_metrics(model, ood, metrics, n_classes=n_classes, ece_bins=settings.ece_bins,
                                       batch_size=settings.batch_size))
    return metrics, predictions


# Slices -----------------------------------------------------------------------------------


def key_part(value: object, *, limit: int = 60) -> str:
    """A value as one segment of an MLflow metric key (unsafe characters become '_')."""
    text = "<NA>" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
    return _KEY_UNSAFE.sub("_", text)[:limit] or "_"


def per_class_metrics(y: np.ndarray, pred: np.ndarray, classes: Sequence[object], *, prefix: str) -> dict[str, float]:
    """Precision, recall, F1 and support of every class (``<prefix>/class/<label>/...``)."""
    k = len(classes)
    counts = resampled_counts(y, pred, np.arange(len(y), dtype=np.int64)[None, :], k)[0]
    tp = np.diag(counts[:, :k]).astype(np.float64)
    actual = counts.sum(axis=1).astype(np.float64)
    predicted = counts[:, :k].sum(axis=0).astype(np.float64)
    precision, recall = _safe_divide(tp, predicted), _safe_divide(tp, actual)
    f1 = _safe_divide(2 * tp, actual + predicted)
    out: dict[str, float] = {}
    for i, cls in enumerate(classes):
        base = f"{prefix}/class/{key_part(cls)}"
        out.update({f"{base}/precision": float(precision[i]), f"{base}/recall": float(recall[i]),
                    f"{base}/f1": float(f1[i]), f"{base}/support": float(actual[i])})
    return out


def slice_metrics(
    y: np.ndarray,
    pred: np.ndarray,
    values: pd.Series,
    *,
    column: str,
    n_classes: int,
    max_values: int = 20,
    prefix: str = "id/test",
) -> dict[str, float]:
    """Accuracy, macro F1 and rows for each of the most frequent values of a column.

    Args:
        y: True class indices of the split's rows.
        pred: Predicted class indices of the same rows.
        values: The column's raw values for the same rows (missing values form
            their own slice, ``<NA>``).
        column: The column's name (for the keys).
        n_classes: Number of classes.
        max_values: Slices kept: the most frequent values (ties by value order).
        prefix: The split's key.

    Returns:
        ``<prefix>/slice/<column>/<value>/{accuracy,f1_macro,rows}``.
    """
    text = values.astype(object).where(values.notna(), None).map(key_part).to_numpy()
    names, counts = np.unique(text, return_counts=True)
    order = sorted(range(len(names)), key=lambda i: (-counts[i], names[i]))[:max_values]
    out: dict[str, float] = {}
    for i in order:
        rows = text == names[i]
        base = f"{prefix}/slice/{key_part(column)}/{names[i]}"
        out[f"{base}/accuracy"] = count_metric(y[rows], pred[rows], "accuracy", n_classes=n_classes)
        out[f"{base}/f1_macro"] = count_metric(y[rows], pred[rows], "f1_macro", n_classes=n_classes)
        out[f"{base}/rows"] = float(rows.sum())
    return out


def confusion(model: nn.Module, x: np.ndarray, y: np.ndarray, *, n_classes: int) -> np.ndarray:
    """Confusion matrix (rows: true class, columns: predicted)."""
    pred = predict_proba(model, x).argmax(axis=1)
    return confusion_matrix(y, pred, labels=np.arange(n_classes))
