"""One broken batch per fault kind: the right severity, a clear message, and no row lost."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from normlab import gate, pipeline, splitting
from normlab.data.sources import load_builtin
from normlab.errors import DataValidationError
from normlab.gate.contracts import CheckRecord, GateResult
from normlab.gate.quarantine import BATCH, CHECKS, REASONS, ROW, STATUS

_runs = itertools.count()


@pytest.fixture
def digits() -> pd.DataFrame:
    return load_builtin("digits")


@pytest.fixture
def run_gate(tmp_path, tiny_config):
    """Write a frame to CSV, load it as the flow does, run the gate, and check the accounting."""

    def run(frame: pd.DataFrame, *overrides: str, cfg=None) -> GateResult:
        cfg = cfg or tiny_config(*overrides)
        n = next(_runs)
        csv = tmp_path / f"batch{n}.csv"
        frame.to_csv(csv, index=False)
        before = csv.read_bytes()
        run_dir = tmp_path / f"run{n}"
        run_dir.mkdir()
        batch = pipeline.load_batch(cfg.data, run_dir, str(csv))
        result = gate.run_gate(gate.GateScope.from_config(cfg), batch, run_dir)
        assert csv.read_bytes() == before  # the input is never touched
        assert_nothing_lost(result, pd.read_parquet(batch.path))
        return result

    return run


def assert_nothing_lost(result: GateResult, snapshot: pd.DataFrame) -> None:
    """rows_in = accepted + quarantined, from the files; every row is in exactly one of them, unchanged."""
    n = len(snapshot)
    assert result.rows_in == n == result.rows_accepted + result.rows_quarantined
    quarantined = pd.read_parquet(result.quarantine_path) if result.quarantine_path else None
    positions = quarantined[ROW].to_numpy() if quarantined is not None else np.zeros(0, dtype=int)
    assert len(set(positions.tolist())) == len(positions) == result.rows_quarantined
    if quarantined is not None:
        assert (quarantined[CHECKS].str.len() > 0).all() and (quarantined[REASONS].str.len() > 0).all()
        assert (quarantined[BATCH] == result.report.fingerprint).all()
        original = snapshot.iloc[positions].reset_index(drop=True)
        pd.testing.assert_frame_equal(quarantined[list(snapshot.columns)], original)  # kept as they arrived
    if result.blocked:
        assert result.accepted_path is None and result.rows_accepted == 0
        assert (quarantined[STATUS] == "blocked").all()
        return
    accepted = pd.read_parquet(result.accepted_path)
    kept = np.setdiff1d(np.arange(n), positions)
    expected = snapshot.iloc[kept].reset_index(drop=True)
    for column in snapshot.columns:
        if expected[column].dtype == object and accepted[column].dtype != object:
            expected[column] = pd.to_numeric(expected[column])  # a text column the gate repaired
    pd.testing.assert_frame_equal(accepted, expected, check_dtype=False)


def check(result: GateResult, name: str, column: str | None = None) -> CheckRecord:
    found = [c for c in result.report.checks if c.name == name and (column is None or c.column == column)]
    assert len(found) == 1, (name, column)
    return found[0]


def quarantined_rows(result: GateResult) -> pd.DataFrame:
    return pd.read_parquet(result.quarantine_path).set_index(ROW)


def test_a_clean_batch_passes_untouched(run_gate, digits):
    result = run_gate(digits)
    assert not result.blocked and result.rows_quarantined == 0 and result.quarantine_path is None
    assert result.accepted.fingerprint == result.report.fingerprint  # the snapshot itself, no copy
    assert {c.outcome for c in result.report.checks} == {"passed"}


def test_missing_column_blocks_and_keeps_every_row(run_gate, digits):
    result = run_gate(digits.drop(columns=["pixel_7"]))
    assert result.blocked and result.rows_quarantined == len(digits)
    columns = check(result, "columns")
    assert columns.outcome == "blocked" and columns.details["missing"] == ["pixel_7"]
    with pytest.raises(DataValidationError, match=r"blocked by .*columns .*missing \['pixel_7'\]"):
        gate.enforce(result)
    assert quarantined_rows(result)[CHECKS].str.contains("blocked by columns").all()


def test_unexpected_column_blocks(run_gate, digits):
    result = run_gate(digits.assign(user_id=np.arange(len(digits))))
    assert result.blocked
    assert check(result, "columns").details["unexpected"] == ["user_id"]
    assert check(result, "expect_table_columns_to_match_set").outcome == "blocked"


def test_text_in_a_numeric_column_quarantines_only_that_row(run_gate, digits):
    frame = digits.astype({"pixel_12": object})
    frame.loc[40, "pixel_12"] = "twelve"
    result = run_gate(frame)
    assert not result.blocked and result.rows_quarantined == 1
    types = check(result, "types")
    assert types.outcome == "quarantined" and types.details == {"columns": {"pixel_12": 1}}
    row = quarantined_rows(result).loc[40]
    assert row["pixel_12"] == "twelve" and row[CHECKS] == "types"  # kept as it arrived, with its reason
    assert pd.api.types.is_numeric_dtype(pd.read_parquet(result.accepted_path)["pixel_12"])


@pytest.mark.parametrize(("value", "checks"), [
    (np.nan, {"expect_column_values_to_not_be_null(pixel_20)", "non_finite"}),
    (np.inf, {"expect_column_values_to_be_between(pixel_20)", "non_finite"}),
    (-np.inf, {"expect_column_values_to_be_between(pixel_20)", "non_finite"}),
    (17, {"expect_column_values_to_be_between(pixel_20)"}),
    (-1, {"expect_column_values_to_be_between(pixel_20)"}),
])
def test_non_finite_and_out_of_range_values_are_quarantined(run_gate, digits, value, checks):
    frame = digits.astype({"pixel_20": float})
    frame.loc[[3, 99], "pixel_20"] = value
    result = run_gate(frame)
    assert not result.blocked and result.rows_quarantined == 2
    rows = quarantined_rows(result)
    assert sorted(rows.index) == [3, 99]
    assert set(rows.loc[3, CHECKS].split("; ")) == checks
    assert any("pixel_20" in line for line in result.failed)


def test_exact_duplicates_keep_their_first_copy(run_gate, digits):
    frame = pd.concat([digits, digits.iloc[[10, 11, 10]]], ignore_index=True)
    result = run_gate(frame)
    assert result.rows_quarantined == 3
    assert sorted(quarantined_rows(result).index) == [1797, 1798, 1799]
    assert check(result, "duplicates").outcome == "quarantined"


def test_labels_outside_the_known_set_are_quarantined(run_gate, digits):
    frame = digits.copy()
    frame.loc[[5, 6], "label"] = [10, -1]
    result = run_gate(frame)
    assert result.rows_quarantined == 2
    label_set = check(result, "expect_column_values_to_be_in_set", "label")
    assert label_set.outcome == "quarantined" and label_set.unexpected_sample == [10, -1]
    assert (quarantined_rows(result)[REASONS] == "labels outside 0..9 are corrupt or another task").all()


def test_flipped_labels_block_as_poisoning(run_gate, digits):
    frame = digits.copy()
    chosen = np.random.default_rng(0).choice(len(frame), size=len(frame) // 4, replace=False)
    frame.loc[chosen, "label"] = (frame.loc[chosen, "label"] + 3) % 10
    result = run_gate(frame)
    noise = check(result, "label_noise")
    assert result.blocked and noise.outcome == "blocked" and noise.observed > 0.2
    with pytest.raises(DataValidationError, match="label_noise"):
        gate.enforce(result)


def test_a_missing_class_blocks(run_gate, digits):
    result = run_gate(digits[digits["label"] != 3])
    balance = check(result, "class_balance")
    assert result.blocked and balance.details["below"] == {"3": 0.0}


def test_too_few_rows_block(run_gate, digits):
    result = run_gate(digits.head(15))
    assert result.blocked and check(result, "row_count").observed == 15


def test_too_many_rejected_rows_block_the_batch(run_gate, digits):
    frame = digits.copy()
    frame.loc[: len(frame) // 3, "pixel_30"] = 99
    result = run_gate(frame)
    assert result.blocked and check(result, "rejected_share").outcome == "blocked"
    rows = quarantined_rows(result)
    # Rows the range check took out say so; every row names the check that blocked the batch.
    assert "expect_column_values_to_be_between(pixel_30)" in rows.loc[0, CHECKS]
    assert rows[CHECKS].str.contains("blocked by rejected_share").all()


@pytest.mark.parametrize(("severity", "blocked", "quarantined", "outcome"), [
    ("warn", False, 0, "warned"), ("block", True, 1798, "blocked"), ("off", False, 0, "off"),
])
def test_severity_comes_from_the_config(run_gate, digits, severity, blocked, quarantined, outcome):
    frame = pd.concat([digits, digits.iloc[[0]]], ignore_index=True)
    result = run_gate(frame, f"gate.duplicates.severity={severity}")
    assert result.blocked is blocked and result.rows_quarantined == quarantined
    assert check(result, "duplicates").outcome == outcome


def test_suite_severity_override_by_column(run_gate, digits):
    frame = digits.copy()
    frame.loc[8, "pixel_1"] = 50
    frame.loc[9, "pixel_2"] = 50
    result = run_gate(frame, "gate.expectations={'expect_column_values_to_be_between:pixel_2': warn}")
    assert check(result, "expect_column_values_to_be_between", "pixel_1").outcome == "quarantined"
    assert check(result, "expect_column_values_to_be_between", "pixel_2").outcome == "warned"
    assert sorted(quarantined_rows(result).index) == [8]


def test_great_expectations_engine_decides_the_same_rows(run_gate, digits):
    frame = digits.astype({"pixel_20": float})
    frame.loc[3, "pixel_20"] = np.nan
    frame.loc[4, "pixel_21"] = 30
    frame.loc[5, "label"] = 11
    fast = run_gate(frame)
    reference = run_gate(frame, "gate.engine=gx")
    assert sorted(quarantined_rows(fast).index) == sorted(quarantined_rows(reference).index) == [3, 4, 5]
    strip = [c.model_dump(exclude={"engine"}) for c in fast.report.checks]
    assert strip == [c.model_dump(exclude={"engine"}) for c in reference.report.checks]


def _split_and_audit(cfg, result, run_dir):
    run_dir.mkdir()
    prepared = splitting.prepare_splits(cfg.data, cfg.splits, cfg.eval, cfg.seed, result.accepted, run_dir)
    return gate.check_splits(gate.GateScope.from_config(cfg), result.accepted, prepared, run_dir)


def test_contamination_quarantines_earlier_evaluation_rows(tmp_path, tiny_config, run_gate, digits):
    cfg = tiny_config()
    first = run_gate(digits, cfg=cfg)
    audit = _split_and_audit(cfg, first, tmp_path / "split1")
    assert audit.leakage.outcome == "passed" and audit.evaluation_rows > 0
    # The same batch again is not contamination: its evaluation rows go back to their splits.
    again = run_gate(digits, cfg=cfg)
    assert check(again, "contamination").outcome == "passed" and again.rows_quarantined == 0
    # An evaluation row coming back with another label would be trained on: quarantined.
    index = gate.read_evaluation_index(gate.evaluation_index_dir(cfg.workdir_path(), cfg.name))
    assert len(index) == audit.evaluation_rows
    from normlab.gate.checks import content_hashes

    features = [c for c in digits.columns if c != "label"]
    evaluation = np.flatnonzero(np.isin(content_hashes(digits, features), index["feature_hash"].to_numpy()))
    changed = digits.copy()
    changed.loc[evaluation[:3], "label"] = (changed.loc[evaluation[:3], "label"] + 1) % 10
    result = run_gate(changed, cfg=cfg)
    assert check(result, "contamination").outcome == "quarantined"
    assert sorted(quarantined_rows(result).index) == sorted(evaluation[:3].tolist())


def test_leakage_after_the_split_blocks(tmp_path, tiny_config, run_gate, digits):
    cfg = tiny_config()
    # The same images under a second label: content hashes of whole rows differ, so the copies
    # land in any split, and their features then sit in both training and evaluation.
    twins = digits.sample(200, random_state=0).assign(label=lambda f: (f["label"] + 5) % 10)
    result = run_gate(pd.concat([digits, twins], ignore_index=True), cfg=cfg)
    assert not result.blocked
    with pytest.raises(DataValidationError, match=r"split leaks: \d+ of \d+ evaluation rows"):
        _split_and_audit(cfg, result, tmp_path / "split")
    assert not gate.evaluation_index_dir(cfg.workdir_path(), cfg.name).exists()  # a leaking split is not recorded


def test_an_unlabelled_batch_is_judged_without_its_label(tmp_path, tiny_config, digits):
    cfg = tiny_config()
    frame = digits.drop(columns=["label"])
    frame.loc[2, "pixel_4"] = 77
    snapshot = tmp_path / "unlabelled.parquet"
    frame.to_parquet(snapshot, index=False)
    batch = {"path": str(snapshot), "source": "new data", "fingerprint": "f" * 64, "rows": len(frame),
             "columns": list(frame.columns)}
    result = gate.run_gate(gate.GateScope.from_config(cfg), batch, tmp_path / "run")
    assert_nothing_lost(result, frame)
    assert not result.blocked and result.rows_quarantined == 1
    names = {(c.name, c.column) for c in result.report.checks}
    assert ("expect_column_values_to_be_in_set", "label") not in names
    assert check(result, "expect_table_columns_to_match_set").outcome == "passed"
    assert check(result, "label_noise").observed == "skipped: no label column 'label'"
    assert check(result, "class_balance").observed == "skipped: unlabelled batch"
