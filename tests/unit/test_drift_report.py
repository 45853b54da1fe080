"""One drift verdict: the Evidently report shows the columns the alert names, read back from the saved files.

Each batch goes through the decision path as `normlab.monitoring.analyze_batch`
runs it (every row, `score_columns` + `summarize_columns` + `prediction_drift`),
then through the report path on seeded samples as `build_report` runs it. The
saved ``report.html`` and ``report.json`` are parsed from disk and must name
exactly the alert's drifted columns, also where Evidently's own tests on the
sample say otherwise (the test shows such batches exist, both ways).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from normlab import drift, drift_report
from normlab.data.sources import load_builtin
from normlab.data.weather import FEATURES, weather_frame
from normlab.monitoring.contracts import DriftRecord

ALPHA, FLOOR, SHARE = 0.01, 0.1, 0.3
REPORT_ROWS = 5_000
PROJECT = "normlab-verdict-test"


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def weather_model(frame: pd.DataFrame) -> np.ndarray:
    """A fixed 3-class 'model' of the readings (what matters is that its outputs move with the inputs)."""
    z = np.stack([(frame["temp_c"] - 10) / 4, (frame["humidity"] - 78) / 8, (frame["wind_kmh"] - 18) / 8], axis=1)
    return _softmax(z.astype(float))


def digits_model(frame: pd.DataFrame) -> np.ndarray:
    """A fixed 8-class 'model' of the pixels: the brightest row of the 8x8 image."""
    pixels = frame[[c for c in frame.columns if c.startswith("pixel_")]].to_numpy(dtype=float)
    return _softmax(pixels.reshape(len(frame), 8, 8).sum(axis=2) / 20)


def _digits() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    digits = load_builtin("digits")
    digits = digits.iloc[np.random.default_rng(0).permutation(len(digits))]  # the file is ordered by writer
    features = [c for c in digits.columns if c != "label"]
    ref, cur = digits.iloc[:1200].reset_index(drop=True), digits.iloc[1200:].reset_index(drop=True)
    brighter = cur.copy()  # a brighter scanner on the upper rows of the image
    upper = features[:24]
    brighter[upper] = np.clip(brighter[upper].to_numpy() + 4, 0, 16)
    return ref[features], cur[features], brighter[features]


def _batches() -> list[dict]:
    """(name, reference, batch, model, report rows); seeded, so every run sees the same batches."""
    ref = weather_frame(20_000, seed=1)[list(FEATURES)]
    tiny = weather_frame(100_000, seed=4)[list(FEATURES)]
    tiny["temp_c"] = tiny["temp_c"] + 0.8  # KS 0.055 on every row: below the effect floor, yet p ~ 1e-44
    d_ref, d_same, d_bright = _digits()
    return [
        {"name": "weather-none", "ref": ref, "cur": weather_frame(20_000, seed=2)[list(FEATURES)],
         "model": weather_model, "rows": REPORT_ROWS},
        {"name": "weather-moderate", "ref": ref, "cur": weather_frame(20_000, seed=3, shift="moderate")[list(FEATURES)],
         "model": weather_model, "rows": REPORT_ROWS},
        {"name": "weather-severe", "ref": ref, "cur": weather_frame(3_000, seed=5, shift="severe")[list(FEATURES)],
         "model": weather_model, "rows": REPORT_ROWS},
        # A large batch with a tiny shift: Evidently's p-value on the sample flags temp_c, normlab does not.
        {"name": "weather-tiny-shift", "ref": ref, "cur": tiny, "model": weather_model, "rows": REPORT_ROWS},
        # A small batch with a real shift, drawn on a small sample: normlab flags columns Evidently misses.
        {"name": "weather-small-batch", "ref": ref, "cur": weather_frame(400, seed=6, shift="moderate")[list(FEATURES)],
         "model": weather_model, "rows": 100},
        {"name": "digits-same", "ref": d_ref, "cur": d_same, "model": digits_model, "rows": REPORT_ROWS},
        {"name": "digits-brighter", "ref": d_ref, "cur": d_bright, "model": digits_model, "rows": REPORT_ROWS},
    ]


def decide(ref: pd.DataFrame, cur: pd.DataFrame, model) -> DriftRecord:
    """drift.json as `analyze_batch` writes it (the decision path, every row)."""
    features = list(ref.columns)
    scores = drift.score_columns(ref, cur, features, alpha=ALPHA, effect_floor=FLOOR)
    data = drift.summarize_columns(scores, drift_share=SHARE, top=5)
    ref_proba, cur_proba = model(ref), model(cur)
    prediction = drift.prediction_drift(ref_proba, cur_proba, classes=list(range(ref_proba.shape[1])),
                                        alpha=ALPHA, effect_floor=FLOOR)
    drifted_columns = data.drifted_columns + ([drift.PREDICTION_COLUMN] if prediction.drifted else [])
    return DriftRecord(fingerprint="f" * 64, reference_run_id="r" * 32, rows=len(cur), decidable=True,
                       drifted=bool(data.drifted or prediction.drifted), drifted_columns=drifted_columns, data=data,
                       prediction=prediction, performance=None, columns=scores)


def report(batch: dict, full: DriftRecord, out: Path, workspace: Path) -> dict:
    """The report path as `build_report` runs it: samples with the model's outputs, the verdict, save, workspace."""
    ref, cur, model = batch["ref"], batch["cur"], batch["model"]
    features = list(ref.columns)
    samples = []
    for frame in (ref, cur):
        proba = model(frame)
        outputs = {drift.PREDICTION_COLUMN: proba.argmax(axis=1).astype(str), drift.CONFIDENCE_COLUMN: proba.max(axis=1)}
        samples.append(drift.sample_rows(frame.assign(**outputs), batch["rows"], seed=11))
    numeric = [c for c in features if drift.is_numeric(ref[c])]
    categorical = [c for c in features if c not in numeric]
    drawn = [s.column for s in sorted(full.columns, key=lambda s: s.score, reverse=True)][:5]
    # drift.json read back, as `build_report` reads it
    read = DriftRecord.model_validate(json.loads(json.dumps(full.to_json(), default=float)))
    assert read == full
    verdict = read.verdict(alpha=ALPHA, effect_floor=FLOOR, drift_share=SHARE, prediction_decides=True)
    snapshot = drift.evidently_report(
        samples[0], samples[1], numeric=[*numeric, drift.CONFIDENCE_COLUMN],
        categorical=[*categorical, drift.PREDICTION_COLUMN],
        drawn=[*drawn, drift.PREDICTION_COLUMN, drift.CONFIDENCE_COLUMN], name=batch["name"],
        metadata={"batch": batch["name"]}, tags=["test"], verdict=verdict,
    )
    paths = drift.save_report(snapshot, out)
    ws = drift.add_to_workspace(snapshot, workspace, PROJECT)
    return {**paths, **ws}


