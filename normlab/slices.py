"""Metrics of parts of a split: per class, and per value of a column (slices).

Keys, for the ID test split: ``id/test/class/<label>/{precision,recall,f1,support}``
and ``id/test/slice/<column>/<value>/{accuracy,f1_macro,rows}``; labels and
values are made safe as one segment of an MLflow metric key (`key_part`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from normlab.bootstrap import count_metric, resampled_counts, safe_divide

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_.\- :]")


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
    precision, recall = safe_divide(tp, predicted), safe_divide(tp, actual)
    f1 = safe_divide(2 * tp, actual + predicted)
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
