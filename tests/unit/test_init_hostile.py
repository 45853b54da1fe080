"""`normlab init` on hostile files: extreme values, stray tokens, empty columns, one-class labels.

Each case starts from scikit-learn's wine table (13 numeric columns, three
cultivars) with a column or a few values made hostile, and checks what init
writes, what it reports, and that `normlab validate` accepts what it wrote.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_wine
from typer.testing import CliRunner

from normlab.cli import app
from normlab.config import load_config
from normlab.data.types import NUMERIC_MIN_SHARE, infer_types
from normlab.profiling import PROMOTION_MIN_MARGIN, init_project, promotion_settings
from normlab.promotion import check_thresholds

runner = CliRunner()
FLOAT_MAX = sys.float_info.max


def _wine() -> pd.DataFrame:
    frame = load_wine(as_frame=True).frame.rename(columns={"target": "cultivar"})
    frame["cultivar"] = frame["cultivar"].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    return frame


def _strict_json(path) -> dict:
    """The suite as strict JSON: Infinity or NaN in it is an error."""
    def refuse(token: str):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def _between(suite: dict, column: str) -> dict:
    (exp,) = [e for e in suite["expectations"]
              if e["type"] == "expect_column_values_to_be_between" and e["kwargs"]["column"] == column]
    return exp["kwargs"]


def _validate(config: str, data: str, summary: str = "summary.json") -> tuple[int, dict, str]:
    result = runner.invoke(app, ["validate", config, "--data", data, "--summary", summary])
    with open(summary, encoding="utf-8") as handle:
        return result.exit_code, json.load(handle), result.output


def test_values_near_the_float_limit_give_finite_bounds_and_a_config_validate_accepts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frame = _wine()
    rng = np.random.default_rng(0)
    n = len(frame)
    frame["huge"] = np.where(rng.random(n) < 0.5, -1.0, 1.0) * rng.uniform(0.5, 1.0, n) * 1e308
    frame["edge"] = np.where(np.arange(n) % 2 == 0, -FLOAT_MAX, FLOAT_MAX)  # the margin saturates both sides
    frame["flat"] = 1.7e308  # one value: the margin is a tenth of it, past the float range
    frame["wide_int"] = np.where(np.arange(n) % 2 == 0, np.iinfo(np.int64).min, np.iinfo(np.int64).max)
    frame.to_csv("extreme.csv", index=False)

    made = init_project("extreme.csv", "cultivar", root=tmp_path)

    suite = _strict_json(tmp_path / "expectations" / "extreme.json")
    types = suite["meta"]["normlab"]["column_types"]
    # Floats above 2**53 are all integral, but no float column of them is an integer column.
    assert types["huge"] == types["edge"] == types["flat"] == "float" and types["wide_int"] == "integer"
    for column in ("huge", "edge", "flat"):
        bounds = _between(suite, column)
        lo, hi = bounds["min_value"], bounds["max_value"]
        assert isinstance(lo, float) and isinstance(hi, float) and math.isfinite(lo) and math.isfinite(hi)
        assert lo <= frame[column].min() and hi >= frame[column].max()
    assert _between(suite, "edge") == {"column": "edge", "min_value": -FLOAT_MAX, "max_value": FLOAT_MAX}
    huge = _between(suite, "huge")
    assert huge["max_value"] > frame["huge"].max() and huge["min_value"] < frame["huge"].min()  # widened
    wide = _between(suite, "wide_int")
    assert wide == {"column": "wide_int", "min_value": -(2**63), "max_value": 2**63 - 1}

    cfg = load_config(made.config_path, [f"workdir={tmp_path / 'work'}"])
    assert cfg.data.expectations == "expectations/extreme.json"
    code, summary, output = _validate("configs/extreme.yaml", "extreme.csv")
    assert code == 0, output
    assert summary["rows_in"] == n and summary["rows_quarantined"] == 0

    beyond = _with_strays(frame.iloc[::3].reset_index(drop=True), "huge", {3: "inf"})
    beyond.to_csv("beyond.csv", index=False)  # "inf" parses as a number: only infinity lies beyond finite bounds
    code, summary, output = _validate("configs/extreme.yaml", "beyond.csv", "beyond.json")
    assert code == 0, output
    quarantined = pd.read_parquet(summary["quarantine_path"])
    assert quarantined["_normlab_row"].tolist() == [3]
    assert quarantined["_normlab_checks"].tolist() == ["expect_column_values_to_be_between(huge); non_finite"]


def _with_strays(frame: pd.DataFrame, column: str, strays: dict[int, str]) -> pd.DataFrame:
    out = frame.copy()
    out[column] = out[column].astype(object)
    for row, text in strays.items():
        out.loc[row, column] = text
    return out


def test_a_numeric_column_with_stray_tokens_stays_numeric_and_those_rows_fail_the_types_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frame = _with_strays(_wine(), "proline", {5: "12abc", 40: "7,5"})
    frame = _with_strays(frame, "alcohol", {17: "n/a"})
    frame["batch"] = [f"lot-{i % 60}" if i % 4 else str(i) for i in range(len(frame))]  # a quarter numbers: text
    frame.to_csv("stray.csv", index=False)

    result = runner.invoke(app, ["init", "--data", "stray.csv", "--label", "cultivar"])
    assert result.exit_code == 0, result.output
    assert "integer (2): magnesium, proline" in result.stdout
    assert ("proline: integer, numbers in 176 of 178 values; 2 stray values ('12abc', '7,5') in rows 5, 40 "
            "fail the types check") in result.stdout
    assert "alcohol: float, numbers in 177 of 178 values; 1 stray value ('n/a') in row 17 fails" in result.stdout
    assert "text (2): cultivar, batch" in result.stdout
    assert "reject 3 rows of this file itself (types)" in result.stdout

    suite = _strict_json(tmp_path / "expectations" / "stray.json")
    assert suite["meta"]["normlab"]["column_types"]["proline"] == "integer"
    assert suite["meta"]["normlab"]["stray_values"] == {"proline": 2, "alcohol": 1}
    proline = _between(suite, "proline")
    clean = _wine()["proline"].drop(index=[5, 40])
    assert proline["min_value"] < clean.min() and proline["max_value"] > clean.max()
    assert isinstance(proline["min_value"], int)

    code, summary, output = _validate("configs/stray.yaml", "stray.csv")
    assert code == 0, output
    quarantined = pd.read_parquet(summary["quarantine_path"]).set_index("_normlab_row")
    assert sorted(quarantined.index) == [5, 17, 40] and set(quarantined["_normlab_checks"]) == {"types"}
    assert quarantined.loc[5, "proline"] == "12abc" and quarantined.loc[40, "proline"] == "7,5"
    assert quarantined.loc[17, "alcohol"] == "n/a"


def test_the_numeric_share_threshold_decides_the_type():
    n = 200
    needed = math.ceil(NUMERIC_MIN_SHARE * n)
    numbers = [str(i) for i in range(n)]
    at = pd.DataFrame({"x": numbers[:needed] + ["x"] * (n - needed)})
    below = pd.DataFrame({"x": numbers[: needed - 1] + ["x"] * (n - needed + 1)})
    types, typed = infer_types(at)
    assert types["x"].kind == "integer" and types["x"].stray.tolist() == list(range(needed, n))
    assert typed["x"].isna().sum() == n - needed and typed["x"].iloc[0] == 0
    assert infer_types(below)[0]["x"].kind == "text"


def test_init_writes_a_promotion_threshold_a_majority_class_model_fails(tmp_path):
    frame = _wine()
    frame.to_csv(tmp_path / "wine.csv", index=False)
    made = init_project(tmp_path / "wine.csv", "cultivar", root=tmp_path)

    cfg = load_config(made.config_path, [f"workdir={tmp_path / 'work'}"])
    majority = frame["cultivar"].value_counts(normalize=True).max()  # grignolino, 71 of 178
    at_least = cfg.promotion.thresholds["id/test/accuracy"]
    assert list(cfg.promotion.thresholds) == ["id/test/accuracy"]
    error = math.sqrt(majority * (1 - majority) / round(0.15 * len(frame)))
    assert at_least == pytest.approx(majority + 2 * error, abs=0.001) and at_least > majority
    assert "id/test/accuracy >= " + str(at_least) in (tmp_path / "configs" / "wine.yaml").read_text()

    (majority_model,) = check_thresholds(cfg.promotion.thresholds, {"id/test/accuracy": majority}, [])
    assert not majority_model.passed
    (good_model,) = check_thresholds(cfg.promotion.thresholds, {"id/test/accuracy": 0.95}, [])
    assert good_model.passed


def test_promotion_margin_shrinks_with_the_test_split_and_stays_within_one():
    many = promotion_settings(pd.Series(["a"] * 60_000 + ["b"] * 40_000), test_fraction=0.15)
    assert many.thresholds["id/test/accuracy"] == pytest.approx(0.6 + PROMOTION_MIN_MARGIN)
    lopsided = promotion_settings(pd.Series(["a"] * 98 + ["b"] * 2 + [None] * 50), test_fraction=0.15)
    assert lopsided.majority == "a" and lopsided.test_rows == 15
    assert lopsided.thresholds["id/test/accuracy"] == 1.0


@pytest.mark.parametrize(("labels", "phrase"), [
    (["barolo"] * 178, "single class ('barolo' in all 178 labelled rows)"),
    ([None] * 170 + ["barolo"] * 8, "single class ('barolo' in all 8 labelled rows)"),
    ([None] * 178, "missing in every row"),
])
def test_a_label_without_two_classes_is_refused_in_one_line(tmp_path, monkeypatch, labels, phrase):
    monkeypatch.chdir(tmp_path)
    frame = _wine()
    frame["cultivar"] = labels
    frame.to_csv("one.csv", index=False)
    result = runner.invoke(app, ["init", "--data", "one.csv", "--label", "cultivar"])
    assert result.exit_code == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: one.csv: label column 'cultivar'") and phrase in errors[0]
    assert not (tmp_path / "configs").exists() and not (tmp_path / "expectations").exists()


def test_an_all_missing_column_is_no_feature_and_an_empty_text_column_is_a_value(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frame = _wine()
    frame["unused"] = np.nan
    frame.to_csv("gaps.csv", index=False)
    frame.assign(blank="").to_parquet("gaps.parquet")

    result = runner.invoke(app, ["init", "--data", "gaps.csv", "--label", "cultivar"])
    assert result.exit_code == 0, result.output
    assert "unused: missing in every row; only its presence is checked, and it is no feature" in result.stdout
    cfg = load_config("configs/gaps.yaml", [f"workdir={tmp_path / 'work'}"])
    assert cfg.data.features == [c for c in frame.columns if c not in ("cultivar", "unused")]
    suite = _strict_json(tmp_path / "expectations" / "gaps.json")
    assert suite["meta"]["normlab"]["column_types"]["unused"] == "empty"
    assert "unused" in suite["expectations"][0]["kwargs"]["column_set"]
    code, summary, output = _validate("configs/gaps.yaml", "gaps.csv")
    assert code == 0 and summary["rows_quarantined"] == 0, output

    result = runner.invoke(app, ["init", "--data", "gaps.parquet", "--label", "cultivar", "--name", "blank"])
    assert result.exit_code == 0, result.output
    suite = _strict_json(tmp_path / "expectations" / "blank.json")
    assert suite["meta"]["normlab"]["column_types"]["blank"] == "text"
    (blank,) = [e for e in suite["expectations"]
                if e["type"] == "expect_column_values_to_be_in_set" and e["kwargs"]["column"] == "blank"]
    assert blank["kwargs"]["value_set"] == [""]
    code, summary, output = _validate("configs/blank.yaml", "gaps.parquet")
    assert code == 0 and summary["rows_quarantined"] == 0, output