def evidently_own_drifted(json_path: str) -> set[str]:
    """Columns Evidently's own per-column tests flag in the saved report (its secondary view)."""
    data = json.loads(Path(json_path).read_text(encoding="utf-8"))
    out = set()
    for m in data["metrics"]:
        cfg = m["config"]
        if cfg["type"] == "evidently:metric_v2:ValueDrift" and m["value"] < cfg["threshold"]:
            out.add(cfg["column"])
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("drift-report")
    out = {}
    for batch in _batches():
        full = decide(batch["ref"], batch["cur"], batch["model"])
        out[batch["name"]] = {"full": full, **report(batch, full, root / batch["name"], root / "ws")}
    out["_workspace"] = root / "ws"
    return out


NAMES = ("weather-none", "weather-moderate", "weather-severe", "weather-tiny-shift", "weather-small-batch",
         "digits-same", "digits-brighter")


@pytest.mark.parametrize("name", NAMES)
def test_the_saved_report_shows_the_alerts_drifted_columns(runs, name):
    run = runs[name]
    alert = run["full"].drifted_columns  # what the decision (and the alert) names
    from_html = drift.report_drifted_columns(run["html"])
    from_json = drift.report_drifted_columns(run["json"])
    assert sorted(from_html) == sorted(alert)
    assert from_json == alert  # same order too: features, then model.prediction

    # The count and share the dashboard plots are the decision's.
    data = json.loads(Path(run["json"]).read_text(encoding="utf-8"))
    (count,) = [m for m in data["metrics"] if m["config"]["type"] == drift_report.COUNT_TYPE]
    assert count["value"] == {"count": run["full"].data.n_drifted, "share": run["full"].data.share}

    # Every feature and the model's outputs are in the verdict table, with the decision's numbers.
    rows = {r["column"]: r for r in drift_report.verdict_table(Path(run["html"]).read_text(encoding="utf-8"))}
    assert set(rows) == {c.column for c in run["full"].columns} | {drift.PREDICTION_COLUMN,
                                                                   drift.CONFIDENCE_COLUMN}
    for c in run["full"].columns:
        assert float(rows[c.column]["effect size"]) == pytest.approx(c.score, abs=1e-3)  # shown to 3 decimals
    assert rows[drift.CONFIDENCE_COLUMN]["drifted"].startswith("no")  # reported, never decides


def test_the_cases_cover_drift_and_its_absence(runs):
    assert runs["weather-none"]["full"].drifted_columns == []
    assert runs["digits-same"]["full"].drifted_columns == []
    assert {"temp_c", "humidity"} <= set(runs["weather-moderate"]["full"].drifted_columns)
    assert drift.PREDICTION_COLUMN in runs["weather-severe"]["full"].drifted_columns
    assert len(runs["digits-brighter"]["full"].drifted_columns) >= 5


