"""The promotion gate: whether a registered model version may become the champion.

The gate decides on evidence:

0. the model's health: its training and validation losses and its ID
   metrics are finite, and it was trained on at least two classes (a NaN model
   or a one-class "classifier" is registered but never promoted);
1. absolute thresholds from ``promotion.thresholds`` (``metric >= value``);
2. the current ``champion``, loaded from the registry and re-scored on this
   run's splits: on each metric of ``promotion.compare`` the paired bootstrap
   interval of (challenger - champion), both models resampled on the same rows,
   must not lie entirely below ``-promotion.tolerance``. The first model (no
   champion yet) is held to the thresholds only.

The decision goes into the version's governance record (`normlab.governance_record`).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np

from normlab.bootstrap import COUNT_METRICS, bootstrap, count_metric, interval
from normlab.config import PromotionConfig
from normlab.contracts import ChampionScore, GateRecord, ModelVersion, PromotionCheck
from normlab.evaluation import aggregate, ood_groups


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _expand(key: str, groups: list[str]) -> list[str]:
    """``ood/*/m`` to one key per OOD split (a severity group once); other keys unchanged."""
    if key.startswith("ood/*/"):
        return [f"{g}/{key[len('ood/*/'):]}" for g in groups]
    return [key]


def _split_of(key: str) -> tuple[str, str]:
    split, metric = key.rsplit("/", 1)
    return split, metric


# What a model must have finite values of to be promoted (a NaN here means the weights are not usable).
HEALTH_METRICS = ("train/final_loss", "train/final_val_loss", "id/val/accuracy", "id/test/accuracy", "id/test/nll")


def check_health(metrics: dict[str, float]) -> list[PromotionCheck]:
    """The model-health checks: finite losses and ID metrics; two or more classes seen in training."""
    bad = [k for k in HEALTH_METRICS if k in metrics and not math.isfinite(metrics[k])]
    checks = [PromotionCheck(
        kind="health", metric="finite", passed=not bad,
        reason=(f"not finite: {', '.join(f'{k}={metrics[k]}' for k in bad)} (training diverged)" if bad
                else "losses and ID metrics are finite"))]
    classes = metrics.get("train/classes")
    if classes is not None:
        checks.append(PromotionCheck(
            kind="health", metric="train/classes", value=classes, passed=classes >= 2,
            reason=(f"trained on {int(classes)} class(es); a classifier needs at least 2"
                    if classes < 2 else f"trained on {int(classes)} classes")))
    return checks


def check_thresholds(thresholds: dict[str, float], metrics: dict[str, float], groups: list[str]) -> list[PromotionCheck]:
    """One check per threshold (``ood/*`` expanded): passed when the metric is at least the value."""
    checks = []
    for pattern, floor in thresholds.items():
        for key in _expand(pattern, groups):
            value = metrics.get(key)
            if value is None:
                passed, reason = False, f"{key} was not produced by this run"
            else:
                passed = value >= floor
                reason = f"{key} {value:.4f} {'>=' if passed else '<'} {floor:g}"
            checks.append(PromotionCheck(kind="threshold", metric=key, value=value, at_least=floor,
                                         passed=passed, reason=reason))
    return checks


