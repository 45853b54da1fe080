"""The registry of the gate's checks: tied to the config, run in stage order, and each entry runs on a tiny frame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from normlab.config import GateConfig, PipelineConfig
from normlab.data.fingerprint import row_hashes
from normlab.gate import MONITOR_DEFAULTS, GateScope, assess, check_registry, severity_of
from normlab.gate import checks as ck
from normlab.gate.check_registry import (
    BATCH_STAGES,
    CHECKS,
    STAGES,
    CheckContext,
    SplitHashes,
    checks_in,
    ordered,
    register_check,
)
from normlab.gate.results import CheckResult, Evaluated

# The order users see the checks in, in every report.
REPORT_ORDER = ["columns", "types", "image_layout", "image_readable", "non_finite", "duplicates", "contamination",
                "image_mode", "image_size", "image_duplicates", "label_noise", "empty_class", "class_balance",
                "row_count", "rejected_share", "leakage"]
# The checks of image files: a batch of values never reports them, a batch of image files only them and the shared ones.
IMAGE_CHECKS = ["image_layout", "image_readable", "image_mode", "image_size", "image_duplicates", "empty_class"]
TABLE_ONLY = ["non_finite", "duplicates", "label_noise"]


def config_sections() -> set[str]:
    """GateConfig's per-check sections: the fields that hold a check's severity."""
    return {name for name, f in GateConfig.model_fields.items()
            if "severity" in getattr(f.annotation, "model_fields", {})}


def tiny_frame(n: int = 40) -> pd.DataFrame:
    """Two well-separated classes, no faults: every check passes on it."""
    rng = np.random.default_rng(0)
    label = np.arange(n) % 2
    return pd.DataFrame({"x0": label * 10.0 + rng.normal(0, 0.5, n), "x1": rng.normal(0, 1, n), "label": label})


def context_of(frame: pd.DataFrame, cfg: PipelineConfig) -> CheckContext:
    earlier = tiny_frame(10) + 100.0  # an evaluation index of unrelated rows: contamination runs, and passes
    index = pd.DataFrame({"feature_hash": ck.content_hashes(earlier, ["x0", "x1"]),
                          "row_hash": row_hashes(earlier, salt=cfg.splits.salt), "salt": cfg.splits.salt})
    typed, _ = ck.check_types(frame, [])
    return CheckContext(frame=frame, work=frame, scope=GateScope.from_config(cfg), suite=None, types_result=typed,
                        keep=np.arange(len(frame)), evaluation_index=index)


def test_the_registry_holds_exactly_the_config_check_sections():
    """A check added to the config without its registry entry (or the other way round) fails here."""
    assert set(CHECKS) == config_sections()
    assert set(ck.WHY) == set(CHECKS)  # every check says why it exists
    cfg = PipelineConfig()
    for name, entry in CHECKS.items():
        assert entry.name == name and entry.stage in STAGES
        assert entry.settings(cfg.gate) is getattr(cfg.gate, name)
        assert severity_of(cfg.gate, name, "train") == getattr(cfg.gate, name).severity


def test_monitoring_defaults_come_from_the_registry():
    with_default = {name for name, entry in CHECKS.items() if entry.monitor_default is not None}
    assert set(MONITOR_DEFAULTS) == with_default
    assert {name for name, f in GateConfig.model_fields.items()
            if "monitor_severity" in getattr(f.annotation, "model_fields", {})} == with_default
    assert all(CHECKS[name].stage in BATCH_STAGES for name in with_default)


def test_the_registry_is_in_stage_order():
    assert list(CHECKS) == [entry.name for entry in ordered()] == REPORT_ORDER
    assert [e.name for e in checks_in("structure")] == ["columns", "types", "image_layout", "image_readable"]
    assert [e.name for e in checks_in("structure", images=False)] == ["columns", "types"]
    assert [e.name for e in checks_in("split")] == ["leakage"]


def test_each_check_applies_to_tables_images_or_both():
    assert [n for n in CHECKS if CHECKS[n].applies_to == "images"] == IMAGE_CHECKS
    assert [n for n in CHECKS if CHECKS[n].applies_to == "tables"] == TABLE_ONLY
    with pytest.raises(ValueError, match="applies to"):
        register_check("spare", stage="rows", applies_to="videos")


def test_assess_reports_the_batch_stage_checks_in_registry_order():
    cfg = PipelineConfig.model_validate({"data": {"path": "x.csv", "label": "label"}})
    checks = assess(tiny_frame(), GateScope.from_config(cfg), None).checks
    assert [c.name for c in checks] == [e.name for stage in BATCH_STAGES for e in checks_in(stage, images=False)]
    assert not set(IMAGE_CHECKS) & {c.name for c in checks}
    assert all(c.outcome == "passed" for c in checks)


@pytest.mark.parametrize("name", [n for n in CHECKS if n not in IMAGE_CHECKS])
def test_each_registered_check_runs_on_a_tiny_frame(name):
    entry = CHECKS[name]
    cfg = PipelineConfig.model_validate({"data": {"path": "x.csv", "label": "label"}})
    frame = tiny_frame()
    if entry.stage == "split":
        hashes = ck.content_hashes(frame, ["x0", "x1"])
        evaluated = entry.evaluate(SplitHashes(train=hashes[:30], evaluation=hashes[30:]), entry.settings(cfg.gate))
    else:
        ctx = context_of(frame, cfg)
        assert entry.unavailable is None or entry.unavailable(ctx) is None
        evaluated = entry.evaluate(ctx, entry.settings(cfg.gate))
    assert isinstance(evaluated, Evaluated)
    result = evaluated.result
    assert result.name == name and result.kind == "check" and result.why == ck.WHY[name]
    assert result.success, result.describe()
    assert (evaluated.rows is None) == (result.scope == "table")
    if evaluated.rows is not None:
        assert evaluated.rows.size == 0


def test_a_check_that_cannot_run_on_the_batch_is_skipped_whatever_its_severity():
    cfg = PipelineConfig.model_validate({"data": {"path": "x.csv", "label": "label"},
                                         "gate": {"class_balance": {"severity": "off"}}})
    checks = {c.name: c for c in assess(tiny_frame().drop(columns=["label"]), GateScope.from_config(cfg), None).checks}
    assert checks["class_balance"].outcome == "off"
    assert checks["class_balance"].observed == "skipped: unlabelled batch"


def test_register_check_refuses_a_taken_name_or_an_unknown_stage():
    with pytest.raises(ValueError, match="already registered"):
        register_check("columns", stage="structure")(lambda ctx, settings: None)
    with pytest.raises(ValueError, match="stage"):
        register_check("spare", stage="later")
    assert list(CHECKS) == REPORT_ORDER


def test_adding_a_check_is_one_registry_entry(monkeypatch):
    """A registered rows-stage check runs after the earlier rows checks; the later stages never see its rows."""
    monkeypatch.setattr(check_registry, "CHECKS", dict(CHECKS))
    monkeypatch.setattr(check_registry, "MONITOR_DEFAULTS", dict(MONITOR_DEFAULTS))

    @register_check("odd_x1", stage="rows", monitor_default="warn", config=lambda gate: gate.duplicates)
    def _odd_x1(ctx: CheckContext, settings) -> Evaluated:
        rows = np.flatnonzero(ctx.view["x1"].to_numpy() > 1.0).astype(np.int64)
        result = CheckResult(name="odd_x1", success=rows.size == 0, kind="check", scope="rows",
                             unexpected_count=int(rows.size), rows_flagged=int(rows.size))
        return Evaluated(result, rows)

    cfg = PipelineConfig.model_validate({"data": {"path": "x.csv", "label": "label"},
                                         "gate": {"rejected_share": {"severity": "warn"}}})
    frame = tiny_frame()
    assessment = assess(frame, GateScope.from_config(cfg), None)
    names = [c.name for c in assessment.checks]
    assert names.index("contamination") < names.index("odd_x1") < names.index("label_noise")
    flagged = np.flatnonzero(frame["x1"].to_numpy() > 1.0)
    assert flagged.size and not np.isin(flagged, assessment.accepted).any()
    assert next(c for c in assessment.checks if c.name == "odd_x1").outcome == "quarantined"
    row_count = next(c for c in assessment.checks if c.name == "row_count")
    assert row_count.observed == len(frame) - flagged.size  # the batch stage counts the accepted rows only
