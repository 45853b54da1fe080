"""The evaluation suite: count metrics, bootstrap intervals, OOD groups, slices and AdaBN."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score, log_loss, precision_score, recall_score

from normlab.bootstrap import bootstrap, count_metric, interval
from normlab.config import EvalConfig
from normlab.evaluation import adapted_metrics, aggregate, classification_metrics, evaluate_run, evaluate_splits
from normlab.slices import key_part, per_class_metrics, slice_metrics


def _random_case(seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 12))
    n = int(rng.integers(1, 300))
    y = rng.integers(0, k, n)
    proba = rng.dirichlet(np.full(k, 0.3), n)
    if seed % 3 == 0:  # a class nobody predicts
        proba[:, 0] = 0.0
        proba /= proba.sum(axis=1, keepdims=True)
    return y, proba, k


@pytest.mark.parametrize("seed", range(30))
def test_count_metrics_equal_scikit_learn(seed):
    y, proba, k = _random_case(seed)
    pred, labels = proba.argmax(axis=1), np.arange(k)
    ours = classification_metrics(y, proba, n_classes=k)
    assert ours["f1_macro"] == pytest.approx(f1_score(y, pred, labels=labels, average="macro", zero_division=0))
    assert ours["precision_macro"] == pytest.approx(
        precision_score(y, pred, labels=labels, average="macro", zero_division=0))
    assert ours["recall_macro"] == pytest.approx(recall_score(y, pred, labels=labels, average="macro", zero_division=0))
    assert ours["nll"] == pytest.approx(log_loss(y, np.clip(proba, 1e-12, 1.0), labels=labels))


def test_unknown_predictions_count_as_wrong():
    y = np.array([0, 1, 1, 2])
    pred = np.array([0, -1, 1, 2])  # -1: a class the scoring model does not know
    assert count_metric(y, pred, "accuracy", n_classes=3) == pytest.approx(0.75)
    assert count_metric(y, pred, "recall_macro", n_classes=3) == pytest.approx((1 + 0.5 + 1) / 3)
    assert count_metric(y, pred, "precision_macro", n_classes=3) == pytest.approx(1.0)


def test_bootstrap_interval_brackets_the_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    pred = np.where(rng.random(400) < 0.8, y, (y + 1) % 3)
    first = bootstrap({"s": y}, {"s": [pred]}, n_classes=3, samples=500, seed=7)["s"]["accuracy"][0]
    again = bootstrap({"s": y}, {"s": [pred]}, n_classes=3, samples=500, seed=7)["s"]["accuracy"][0]
    other = bootstrap({"s": y}, {"s": [pred]}, n_classes=3, samples=500, seed=8)["s"]["accuracy"][0]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    low, high = interval(first, 0.95)
    point = count_metric(y, pred, "accuracy", n_classes=3)
    assert low < point < high
    # The binomial standard error is sqrt(p(1-p)/n) = 0.02: the interval is about +-0.04.
    assert 0.05 < high - low < 0.11


def test_bootstrap_is_chunked_without_changing_its_size(monkeypatch):
    import normlab.bootstrap as bs

    y = np.arange(50) % 2
    monkeypatch.setattr(bs, "_MAX_INDEX_CELLS", 120)  # two resamples of 50 rows per block
    out = bootstrap({"s": y}, {"s": [y, 1 - y]}, n_classes=2, samples=33, seed=0)["s"]
    assert out["accuracy"].shape == (2, 33)
    np.testing.assert_array_equal(out["accuracy"][0], np.ones(33))
    np.testing.assert_array_equal(out["accuracy"][1], np.zeros(33))


def test_splits_of_one_population_share_resamples():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 100)
    pred = np.where(rng.random(100) < 0.7, y, 1 - y)
    labels = {"id/test": y, "ood/a": y.copy()}
    preds = {"id/test": [pred], "ood/a": [pred.copy()]}
    shared = bootstrap(labels, preds, n_classes=2, samples=200, populations={"ood/a": "id/test"})
    np.testing.assert_array_equal(shared["id/test"]["accuracy"], shared["ood/a"]["accuracy"])
    separate = bootstrap(labels, preds, n_classes=2, samples=200)
    assert not np.array_equal(separate["id/test"]["accuracy"], separate["ood/a"]["accuracy"])


def test_aggregate_means_severities_then_configured_splits():
    out = aggregate({"ood/a/s1": 1.0, "ood/a/s2": 0.0, "ood/b": 1.0})
    assert out["ood/a"] == pytest.approx(0.5)
    # A severity group counts once: (0.5 + 1.0) / 2, not (1 + 0 + 1) / 3.
    assert out["ood/mean"] == pytest.approx(0.75)


def _perfect_model() -> torch.nn.Module:
    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    return model


def test_evaluate_splits_groups_intervals_and_drops():
    x = np.array([[1.0, 0.0], [0.0, 1.0]] * 20, dtype=np.float32)
    y = np.array([0, 1] * 20)
    splits = {"id/test": (x, y), "ood/a/s1": (x, y), "ood/a/s2": (x, 1 - y), "ood/b": (x, y)}
    m = evaluate_splits(_perfect_model(), splits, n_classes=2, bootstrap_samples=100,
                        populations={"ood/a/s1": "id/test", "ood/a/s2": "id/test"})
    assert m["ood/a/s2/accuracy"] == 0.0
    assert m["ood/a/accuracy"] == pytest.approx(0.5)
    assert m["ood/a/rows"] == 80
    assert m["ood/a/accuracy_drop"] == pytest.approx(0.5)
    assert m["ood/mean/accuracy"] == pytest.approx(0.75)
    assert m["ood/mean/accuracy_drop"] == pytest.approx(0.25)
    # Constant correctness: every resample scores the same.
    assert m["id/test/accuracy_ci_low"] == m["id/test/accuracy_ci_high"] == 1.0
    assert m["ood/a/accuracy_ci_low"] == pytest.approx(0.5)
    assert "ood/mean/f1_macro_ci_high" in m
    assert not any(k.startswith("ood/mean/") and k.endswith("/rows") for k in m)


def test_per_class_metrics_and_key_safety():
    y = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0])
    m = per_class_metrics(y, pred, ["cat", "dog/wolf", "emu"], prefix="id/test")
    assert m["id/test/class/cat/recall"] == pytest.approx(0.5)
    assert m["id/test/class/dog_wolf/precision"] == pytest.approx(2 / 3)
    assert m["id/test/class/emu/f1"] == 0.0
    assert m["id/test/class/emu/support"] == 1
    assert key_part("a=b/c%") == "a_b_c_"


def test_slice_metrics_keep_the_most_frequent_values():
    values = pd.Series(["oslo"] * 5 + ["lima"] * 3 + [None] * 2 + ["pune"])
    y = np.array([0] * 11)
    pred = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0])
    m = slice_metrics(y, pred, values, column="city", n_classes=2, max_values=3)
    assert m["id/test/slice/city/oslo/accuracy"] == pytest.approx(0.8)
    assert m["id/test/slice/city/lima/accuracy"] == 0.0
    assert m["id/test/slice/city/_NA_/rows"] == 2
    assert not any("/pune/" in k for k in m)


def _digits_bn_model(epochs: int = 3):
    from sklearn.datasets import load_digits

    from normlab.models import build_model
    from normlab.training import make_optimizer, set_seeds, train_model

    digits = load_digits()
    x = digits.data.astype(np.float32)
    mean, std = x[:1400].mean(axis=0), x[:1400].std(axis=0)
    std[std == 0] = 1.0
    scale = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731
    set_seeds(0)
    model = build_model("mlp", in_features=64, num_classes=10, norm="batch", hidden=[64, 64])
    optimizer = make_optimizer(model.parameters(), "sgd", lr=0.05)
    train_model(model, optimizer, (scale(x[:1400]), digits.target[:1400]), (scale(x[1400:]), digits.target[1400:]),
                epochs=epochs, batch_size=64, seed=0)
    return model.eval(), digits.data[1400:], digits.target[1400:], scale


def test_adaptation_improves_accuracy_on_a_noise_split():
    from normlab.data.shifts import corrupt_images

    model, raw, y, scale = _digits_bn_model()
    noisy = scale(corrupt_images(raw, (8, 8), "gaussian_noise", 1, seed=0, value_range=(0, 16)))
    plain = evaluate_splits(model, {"ood/noise": (noisy, y)}, n_classes=10)
    out = adapted_metrics(model, {"ood/noise": (noisy, y)}, plain, n_classes=10)
    assert out["ood/noise/adapted/accuracy_gain"] > 0.05
    assert out["ood/noise/adapted/accuracy"] == pytest.approx(
        plain["ood/noise/accuracy"] + out["ood/noise/adapted/accuracy_gain"])
    assert out["ood/mean/adapted/accuracy"] == out["ood/noise/adapted/accuracy"]


def test_evaluate_run_reports_classes_slices_and_adaptation_for_batchnorm_only():
    from normlab.models import build_model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 6)).astype(np.float32)
    y = rng.integers(0, 3, 60)
    frames = {"id/test": pd.DataFrame({"city": rng.choice(["a", "b"], 60)})}
    splits = {"id/test": (x, y), "ood/shift": (x + 2, y)}
    settings = EvalConfig(bootstrap_samples=50, slices=["city"])
    torch.manual_seed(0)
    bn = build_model("mlp", in_features=6, num_classes=3, norm="batch", hidden=[8]).eval()
    metrics, predictions = evaluate_run(bn, splits, classes=["x", "y", "z"], settings=settings, frames=frames)
    assert set(predictions) == {"id/test", "ood/shift"}
    assert predictions["id/test"].shape == (60,)
    assert {"id/test/class/x/recall", "id/test/slice/city/a/accuracy", "ood/shift/adapted/accuracy_gain",
            "id/test/accuracy_ci_low"} <= set(metrics)
    ln = build_model("mlp", in_features=6, num_classes=3, norm="layer", hidden=[8]).eval()
    metrics, _ = evaluate_run(ln, splits, classes=["x", "y", "z"], settings=settings, frames=frames)
    assert not any("/adapted/" in k for k in metrics)
    with pytest.raises(ValueError, match="slices"):
        evaluate_run(ln, splits, classes=["x", "y", "z"], settings=settings, frames=None)
