"""Random faults in random frames under random severities: the gate never loses or duplicates a row."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from normlab import gate, pipeline
from normlab.config import validate_config
from tests.data.test_gate_faults import assert_nothing_lost

FEATURES = ["x0", "x1", "x2"]
SEVERITIES = st.sampled_from(["block", "quarantine", "warn", "off"])
_runs = itertools.count()


@st.composite
def faulty_frames(draw) -> pd.DataFrame:
    n = draw(st.integers(1, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    frame = pd.DataFrame({c: rng.integers(0, 10, n).astype(float) for c in FEATURES})
    frame["label"] = (frame["x0"] > 4).astype(int)
    columns = {c: frame[c].astype(object) for c in [*FEATURES, "label"]}
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["nan", "inf", "range", "text", "label", "duplicate"]))
        row, column = draw(st.integers(0, n - 1)), draw(st.sampled_from(FEATURES))
        if kind == "nan":
            columns[column][row] = np.nan
        elif kind == "inf":
            columns[column][row] = draw(st.sampled_from([np.inf, -np.inf]))
        elif kind == "range":
            columns[column][row] = draw(st.sampled_from([-3.0, 42.0]))
        elif kind == "text":
            columns[column][row] = "n/a?"
        elif kind == "label":
            columns["label"][row] = draw(st.sampled_from([7, "cat"]))
        else:
            source = draw(st.integers(0, n - 1))
            for c in columns:
                columns[c][row] = columns[c][source]
    frame = pd.DataFrame(columns)
    if draw(st.booleans()) and n > 1:
        frame = frame.drop(columns=[draw(st.sampled_from(FEATURES))])
    return frame


SUITE = {
    "name": "prop",
    "expectations": [
        *({"type": "expect_column_values_to_be_between", "kwargs": {"column": c, "min_value": 0, "max_value": 9},
           "meta": {"severity": "quarantine"}} for c in FEATURES),
        *({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": c}, "meta": {"severity": "quarantine"}}
          for c in FEATURES),
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "label", "value_set": [0, 1]},
         "meta": {"severity": "quarantine"}},
    ],
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(frame=faulty_frames(), severities=st.fixed_dictionaries({
    name: SEVERITIES for name in ("columns", "types", "non_finite", "duplicates", "label_noise", "class_balance",
                                  "row_count", "rejected_share")}))
def test_rows_in_equals_accepted_plus_quarantined(tmp_path, frame, severities):
    n = next(_runs)
    suite_path = tmp_path / f"suite{n}.json"
    suite_path.write_text(json.dumps(SUITE))
    cfg = validate_config({
        "name": "prop", "workdir": str(tmp_path / f"work{n}"),
        "data": {"path": "unused.csv", "label": "label", "expectations": str(suite_path)},
        "gate": {name: {"severity": s} for name, s in severities.items()},
    })
    csv = tmp_path / f"batch{n}.csv"
    frame.to_csv(csv, index=False)
    run_dir = tmp_path / f"run{n}"
    run_dir.mkdir()
    batch = pipeline.load_batch(cfg.data, run_dir, str(csv))
    result = gate.run_gate(gate.GateScope.from_config(cfg), batch, run_dir)
    assert_nothing_lost(result, pd.read_parquet(batch.path))
    report = result.report
    assert report.rows_in == report.rows_accepted + report.rows_quarantined == len(frame)
    assert result.blocked == any(c.outcome == "blocked" for c in report.checks)
    # A row is quarantined only by a failed check that is allowed to reject rows.
    rejecting = {c.name for c in report.checks if c.outcome in ("quarantined", "blocked")}
    assert (result.rows_quarantined > 0) == bool(rejecting)
