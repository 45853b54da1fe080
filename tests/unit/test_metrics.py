"""Per-split metrics: values on known inputs and the namespaced shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from normlab.evaluation import classification_metrics, evaluate_splits, expected_calibration_error, ood_summary


def test_perfect_confident_predictions():
    y = np.array([0, 1, 2, 1])
    proba = np.eye(3)[y]
    m = classification_metrics(y, proba, n_classes=3)
    assert m["accuracy"] == 1.0 and m["f1_macro"] == 1.0
    assert m["ece"] == pytest.approx(0.0)
    assert m["nll"] == pytest.approx(0.0, abs=1e-9)


def test_ece_of_overconfident_wrong_predictions():
    y = np.array([0, 0, 0, 0])
    proba = np.tile([0.1, 0.9], (4, 1))  # always 90% sure of the wrong class
    assert expected_calibration_error(y, proba, n_bins=10) == pytest.approx(0.9)


def test_macro_metrics_count_absent_classes():
    y = np.array([0, 0, 1, 1])
    proba = np.eye(3)[np.array([0, 0, 1, 0])]
    m = classification_metrics(y, proba, n_classes=3)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["recall_macro"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)


def test_evaluate_splits_namespaces_and_drop():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.as_tensor(x)).argmax(1).numpy()
    flipped = 1 - y
    metrics = evaluate_splits(model, {"id/test": (x, y), "ood/flip": (x, flipped)}, n_classes=2)
    assert metrics["id/test/accuracy"] == 1.0
    assert metrics["ood/flip/accuracy"] == 0.0
    assert metrics["ood/flip/accuracy_drop"] == 1.0
    assert metrics["ood/mean/accuracy"] == 0.0
    assert metrics["id/test/rows"] == 50


def test_ood_summary_means_over_splits():
    m = {"id/test/accuracy": 0.9, "ood/a/accuracy": 0.8, "ood/b/accuracy": 0.6}
    out = ood_summary(m)
    assert out["ood/a/accuracy_drop"] == pytest.approx(0.1)
    assert out["ood/mean/accuracy"] == pytest.approx(0.7)