def compare_with_champion(
    promotion: PromotionConfig,
    labels: dict[str, np.ndarray],
    challenger: dict[str, np.ndarray],
    champion: dict[str, np.ndarray],
    *,
    n_classes: int,
    seed: int,
    populations: dict[str, str] | None = None,
    champion_name: str = "champion",
) -> tuple[list[PromotionCheck], dict[str, float]]:
    """Paired bootstrap of (challenger - champion) on every compared metric.

    Args:
        promotion: Which metrics, the tolerance, resamples and confidence.
        labels: Split key to true class indices (this run's splits).
        challenger: Split key to the challenger's predicted class indices.
        champion: Split key to the champion's predicted class indices (same rows).
        n_classes: Number of classes.
        seed: Fixes the resamples.
        populations: Splits made of the same rows (see `normlab.bootstrap.bootstrap`).
        champion_name: How the champion is named in reasons (``champion v3``).

    Returns:
        The checks, and the champion's re-scored point metrics.
    """
    leaves = [k for k in labels if k in challenger and k in champion and len(labels[k])]
    groups = list(ood_groups(leaves))
    wanted: dict[str, list[str]] = {}
    for pattern in promotion.compare:
        for key in _expand(pattern, groups):
            split, metric = _split_of(key)
            wanted.setdefault(metric, [])
            if key not in wanted[metric]:
                wanted[metric].append(split)
    metrics = [m for m in COUNT_METRICS if m in wanted]
    samples = bootstrap(labels, {k: [challenger[k], champion[k]] for k in leaves}, n_classes=n_classes,
                        metrics=metrics, samples=promotion.bootstrap_samples, seed=seed, populations=populations)
    checks: list[PromotionCheck] = []
    rescored: dict[str, float] = {}
    for metric in metrics:
        delta = aggregate({k: samples[k][metric][0] - samples[k][metric][1] for k in samples})
        point_a = aggregate({k: count_metric(labels[k], challenger[k], metric, n_classes=n_classes) for k in leaves})
        point_b = aggregate({k: count_metric(labels[k], champion[k], metric, n_classes=n_classes) for k in leaves})
        for split, value in point_b.items():
            rescored[f"{split}/{metric}"] = float(value)
        for split in wanted[metric]:
            key = f"{split}/{metric}"
            if split not in delta:
                checks.append(PromotionCheck(kind="champion", metric=key, passed=True, skipped=True,
                                             reason=f"{key}: skipped, this run has no such split"))
                continue
            low, high = interval(np.asarray(delta[split]), promotion.confidence)
            a, b = float(point_a[split]), float(point_b[split])
            passed = high >= -promotion.tolerance
            verdict = "within" if passed else "below"
            reason = (f"{key}: {a:.4f} vs {champion_name} {b:.4f}, delta {a - b:+.4f}, "
                      f"{promotion.confidence:.0%} interval [{low:+.4f}, {high:+.4f}] "
                      f"{'not entirely below' if passed else 'entirely below'} -{promotion.tolerance:g}")
            checks.append(PromotionCheck(kind="champion", metric=key, challenger=a, champion=b, delta=a - b,
                                         ci_low=low, ci_high=high, tolerance=promotion.tolerance, passed=passed,
                                         verdict=verdict, reason=reason))
    return checks, rescored


def decide(
    promotion: PromotionConfig,
    metrics: dict[str, float],
    labels: dict[str, np.ndarray],
    challenger: dict[str, np.ndarray],
    *,
    n_classes: int,
    seed: int,
    champion: ModelVersion | None = None,
    champion_predictions: dict[str, np.ndarray] | None = None,
    champion_error: str | None = None,
    populations: dict[str, str] | None = None,
) -> GateRecord:
    """The gate's decision, with a reason for each check and one for the whole.

    Args:
        promotion: The ``promotion`` config section.
        metrics: This run's metrics.
        labels: Split key to true class indices.
        challenger: Split key to this run's predicted class indices.
        n_classes: Number of classes.
        seed: Fixes the resamples.
        champion: The current champion version (None: there is none).
        champion_predictions: The champion's predictions on this run's splits.
        champion_error: Why the champion could not be re-scored (the gate then refuses).
        populations: Splits made of the same rows.

    Returns:
        The `GateRecord`: ``passed``, ``reason``, ``checks``, ``champion``
        (version, run and re-scored metrics, or None) and the settings used.
    """
    groups = list(ood_groups([k for k in labels if len(labels[k])]))
    checks = check_health(metrics) + check_thresholds(promotion.thresholds, metrics, groups)
    rescored: dict[str, float] = {}
    champion_name = f"champion v{champion.version}" if champion else "champion"
    if champion is not None and champion_error is None and champion_predictions is not None:
        compared, rescored = compare_with_champion(
            promotion, labels, challenger, champion_predictions, n_classes=n_classes, seed=seed,
            populations=populations, champion_name=champion_name)
        checks += compared
    elif champion is not None:
        checks.append(PromotionCheck(
            kind="champion", metric=None, passed=False,
            reason=f"{champion_name} could not be re-scored on this run's splits: {champion_error}"))
    failed = [c for c in checks if not c.passed]
    thresholds = sum(c.kind == "threshold" for c in checks)
    compared_count = sum(c.kind == "champion" and not c.skipped for c in checks)
    if failed:
        reason = "refused: " + "; ".join(c.reason for c in failed)
    elif champion is None:
        reason = f"passed: {thresholds} threshold(s) met; no champion yet, so thresholds alone decide"
    else:
        reason = (f"passed: {thresholds} threshold(s) met; none of {compared_count} compared metric(s) regressed "
                  f"beyond {promotion.tolerance:g} against {champion_name} re-scored on this run's splits")
    return GateRecord(
        passed=not failed,
        reason=reason,
        checks=checks,
        champion=None if champion is None else ChampionScore(**champion.model_dump(), metrics=rescored),
        tolerance=promotion.tolerance,
        confidence=promotion.confidence,
        bootstrap_samples=promotion.bootstrap_samples,
        decided_at=_now(),
    )
