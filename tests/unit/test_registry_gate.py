"""The promotion gate on synthetic predictions: thresholds, the paired comparison, the reasons."""

from __future__ import annotations

import numpy as np
import pytest

from normlab.config import PromotionConfig
from normlab.contracts import ModelVersion
from normlab.promotion import decide as _decide_record

N = 400
SPLITS = ("id/test", "ood/noise/s1", "ood/noise/s2", "ood/blur")
# The noise severities are corrupted copies of the ID test rows.
POPULATIONS = {"ood/noise/s1": "id/test", "ood/noise/s2": "id/test"}


def _labels() -> dict[str, np.ndarray]:
    y = np.random.default_rng(0).integers(0, 4, N)
    return {key: y.copy() for key in SPLITS}


def _predict(labels: dict[str, np.ndarray], accuracy: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Predictions right on the first accuracy * N rows of each split (wrong elsewhere)."""
    out = {}
    for key, y in labels.items():
        right = np.arange(N) < round(accuracy[key] * N)
        rng = np.random.default_rng(seed)
        out[key] = np.where(right[rng.permutation(N)], y, (y + 1) % 4)
    return out


def _metrics(labels, preds) -> dict[str, float]:
    from normlab.evaluation import aggregate

    acc = {k: float((preds[k] == labels[k]).mean()) for k in labels if k.startswith("ood/")}
    out = {f"{k}/accuracy": v for k, v in aggregate(acc).items()}
    out["id/test/accuracy"] = float((preds["id/test"] == labels["id/test"]).mean())
    return out


def decide(*args, champion=None, **kwargs) -> dict:
    """The decision as gate.json holds it (each check with the fields it set)."""
    if champion is not None:
        champion = ModelVersion(name="m", source="models:/m", **champion)
    return _decide_record(*args, champion=champion, **kwargs).to_json()


BASE = {"id/test": 0.95, "ood/noise/s1": 0.8, "ood/noise/s2": 0.6, "ood/blur": 0.7}
PROMOTION = PromotionConfig(thresholds={"id/test/accuracy": 0.9, "ood/mean/accuracy": 0.5}, bootstrap_samples=500)


def _decide(challenger_acc, champion_acc=None, promotion=PROMOTION, champion_seed=1):
    labels = _labels()
    challenger = _predict(labels, challenger_acc, seed=2)
    champion = _predict(labels, champion_acc, seed=champion_seed) if champion_acc else None
    return decide(promotion, _metrics(labels, challenger), labels, challenger, n_classes=4, seed=0,
                  champion={"version": "1", "run_id": "r1"} if champion else None,
                  champion_predictions=champion, populations=POPULATIONS)


def test_first_model_is_held_to_the_thresholds_only():
    decision = _decide(BASE)
    assert decision["passed"]
    assert decision["reason"].startswith("passed: 2 threshold(s) met; no champion yet")
    assert [c["kind"] for c in decision["checks"]] == ["health", "threshold", "threshold"]
    failing = _decide({**BASE, "id/test": 0.85})
    assert not failing["passed"]
    assert failing["reason"] == "refused: id/test/accuracy 0.8500 < 0.9"


def test_gate_promotes_a_better_model():
    decision = _decide({k: min(v + 0.05, 1.0) for k, v in BASE.items()}, BASE)
    assert decision["passed"], decision["reason"]
    compared = [c for c in decision["checks"] if c["kind"] == "champion"]
    # id/test, ood/mean, and each configured OOD split (the noise severities once).
    assert [c["metric"] for c in compared] == ["id/test/accuracy", "ood/mean/accuracy", "ood/noise/accuracy",
                                              "ood/blur/accuracy"]
    assert all(c["ci_low"] <= c["delta"] <= c["ci_high"] for c in compared)
    assert decision["champion"]["metrics"]["ood/noise/accuracy"] == pytest.approx(0.7)
    assert "champion v1 re-scored on this run's splits" in decision["reason"]


def test_gate_refuses_a_worse_model():
    decision = _decide({"id/test": 0.91, "ood/noise/s1": 0.7, "ood/noise/s2": 0.5, "ood/blur": 0.6}, BASE)
    assert not decision["passed"]
    failed = [c for c in decision["checks"] if not c["passed"]]
    assert {c["kind"] for c in failed} == {"champion"}  # the thresholds hold; the champion comparison refuses
    assert {c["metric"] for c in failed} == {"ood/mean/accuracy", "ood/noise/accuracy", "ood/blur/accuracy"}
    assert "ood/blur/accuracy: 0.6000 vs champion v1 0.7000, delta -0.1000, 95% interval [" in decision["reason"]
    assert all(c["ci_high"] < -0.01 for c in failed)


def test_gate_refuses_a_single_regressed_ood_split():
    # Better everywhere, much worse on blur: the mean still improves.
    challenger = {"id/test": 0.97, "ood/noise/s1": 0.9, "ood/noise/s2": 0.8, "ood/blur": 0.58}
    decision = _decide(challenger, BASE)
    failed = [c["metric"] for c in decision["checks"] if not c["passed"]]
    assert failed == ["ood/blur/accuracy"]
    assert not decision["passed"]
    mean = next(c for c in decision["checks"] if c["kind"] == "champion" and c["metric"] == "ood/mean/accuracy")
    assert mean["passed"] and mean["delta"] > 0


def test_equal_models_pass_and_small_regressions_within_the_tolerance_pass():
    assert _decide(BASE, BASE, champion_seed=2)["passed"]  # the same predictions: every delta is 0
    loose = PROMOTION.model_copy(update={"tolerance": 0.2})
    assert _decide({k: v - 0.05 for k, v in BASE.items()}, BASE, promotion=loose)["passed"]


def test_wildcard_thresholds_and_missing_metrics():
    promotion = PromotionConfig(thresholds={"ood/*/accuracy": 0.65, "id/test/f1_macro": 0.5})
    decision = _decide(BASE, promotion=promotion)
    reasons = [c["reason"] for c in decision["checks"] if not c["passed"]]
    assert reasons == ["id/test/f1_macro was not produced by this run"]
    passed = {c["metric"] for c in decision["checks"] if c["passed"] and c["kind"] == "threshold"}
    assert passed == {"ood/noise/accuracy", "ood/blur/accuracy"}


def test_a_champion_that_cannot_be_rescored_refuses_the_challenger():
    labels = _labels()
    challenger = _predict(labels, BASE, seed=2)
    decision = decide(PROMOTION, _metrics(labels, challenger), labels, challenger, n_classes=4, seed=0,
                      champion={"version": "4", "run_id": "r4"}, champion_error="feature columns ['x'] missing")
    assert not decision["passed"]
    assert "champion v4 could not be re-scored on this run's splits: feature columns ['x'] missing" in decision["reason"]


@pytest.mark.parametrize(("extra", "says"), [
    ({"train/final_loss": float("nan")}, "not finite: train/final_loss=nan"),
    ({"id/test/nll": float("inf"), "train/final_val_loss": float("nan")}, "train/final_val_loss=nan, id/test/nll=inf"),
    ({"train/classes": 1.0}, "trained on 1 class(es)"),
])
def test_an_unhealthy_model_is_refused_whatever_its_scores(extra, says):
    labels = _labels()
    challenger = _predict(labels, BASE, seed=2)
    metrics = {**_metrics(labels, challenger), "train/final_loss": 0.3, "train/final_val_loss": 0.4,
               "id/test/nll": 0.2, "train/classes": 4.0, **extra}
    decision = decide(PROMOTION, metrics, labels, challenger, n_classes=4, seed=0, populations=POPULATIONS)
    assert not decision["passed"]
    assert says in decision["reason"]
    healthy = decide(PROMOTION, {**metrics, **{k: 0.5 for k in extra if k != "train/classes"},
                                 "train/classes": 4.0}, labels, challenger, n_classes=4, seed=0,
                     populations=POPULATIONS)
    assert healthy["passed"], healthy["reason"]
