"""`normlab init`'s profiler: the suite it writes, the thresholds it fits, and the config it makes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from normlab import gate
from normlab.config import load_config
from normlab.errors import ConfigError
from normlab.gate.contracts import Expectation, Suite
from normlab.gate.expectations import load_suite
from normlab.profiling import gate_settings, init_project, name_from_path, profile_suite


def _frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "count": rng.integers(10, 20, n),
        "ratio": rng.uniform(0.0, 1.0, n),
        "colour": rng.choice(["red", "blue"], n),
        "note": [f"free text {i}" for i in range(n)],
        "gappy": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
    })
    frame["label"] = np.where(frame["ratio"] > 0.5, "yes", "no")
    return frame


def _by(suite: Suite, kind: str, column: str | None = None) -> list[Expectation]:
    return [e for e in suite.expectations if e.type == kind and e.kwargs.get("column") == column]


def test_profile_writes_columns_ranges_sets_and_null_policy():
    frame = _frame()
    suite = profile_suite(frame, "label", name="t", source="t.csv")
    (columns,) = _by(suite, "expect_table_columns_to_match_set")
    assert columns.kwargs["column_set"] == list(frame.columns) and columns.meta["severity"] == "block"
    (rows,) = _by(suite, "expect_table_row_count_to_be_between")
    assert rows.kwargs == {"min_value": 30, "max_value": 3000}
    (count,) = _by(suite, "expect_column_values_to_be_between", "count")
    lo, hi = frame["count"].min(), frame["count"].max()
    assert count.kwargs["min_value"] <= lo - 0.9 and count.kwargs["max_value"] >= hi + 0.9
    assert isinstance(count.kwargs["min_value"], int) and count.meta["severity"] == "quarantine"
    (colour,) = _by(suite, "expect_column_values_to_be_in_set", "colour")
    assert colour.kwargs["value_set"] == ["blue", "red"]
    (label,) = _by(suite, "expect_column_values_to_be_in_set", "label")
    assert label.kwargs["value_set"] == ["no", "yes"]
    assert _by(suite, "expect_column_values_to_be_in_set", "note") == []  # too many values for a set
    (gaps,) = _by(suite, "expect_column_values_to_not_be_null", "gappy")
    assert gaps.meta["severity"] == "warn" and 0.8 <= gaps.kwargs["mostly"] <= 0.9
    (solid,) = _by(suite, "expect_column_values_to_not_be_null", "count")
    assert "mostly" not in solid.kwargs and solid.meta["severity"] == "quarantine"
    assert suite.meta["normlab"]["column_types"]["count"] == "integer"


def test_thresholds_leave_room_for_the_profiled_file():
    frame = _frame()
    settings = gate_settings(frame, "label")
    assert 0.05 <= settings.label_noise.max_share <= 0.5
    assert settings.class_balance.min_share <= 0.01


def test_the_profiled_file_passes_and_a_corrupted_copy_does_not(tmp_path):
    frame = _frame()
    frame.to_csv(tmp_path / "trusted.csv", index=False)
    made = init_project(tmp_path / "trusted.csv", "label", root=tmp_path)
    assert made.name == "trusted" and made.own_rows_rejected == 0 and made.own_failures == []
    cfg = load_config(made.config_path, [f"workdir={tmp_path / 'work'}"])
    suite = load_suite(tmp_path / cfg.data.expectations)
    clean = gate.assess(frame, gate.GateScope.from_config(cfg), suite)
    assert clean.accepted.size == len(frame) and not clean.blocked

    broken = frame.copy()
    broken.loc[0, "count"] = 1000
    broken.loc[1, "colour"] = "green"
    broken.loc[2, "label"] = "maybe"
    broken.loc[3, "ratio"] = np.nan
    assessed = gate.assess(broken, gate.GateScope.from_config(cfg), suite)
    assert not assessed.blocked and sorted(set(range(len(frame))) - set(assessed.accepted.tolist())) == [0, 1, 2, 3]
    assert gate.assess(broken.drop(columns=["note"]), gate.GateScope.from_config(cfg), suite).blocked


def test_duplicates_in_the_trusted_file_are_reported(tmp_path):
    frame = _frame()
    pd.concat([frame, frame.head(2)]).to_csv(tmp_path / "dup.csv", index=False)
    made = init_project(tmp_path / "dup.csv", "label", root=tmp_path)
    assert made.own_rows_rejected == 2 and made.own_failures == ["duplicates"]


def test_names_are_safe_file_names(tmp_path):
    assert name_from_path(tmp_path / "my data.v2.csv") == "my-data"
    _frame().to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(ConfigError, match="--name"):
        init_project(tmp_path / "x.csv", "label", name="../up", root=tmp_path)
    assert not (tmp_path / "expectations").exists()


def test_data_whose_features_recur_under_other_labels_gets_a_leakage_allowance():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.integers(0, 3, 400), "b": rng.choice(["x", "y"], 400)})
    frame["label"] = rng.choice(["p", "q"], 400)
    assert gate_settings(frame, "label").leakage.max_share == pytest.approx(1.0)
    assert gate_settings(_frame(), "label").leakage is None
