"""Drift tests, the drift decision's hygiene, and the Evidently report path."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from normlab import drift

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


# Tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_ks_columns_match_scipy(kind):
    rng = np.random.default_rng(0)
    if kind == "continuous":
        ref, cur = rng.normal(size=(700, 5)), rng.normal(0.1, 1.2, size=(1300, 5))
    else:
        ref, cur = rng.integers(0, 17, (700, 5)).astype(float), rng.integers(0, 15, (1300, 5)).astype(float)
    ref[3, 2] = np.nan  # ignored, as scipy would ignore a value it never saw
    d, p = drift.ks_columns(ref, cur)
    for j in range(5):
        expected = stats.ks_2samp(ref[~np.isnan(ref[:, j]), j], cur[:, j], method="asymp")
        assert d[j] == pytest.approx(expected.statistic, abs=1e-12)
        assert p[j] == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-12)


def test_ks_columns_vanished_and_empty_reference_columns():
    ref = np.array([[1.0, np.nan], [2.0, np.nan], [3.0, np.nan]])
    cur = np.array([[np.nan, 1.0], [np.nan, 2.0]])
    d, p = drift.ks_columns(ref, cur)
    assert (d[0], p[0]) == (1.0, 0.0)  # the batch lost every value of column 0
    assert (d[1], p[1]) == (0.0, 1.0)  # nothing to compare column 1 against


def test_categorical_test_identical_and_disjoint():
    a = pd.Series(["x", "y", "y", None] * 50)
    assert drift.categorical_test(a, a.sample(frac=1, random_state=0)) == pytest.approx((0.0, 1.0))
    tvd, p = drift.categorical_test(a, pd.Series(["z"] * 200))
    assert tvd == pytest.approx(1.0)
    assert p < 1e-10


def test_effect_floor_ignores_a_trivial_shift_in_a_large_batch():
    rng = np.random.default_rng(1)
    ref = pd.DataFrame({"a": rng.normal(size=50_000), "b": rng.normal(size=50_000)})
    cur = pd.DataFrame({"a": rng.normal(0.03, 1, 200_000), "b": rng.normal(0.6, 1, 200_000)})
    scores = {s.column: s for s in drift.score_columns(ref, cur, ["a", "b"], alpha=0.01, effect_floor=0.1)}
    # A 0.03-sigma shift is significant at this size, but too small to matter.
    assert scores["a"].p_value < 0.01
    assert scores["a"].score < 0.1
    assert not scores["a"].drifted
    assert scores["b"].drifted


def test_score_columns_mixes_numeric_and_categorical_and_summarizes():
    rng = np.random.default_rng(2)
    ref = pd.DataFrame({"n": rng.normal(size=2000), "c": rng.choice(["a", "b"], 2000), "k": rng.normal(size=2000)})
    cur = pd.DataFrame({"n": rng.normal(2, 1, 1000), "c": rng.choice(["a", "b"], 1000, p=[0.9, 0.1]),
                        "k": rng.normal(size=1000)})
    scores = drift.score_columns(ref, cur, ["n", "c", "k"], alpha=0.01, effect_floor=0.1)
    assert [(s.column, s.test, s.drifted) for s in scores] == [("n", "ks", True), ("c", "chi2", True),
                                                               ("k", "ks", False)]
    summary = drift.summarize_columns(scores, drift_share=0.5, top=2)
    assert summary.share == pytest.approx(2 / 3)
    assert summary.drifted is True
    assert summary.drifted_columns == ["n", "c"]
    assert [c.column for c in summary.columns] == ["n", "c"]  # drifted first, by score
    assert drift.summarize_columns(scores, drift_share=0.7, top=2).drifted is False


def test_prediction_drift_flags_a_moved_class_distribution_only():
    rng = np.random.default_rng(3)

    def proba(n, weights):
        classes = rng.choice(3, n, p=weights)
        out = np.full((n, 3), 0.1)
        out[np.arange(n), classes] = 0.8
        return out

    ref = proba(3000, [1 / 3, 1 / 3, 1 / 3])
    same = drift.prediction_drift(ref, proba(1000, [1 / 3, 1 / 3, 1 / 3]), classes=[0, 1, 2], alpha=0.01,
                                  effect_floor=0.1)
    moved = drift.prediction_drift(ref, proba(1000, [0.8, 0.1, 0.1]), classes=[0, 1, 2], alpha=0.01,
                                   effect_floor=0.1)
    assert not same.drifted
    assert moved.class_.drifted and moved.drifted
    assert moved.class_.current_shares["0"] > 0.7
    assert not moved.confidence.shifted  # every prediction is still 0.8 sure
    # In JSON (drift.json, the summary) the class distribution is under "class", as it always was.
    assert list(moved.model_dump()) == ["class", "confidence", "drifted"]
    assert drift.PredictionDrift.model_validate(moved.model_dump()) == moved


def test_a_confidence_shift_alone_is_reported_but_does_not_decide():
    ref = np.tile([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05]], (500, 1))
    cur = np.tile([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2]], (500, 1))
    out = drift.prediction_drift(ref, cur, classes=["a", "b", "c"], alpha=0.01, effect_floor=0.1)
    assert out.confidence.shifted and out.confidence.score == pytest.approx(1.0)
    assert not out.class_.drifted and not out.drifted


# The decision --------------------------------------------------------------------------


def _decide(drifted, columns=("a", "b"), streak=0, alerts=(), **kw):
    options = {"consecutive": 2, "cooldown_minutes": 60, "dedup_overlap": 0.5, "min_level": "detected",
               "now": NOW} | kw
    return drift.decide(drifted, list(columns), streak, list(alerts), **options)


def test_levels_over_consecutive_batches():
    first = _decide(True)
    assert (first.level, first.streak, first.alert) == ("suspected", 1, False)
    second = _decide(True, streak=1)
    assert (second.level, second.streak, second.alert) == ("detected", 2, True)
    clean = _decide(False, streak=1)
    assert (clean.level, clean.streak) == ("none", 0)
    small = _decide(None, streak=1)
    assert (small.level, small.streak, small.alert) == (drift.TOO_SMALL, 1, False)


def test_min_level_suspected_alerts_on_the_first_window():
    assert _decide(True, min_level="suspected").alert is True


def test_cooldown_and_deduplication_per_column_set():
    alerts = [drift.AlertRecord(at=(NOW - timedelta(minutes=30)).isoformat(), level="detected", columns=["a", "b"],
                                fingerprint="f" * 64, delivered=1)]
    held = _decide(True, ["a", "b", "c"], 3, alerts)  # Jaccard 2/3 >= 0.5: the same alert again
    assert held.level == "detected" and held.alert is False
    assert "repeats the alert" in held.reason
    other = _decide(True, ["x", "y"], 3, alerts)  # other columns: a new alert
    assert other.alert is True
    later = _decide(True, ["a", "b"], 3, alerts, now=NOW + timedelta(minutes=31))  # cooldown over
    assert later.alert is True


def test_jaccard():
    assert drift.jaccard(set(), set()) == 1.0
    assert drift.jaccard({"a"}, {"b"}) == 0.0
    assert drift.jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3)


# Evidently -----------------------------------------------------------------------------


def test_evidently_report_and_workspace(tmp_path):
    from evidently.ui.workspace import Workspace

    rng = np.random.default_rng(4)
    ref = pd.DataFrame({"x": rng.normal(size=300), "y": rng.normal(size=300),
                        drift.PREDICTION_COLUMN: rng.choice(["0", "1"], 300), drift.CONFIDENCE_COLUMN: rng.random(300)})
    cur = ref.assign(x=ref["x"] + 3)
    snaps = []
    for name in ("first", "second"):
        snaps.append(drift.evidently_report(
            ref, cur, numeric=["x", "y", drift.CONFIDENCE_COLUMN], categorical=[drift.PREDICTION_COLUMN],
            drawn=["x", drift.PREDICTION_COLUMN], name=name, metadata={"fingerprint": name}))
    counts = [m for m in snaps[0].dict()["metrics"] if m["metric_name"].startswith("DriftedColumnsCount")]
    assert counts and counts[0]["value"]["count"] == 1.0  # only x moved, over the two features

    paths = drift.save_report(snaps[0], tmp_path / "report")
    assert "<html" in open(paths["html"]).read(2000).lower()
    refs = [drift.add_to_workspace(s, tmp_path / "ws", "normlab-test") for s in snaps]
    assert refs[0]["project_id"] == refs[1]["project_id"]
    ws = Workspace(str(tmp_path / "ws"))
    assert len(ws.list_runs(refs[0]["project_id"])) == 2
    assert len(ws.get_dashboard(refs[0]["project_id"]).panels) == 3
