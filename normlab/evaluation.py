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

Intervals come from `normlab.bootstrap` (resampled confusion counts), the
per-class and slice metrics from `normlab.slices`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix
from torch import nn

from normlab.bootstrap import COUNT_METRICS, HEADLINE, bootstrap, interval, metric_from_counts, resampled_counts
from normlab.config import EvalConfig
from normlab.norms import has_batch_stats
from normlab.slices import per_class_metrics, slice_metrics

METRICS = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "ece", "nll")
MEAN = "ood/mean"
# A leaf OOD split key: ood/<name> or ood/<name>/s<k>.
_OOD_LEAF = re.compile(r"ood/(?P<name>[^/]+)(?:/s(?P<level>\d+))?")


@torch.no_grad()
def predict_proba(model: nn.Module, x: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    """Class probabilities of ``model`` in eval mode, as float64."""
    model.eval()
    # Chunk by chunk: a memory-mapped split (over data.memory_budget_mb) is read a batch at a time.
    # Softmax in float64 so probabilities sum to one within sklearn's tolerance.
    chunks = [torch.softmax(model(_rows(x, i, batch_size)).double(), dim=1) for i in range(0, len(x), batch_size)]
    if not chunks:
        return np.zeros((0, 0))
    return torch.cat(chunks).numpy()


def _rows(x: np.ndarray, start: int, size: int) -> torch.Tensor:
    """Rows ``start:start+size`` as a float32 tensor (a view of an in-memory array; a copy of a memory map)."""
    part = x[start : start + size]
    return torch.as_tensor(np.array(part) if isinstance(part, np.memmap) else part, dtype=torch.float32)


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
    for key in sorted({k.split("/adapted/")[0] for k in out}):  # sorted: the same key order in every process
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


def confusion(model: nn.Module, x: np.ndarray, y: np.ndarray, *, n_classes: int) -> np.ndarray:
    """Confusion matrix (rows: true class, columns: predicted)."""
    pred = predict_proba(model, x).argmax(axis=1)
    return confusion_matrix(y, pred, labels=np.arange(n_classes))
