"""Drift scores, the drift decision, and Evidently reports.

Two paths, on purpose:

* The **decision** uses vectorized two-sample tests on every row of the batch:
  Kolmogorov-Smirnov for numeric columns and chi-square for categorical ones.
  A column drifts only when its test is significant (``p < alpha``) *and* its
  effect size clears a floor (the KS statistic, or the total variation
  distance for categories; both lie in 0..1). A p-value alone shrinks with the
  sample size, so a 100,000-row batch would flag a shift nobody cares about;
  the effect floor stops that.
* The **report** is an Evidently 0.7 report for people, built on a bounded,
  seeded sample of rows and on the top-scoring columns: Evidently's per-column
  rendering costs about 0.1-0.2 s per column whatever the row count, which
  makes a full ``DataDriftPreset`` on 64 columns slower than the whole
  decision path on 100,000 rows.

The decision is stateful only through the small per-model history passed in
(streak of drifted batches, recent alerts); this module never touches disk
except where a report is saved. Each step returns a frozen pydantic model
(`ColumnScore`, `ColumnsDrift`, `PredictionDrift`, `LevelDecision`); what is
written as JSON (``drift.json``, the summary) is their ``model_dump()``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from normlab.contract_base import Contract

LEVELS = ("none", "suspected", "detected")
# Batches that got no decision: too few accepted rows, or blocked by the data gate.
TOO_SMALL = "too_small"
BLOCKED = "blocked"

# The model's outputs, as two more columns of the report (and `PREDICTION_COLUMN` among the
# drifted columns); the prefix keeps them apart from any feature.
PREDICTION_COLUMN = "model.prediction"
CONFIDENCE_COLUMN = "model.confidence"


class _Result(Contract, BaseModel):  # BaseModel for ruff's sake: see `normlab.contract_base`
    """The base of this module's results: `normlab.contract_base.Contract`."""


class ColumnScore(_Result):
    """The drift test of one column (`score_columns`)."""

    column: str
    test: str  # "ks" (numeric) or "chi2" (categorical)
    score: float  # effect size in 0..1: KS statistic or total variation distance
    p_value: float
    drifted: bool


class ColumnsDrift(_Result):
    """Data drift (`summarize_columns`): share drifted, verdict, top ``columns`` (drifted first), every ``scores``."""

    share: float
    n_columns: int
    n_drifted: int
    drifted: bool
    drifted_columns: list[str]
    columns: list[ColumnScore]
    scores: dict[str, float]


class ClassShift(_Result):
    """The predicted-class distribution of reference and batch (`prediction_drift`): it decides."""

    test: str
    score: float
    p_value: float
    drifted: bool
    reference_shares: dict[str, float]
    current_shares: dict[str, float]


class ConfidenceShift(_Result):
    """The top-class confidence of reference and batch (`prediction_drift`): reported (``shifted``), never decides."""

    test: str
    score: float
    p_value: float
    shifted: bool
    reference_mean: float
    current_mean: float


class PredictionDrift(_Result):
    """Drift of the model's outputs (`prediction_drift`); ``class_`` is ``class`` in JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, serialize_by_alias=True)

    class_: ClassShift = Field(alias="class")
    confidence: ConfidenceShift
    drifted: bool


class AlertRecord(_Result):
    """An alert raised (drift; data quality, its checks as ``columns``) in the model's history; ``delivered`` None: pending."""

    at: str
    level: str
    columns: list[str]
    fingerprint: str
    delivered: int | None = None


class LevelDecision(_Result):
    """The drift level of one batch and whether it deserves an alert (`decide`); ``reason`` is one line."""

    level: str
    streak: int
    alert: bool
    reason: str


class DriftVerdict(_Result):
    """normlab's verdict of one batch, as the Evidently report shows it (`normlab.drift_report`).

    What ``drift.json`` holds (every feature's `ColumnScore`, the prediction drift, the batch verdict), with
    the ``monitor.*`` thresholds it was decided under (``prediction_decides``: ``monitor.prediction``).
    """

    alpha: float
    effect_floor: float
    drift_share: float
    prediction_decides: bool = True
    rows: int | None = None
    decidable: bool = True
    drifted: bool | None = None
    drifted_columns: list[str] = []
    columns: list[ColumnScore]
    prediction: PredictionDrift | None = None


# Tests ---------------------------------------------------------------------------------