def test_evidentlys_own_tests_disagree_on_some_batches_and_the_report_still_follows_normlab(runs):
    """Not vacuous: on the sample, Evidently's tests flag columns normlab clears, and miss columns it flags."""
    evidently_only, normlab_only = {}, {}
    for name in NAMES:
        run = runs[name]
        own = evidently_own_drifted(run["json"])  # drawn columns only
        shown = set(drift.report_drifted_columns(run["html"]))
        evidently_only[name] = own - shown - {drift.CONFIDENCE_COLUMN}  # the confidence never decides
        normlab_only[name] = (shown - own) & _drawn_columns(run["json"])
    # The large batch with a tiny shift: Evidently's p-value flags temp_c; normlab's effect floor does not.
    assert "temp_c" in evidently_only["weather-tiny-shift"]
    assert "temp_c" not in drift.report_drifted_columns(runs["weather-tiny-shift"]["html"])
    # The small batch drawn on 100 rows: normlab (every row) flags a column Evidently's sample misses.
    assert normlab_only["weather-small-batch"]
    # And the Evidently section is labelled as the secondary view, below normlab's verdict.
    titles = [w["title"] for w in drift_report.html_dashboard(
        Path(runs["weather-tiny-shift"]["html"]).read_text(encoding="utf-8"))["widgets"][0]["widgets"]]
    assert titles == [drift_report.PRIMARY_TITLE, drift_report.SECONDARY_TITLE]


def _drawn_columns(json_path: str) -> set[str]:
    data = json.loads(Path(json_path).read_text(encoding="utf-8"))
    return {m["config"]["column"] for m in data["metrics"] if m["config"]["type"] == "evidently:metric_v2:ValueDrift"}


def test_the_workspace_dashboard_plots_normlabs_share(runs):
    from evidently.ui.service.base import SeriesFilter
    from evidently.ui.service.storage.local.base import InMemoryDataStorage
    from evidently.ui.workspace import Workspace

    ws = Workspace(str(runs["_workspace"]))
    project_id = ws.search_project(PROJECT)[0].id
    panels = ws.get_dashboard(project_id).panels
    assert len(panels) == 3
    assert {v.metric for p in panels for v in p.values} == {drift_report.COUNT_TYPE}

    storage = InMemoryDataStorage(str(runs["_workspace"]))
    wanted = [SeriesFilter(tags=[], metadata={}, metric=drift_report.COUNT_TYPE, metric_labels={"value_type": "share"})]
    series = asyncio.run(storage.get_data_series(project_id, wanted, None, None)).series
    assert len(series) == 1  # one line across batches
    assert series[0].values == pytest.approx([runs[n]["full"].data.share for n in NAMES])


def test_an_older_dashboard_is_switched_to_normlabs_verdict(tmp_path, runs):
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel
    from evidently.ui.workspace import Workspace

    ws = Workspace(str(tmp_path / "ws"))
    project = ws.create_project("old", description="made by an older normlab")
    old = PanelMetric(legend="share", metric="DriftedColumnsCount", metric_labels={"value_type": "share"})
    project.dashboard.add_panel(line_plot_panel(title="Share of drifted columns per batch", values=[old]))
    from evidently.core.report import Snapshot

    snapshot = Snapshot.load_model(Workspace(str(runs["_workspace"])).get_run(
        runs["weather-moderate"]["project_id"], runs["weather-moderate"]["snapshot_id"]))
    drift.add_to_workspace(snapshot, tmp_path / "ws", "old")
    (panel,) = ws.get_dashboard(project.id).panels
    assert [v.metric for v in panel.values] == [drift_report.COUNT_TYPE]
    assert "normlab verdict" in panel.title


def test_a_verdict_at_odds_with_its_own_columns_is_refused():
    verdict = drift.DriftVerdict(
        columns=[drift.ColumnScore(column="a", test="ks", score=0.5, p_value=0.0, drifted=True)],
        drifted_columns=[], prediction=None, drifted=True, alpha=ALPHA, effect_floor=FLOOR, drift_share=SHARE)
    with pytest.raises(ValueError, match="drifted columns"):
        drift_report.verdict_metrics(verdict)


def test_a_report_without_a_verdict_is_not_read_as_one(tmp_path):
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(size=200), drift.PREDICTION_COLUMN: rng.choice(["0", "1"], 200)})
    snap = drift.evidently_report(ref, ref.assign(x=ref["x"] + 2), numeric=["x"], categorical=[drift.PREDICTION_COLUMN],
                                  drawn=["x"], name="plain", metadata={})
    paths = drift.save_report(snap, tmp_path)
    for path in paths.values():
        with pytest.raises(ValueError, match="no normlab verdict"):
            drift.report_drifted_columns(path)
