"""Metrics per split in one namespaced shape.

Every split (``id/test`` and ``ood/<name>``) gets the same metrics: accuracy,
macro F1, macro precision and recall, expected calibration error and negative
log-likelihood. The result is one flat dict (``id/test/accuracy``,
``ood/noise/accuracy``, ``ood/noise/accuracy_drop``, ``ood/mean/accuracy``)
used unchanged in MLflow, the summary JSON and reports.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score, log_loss, precision_score, recall_score
from torch import nn

METRICS = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "ece", "nll")


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
    labels = np.arange(n_classes)
    return {
        "accuracy": float((pred == y).mean()),
        "f1_macro": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "precision_macro": float(precision_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "recall_macro": float(recall_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "ece": expected_calibration_error(y, proba, n_bins=ece_bins),
        "nll": float(log_loss(y, np.clip(proba, 1e-12, 1.0), labels=labels)),
    }


def evaluate_splits(
    model: nn.Module,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    n_classes: int,
    ece_bins: int = 15,
    batch_size: int = 512,
    reference: str = "id/test",
) -> dict[str, float]:
    """Score every split and the ID-to-OOD drop.

    Args:
        model: A trained model.
        splits: Split key (``id/test``, ``ood/<name>``) to features and labels.
        n_classes: Number of classes (for macro averages over all classes).
        ece_bins: Bins for the calibration error.
        batch_size: Inference batch size.
        reference: The split OOD drops are measured against.

    Returns:
        Flat namespaced metrics, e.g. ``ood/noise/accuracy_drop``.
    """
    out: dict[str, float] = {}
    for key, (x, y) in splits.items():
        if len(y) == 0:
            continue
        proba = predict_proba(model, x, batch_size=batch_size)
        for name, value in classification_metrics(y, proba, n_classes=n_classes, ece_bins=ece_bins).items():
            out[f"{key}/{name}"] = value
        out[f"{key}/rows"] = float(len(y))
    out.update(ood_summary(out, reference=reference))
    return out


def ood_summary(metrics: dict[str, float], *, reference: str = "id/test") -> dict[str, float]:
    """Per-OOD-split accuracy drop and the mean over OOD splits."""
    out: dict[str, float] = {}
    ood_keys = sorted({k.rsplit("/", 1)[0] for k in metrics if k.startswith("ood/") and not k.startswith("ood/mean/")})
    ref = metrics.get(f"{reference}/accuracy")
    for key in ood_keys:
        if ref is not None and f"{key}/accuracy" in metrics:
            out[f"{key}/accuracy_drop"] = ref - metrics[f"{key}/accuracy"]
    if ood_keys:
        for name in METRICS:
            values = [metrics[f"{k}/{name}"] for k in ood_keys if f"{k}/{name}" in metrics]
            if values:
                out[f"ood/mean/{name}"] = float(np.mean(values))
        if ref is not None and "ood/mean/accuracy" in out:
            out["ood/mean/accuracy_drop"] = ref - out["ood/mean/accuracy"]
    return out


def confusion(model: nn.Module, x: np.ndarray, y: np.ndarray, *, n_classes: int) -> np.ndarray:
    """Confusion matrix (rows: true class, columns: predicted)."""
    pred = predict_proba(model, x).argmax(axis=1)
    return confusion_matrix(y, pred, labels=np.arange(n_classes))