def ks_columns(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sample Kolmogorov-Smirnov statistics and p-values, one per column.

    NaNs are ignored per column. The statistic is exact; the p-value is the
    asymptotic two-sided one (as ``scipy.stats.ks_2samp(method="asymp")``).
    A column with values in the reference but none in the batch scores 1
    (its values vanished); a column with no reference values scores 0.

    Args:
        reference: Shape (m, k).
        current: Shape (n, k).

    Returns:
        (statistics, p_values), each of shape (k,).
    """
    ref = np.sort(np.ascontiguousarray(np.asarray(reference, dtype=np.float64).T), axis=1)
    cur = np.sort(np.ascontiguousarray(np.asarray(current, dtype=np.float64).T), axis=1)
    k = ref.shape[0]
    d = np.zeros(k)
    en = np.zeros(k)
    for j in range(k):
        # np.sort puts NaN last: the finite prefix is what the ECDF sees.
        a = ref[j, : int(np.count_nonzero(~np.isnan(ref[j])))]
        b = cur[j, : int(np.count_nonzero(~np.isnan(cur[j])))]
        if len(a) == 0:
            continue
        if len(b) == 0:
            d[j] = 1.0
            continue
        d[j] = _ks_sorted(a, b)
        en[j] = len(a) * len(b) / (len(a) + len(b))
    p = np.ones(k)
    tested = en > 0
    p[tested] = stats.kstwo.sf(d[tested], np.maximum(np.round(en[tested]), 1))
    p[(d == 1.0) & ~tested] = 0.0
    return d, np.clip(p, 0.0, 1.0)


def _ks_sorted(a: np.ndarray, b: np.ndarray) -> float:
    """sup |F_a - F_b| for sorted samples, evaluated at the last of each run of ties.

    Both ECDFs are right-continuous steps, so the supremum sits at a sample
    point; taking each distinct value once avoids a search of the large
    sample into itself.
    """
    d = 0.0
    for x, y in ((a, b), (b, a)):
        ends = np.flatnonzero(np.r_[x[1:] != x[:-1], True])
        fx = (ends + 1) / len(x)
        fy = np.searchsorted(y, x[ends], side="right") / len(y)
        d = max(d, float(np.abs(fx - fy).max()))
    return d


def categorical_test(reference: pd.Series, current: pd.Series) -> tuple[float, float]:
    """Total variation distance and chi-square p-value between two category distributions.

    Missing values count as a category of their own.
    """
    ref = reference.astype(object).where(reference.notna(), "<NA>").astype(str).value_counts()
    cur = current.astype(object).where(current.notna(), "<NA>").astype(str).value_counts()
    return counts_test(*(ref.align(cur, fill_value=0)))


def counts_test(reference: pd.Series | np.ndarray, current: pd.Series | np.ndarray) -> tuple[float, float]:
    """Total variation distance and chi-square p-value of two aligned count vectors."""
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    if r.sum() == 0:
        return 0.0, 1.0
    if c.sum() == 0:
        return 1.0, 0.0
    tvd = 0.5 * float(np.abs(r / r.sum() - c / c.sum()).sum())
    seen = (r + c) > 0
    if seen.sum() < 2:
        return tvd, 1.0
    p = float(stats.chi2_contingency(np.vstack([r[seen], c[seen]]), correction=False).pvalue)
    return tvd, p


def score_columns(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Sequence[str],
    *,
    alpha: float,
    effect_floor: float,
) -> list[ColumnScore]:
    """Test every column; numeric columns in one vectorized pass.

    Args:
        reference: The drift reference (training rows).
        current: The batch.
        columns: Columns to test (present in both frames).
        alpha: Significance level of each column's test.
        effect_floor: Smallest effect size that counts as drift.

    Returns:
        One `ColumnScore` per column, in ``columns`` order.
    """
    numeric = [c for c in columns if is_numeric(reference[c]) and is_numeric(current[c])]
    out: dict[str, ColumnScore] = {}
    if numeric:
        d, p = ks_columns(_as_float(reference, numeric), _as_float(current, numeric))
        for name, score, p_value in zip(numeric, d, p, strict=True):
            drifted = _drifted(score, p_value, alpha, effect_floor)
            out[name] = ColumnScore(column=name, test="ks", score=float(score), p_value=float(p_value),
                                    drifted=drifted)
    for name in columns:
        if name not in out:
            score, p_value = categorical_test(reference[name], current[name])
            out[name] = ColumnScore(column=name, test="chi2", score=score, p_value=p_value,
                                    drifted=_drifted(score, p_value, alpha, effect_floor))
    return [out[c] for c in columns]


def summarize_columns(scores: Sequence[ColumnScore], *, drift_share: float, top: int) -> ColumnsDrift:
    """Share of drifted columns, the batch verdict, and the top columns by effect size."""
    drifted = [s.column for s in scores if s.drifted]
    share = len(drifted) / len(scores) if scores else 0.0
    ranked = sorted(scores, key=lambda s: (s.drifted, s.score), reverse=True)
    return ColumnsDrift(
        share=share,
        n_columns=len(scores),
        n_drifted=len(drifted),
        drifted=bool(scores) and share >= drift_share,
        drifted_columns=drifted,
        columns=list(ranked[:top]),
        scores={s.column: s.score for s in scores},
    )


def prediction_drift(
    reference_proba: np.ndarray, current_proba: np.ndarray, *, classes: Sequence[Any], alpha: float, effect_floor: float
) -> PredictionDrift:
    """Drift of the model's outputs: the predicted-class distribution and the top-class confidence.

    Only the class distribution decides (``drifted``). The confidence is
    reported (``shifted``) but does not decide: the reference rows are the
    model's training rows, on which it is more confident than on any new rows
    (on the digits after two epochs, a mean top-class probability of 0.955 on
    the training rows against 0.936 on unseen rows of the same distribution:
    a KS shift of 0.10 with p = 0.005, a false alarm).
    """
    k = len(classes)
    ref_pred, cur_pred = reference_proba.argmax(axis=1), current_proba.argmax(axis=1)
    ref_counts, cur_counts = np.bincount(ref_pred, minlength=k), np.bincount(cur_pred, minlength=k)
    tvd, p_class = counts_test(ref_counts, cur_counts)
    d, p_conf = ks_columns(reference_proba.max(axis=1)[:, None], current_proba.max(axis=1)[:, None])
    names = [str(c) for c in classes]
    cls = ClassShift(
        test="chi2", score=tvd, p_value=p_class, drifted=_drifted(tvd, p_class, alpha, effect_floor),
        reference_shares=dict(zip(names, (ref_counts / max(ref_counts.sum(), 1)).round(4).tolist(), strict=True)),
        current_shares=dict(zip(names, (cur_counts / max(cur_counts.sum(), 1)).round(4).tolist(), strict=True)),
    )
    conf = ConfidenceShift(
        test="ks", score=float(d[0]), p_value=float(p_conf[0]), shifted=_drifted(d[0], p_conf[0], alpha, effect_floor),
        reference_mean=float(reference_proba.max(axis=1).mean()) if len(reference_proba) else math.nan,
        current_mean=float(current_proba.max(axis=1).mean()) if len(current_proba) else math.nan,
    )
    return PredictionDrift(class_=cls, confidence=conf, drifted=cls.drifted)


def is_numeric(series: pd.Series) -> bool:
    """True for bool, int and real float columns."""
    return pd.api.types.is_bool_dtype(series.dtype) or (
        pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_complex_dtype(series.dtype)
    )


def _as_float(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    return frame[columns].to_numpy(dtype=np.float64, na_value=np.nan)


def _drifted(score: float, p_value: float, alpha: float, effect_floor: float) -> bool:
    return bool(p_value < alpha and score >= effect_floor)


# The decision --------------------------------------------------------------------------


def decide(
    drifted: bool | None,
    columns: Sequence[str],
    streak: int,
    alerts: Sequence[AlertRecord],
    *,
    consecutive: int,
    cooldown_minutes: float,
    dedup_overlap: float,
    min_level: str,
    now: datetime,
) -> LevelDecision:
    """The drift level of one batch and whether it deserves an alert.

    A drifted batch raises the model's streak by one; `detected` needs
    ``consecutive`` drifted batches in a row, fewer are `suspected`. A clean
    batch resets the streak; a batch with no decision (``drifted is None``:
    too few rows) leaves it alone. An alert repeats an earlier one when it is
    about the same model, its drifted columns overlap the earlier alert's by
    at least ``dedup_overlap`` (Jaccard), and the earlier one is younger than
    the cooldown; repeats are held back.

    Args:
        drifted: The batch verdict, or None when no decision could be made.
        columns: The drifted columns (with `PREDICTION_COLUMN` when the outputs drifted).
        streak: The model's drifted batches in a row so far.
        alerts: The model's earlier drift alerts.
        consecutive: Drifted batches in a row for `detected`.
        cooldown_minutes: How long an alert holds back its repeats.
        dedup_overlap: Jaccard overlap that makes two column sets the same.
        min_level: The lowest level that alerts (`suspected` or `detected`).
        now: The decision time (timezone-aware).
    """
    streak = int(streak)
    if drifted is None:
        return LevelDecision(level=TOO_SMALL, streak=streak, alert=False, reason="too few rows for a drift decision")
    if not drifted:
        return LevelDecision(level="none", streak=0, alert=False, reason="no drift")
    streak += 1
    level = "detected" if streak >= consecutive else "suspected"
    window = f"{min(streak, consecutive)} of {consecutive} drifted batches in a row"
    if LEVELS.index(level) < LEVELS.index(min_level):
        return LevelDecision(level=level, streak=streak, alert=False, reason=f"{level}: {window}")
    past = repeated_alert(columns, alerts, cooldown_minutes=cooldown_minutes, dedup_overlap=dedup_overlap, now=now)
    if past is not None:
        return LevelDecision(level=level, streak=streak, alert=False,
                             reason=f"{level}: repeats the alert of {past.at} (same model and columns, "
                                    f"cooldown {cooldown_minutes:g} min)")
    return LevelDecision(level=level, streak=streak, alert=True, reason=f"{level}: {window}")


def repeated_alert(
    columns: Sequence[str], alerts: Sequence[AlertRecord], *, cooldown_minutes: float, dedup_overlap: float,
    now: datetime,
) -> AlertRecord | None:
    """The earlier alert (younger than the cooldown, overlapping ``columns`` enough) that this one repeats, if any."""
    current = set(columns)
    horizon = now - timedelta(minutes=cooldown_minutes)
    for past in reversed(list(alerts)):
        if datetime.fromisoformat(past.at) >= horizon and jaccard(current, set(past.columns)) >= dedup_overlap:
            return past
    return None


def jaccard(a: set[str], b: set[str]) -> float:
    """|a & b| / |a | b|; two empty sets are the same set."""
    union = a | b
    return len(a & b) / len(union) if union else 1.0


# Evidently reports ---------------------------------------------------------------------


def sample_rows(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` rows, a seeded sample when there are more."""
    if len(frame) <= n:
        return frame.reset_index(drop=True)
    return frame.sample(n=n, random_state=seed).reset_index(drop=True)


def evidently_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    drawn: Sequence[str],
    name: str,
    metadata: dict[str, str],
    tags: Sequence[str] = (),
    verdict: DriftVerdict | None = None,
):
    """An Evidently 0.7 snapshot whose primary content is normlab's drift verdict.

    With ``verdict``, the snapshot opens with normlab's verdict (the one the
    alert uses): drifted-column count and share, and a table of every column
    with its test, effect size, p-value and threshold checks (see
    `normlab.drift_report`). Evidently's own tests follow, grouped and titled
    as a secondary view: its drifted-column count over the features and one
    drift panel per drawn column, with the test family and ``alpha`` closest
    to normlab's (KS / chi-square p-value, no effect floor) on the sample.

    Args:
        reference: Reference rows (already sampled).
        current: Batch rows (already sampled).
        numeric: Numeric columns (features and the confidence).
        categorical: Categorical columns (features and the predicted class).
        drawn: Columns that get a distribution panel (top scores first).
        name: Snapshot name (shown in the Evidently UI).
        metadata: String metadata stored with the snapshot.
        tags: Snapshot tags.
        verdict: normlab's verdict on the full batch (`DriftVerdict`). Without it the
            report holds only the secondary view.

    Returns:
        The `evidently.Snapshot`.

    Raises:
        ValueError: ``verdict``'s columns do not give its ``drifted_columns``.
    """
    from evidently import DataDefinition, Dataset, Report

    from normlab import drift_report

    columns = [*numeric, *categorical]
    definition = DataDefinition(numerical_columns=list(numeric), categorical_columns=list(categorical))
    ref = Dataset.from_pandas(reference[columns], data_definition=definition)
    cur = Dataset.from_pandas(current[columns], data_definition=definition)
    rows = {"current": len(current), "reference": len(reference)}
    metrics: list[Any] = drift_report.verdict_metrics(verdict, sample=rows) if verdict is not None else []
    metrics.append(drift_report.EvidentlySecondaryView(
        features=[c for c in columns if c not in (PREDICTION_COLUMN, CONFIDENCE_COLUMN)],
        drawn=list(drawn), numeric=list(numeric), rows=rows,
        # Without a verdict Evidently keeps its own default methods and thresholds.
        alpha=verdict.alpha if verdict is not None else None,
        drift_share=verdict.drift_share if verdict is not None else 0.5,
    ))
    report = Report(metrics, metadata=dict(metadata), tags=list(tags))
    with warnings.catch_warnings():
        # Constant columns (a pixel that is always 0) make Evidently divide by a zero spread.
        warnings.simplefilter("ignore", RuntimeWarning)
        return report.run(cur, ref, name=name)


def save_report(snapshot: Any, out_dir: str | Path) -> dict[str, str]:
    """Write the snapshot as ``report.html`` and ``report.json``.

    Both carry normlab's verdict when the snapshot was built with one;
    `normlab.drift_report.report_drifted_columns` reads either back.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(out / "report.html"))
    snapshot.save_json(str(out / "report.json"))
    return {"html": str(out / "report.html"), "json": str(out / "report.json")}


def report_drifted_columns(path: str | Path) -> list[str]:
    """The columns a saved report (``report.html`` or ``report.json``) shows as drifted under normlab's verdict."""
    from normlab import drift_report

    return drift_report.report_drifted_columns(path)


def add_to_workspace(snapshot: Any, workspace: str | Path, project: str) -> dict[str, str]:
    """Add the snapshot to a local Evidently workspace (`normlab.drift_report.add_to_workspace`)."""
    from normlab import drift_report

    return drift_report.add_to_workspace(snapshot, workspace, project)
