"""The training pipeline's stage contracts: frozen, closed, and JSON round-trippable (what Prefect needs)."""

from __future__ import annotations

import pydantic
import pytest

from normlab.contracts import (
    Batch,
    CheckRow,
    Decision,
    Publication,
    RunHandle,
    RunSummary,
    SweepParent,
    ValidationEntry,
    as_batch,
)


def _batch() -> Batch:
    return Batch(path="/runs/r/batch.parquet", source="builtin:digits", fingerprint="f" * 64, rows=3,
                 columns=["a", "label"])


def test_a_contract_is_frozen_and_refuses_unknown_fields():
    batch = _batch()
    with pytest.raises(pydantic.ValidationError):
        batch.rows = 4
    with pytest.raises(pydantic.ValidationError):
        Batch(**batch.model_dump(), extra="x")


def test_a_run_handle_round_trips_through_json():
    run = RunHandle(run_id="r" * 32, run_dir="/runs/r", resumed=True, batch=_batch())
    assert RunHandle.model_validate_json(run.model_dump_json()) == run
    parent = SweepParent(run_id="p" * 32, run_dir="/runs/p", points=[{"norm": "batch", "batch_size": 8, "seed": 0}])
    assert SweepParent.model_validate_json(parent.model_dump_json()).points == parent.points
    assert isinstance(parent, RunHandle) and parent.batch is None


def test_as_batch_takes_a_mapping_with_more_keys():
    batch = _batch()
    assert as_batch(batch) is batch
    assert as_batch({**batch.model_dump(), "batch_dir": "/monitor/b"}) == batch


def test_summaries_keep_the_json_shapes():
    assert _batch().data_summary().model_dump() == {"fingerprint": "f" * 64, "rows": 3, "source": "builtin:digits"}
    assert Publication(enabled=False).summary() == {"enabled": False}
    published = Publication(enabled=True, name="m", version="2", aliases=["challenger"], record="runs:/r/x.json",
                            passed=False, reason="refused: x")
    assert list(published.summary()) == ["enabled", "name", "version", "aliases", "record", "passed", "reason"]
    decision = Decision(enabled=True, passed=True, reason="passed", checks=[], champion=None, tolerance=0.0,
                        confidence=0.95, bootstrap_samples=10, decided_at="2026-01-01T00:00:00+00:00")
    assert list(decision.record().to_json()) == ["passed", "reason", "checks", "champion", "tolerance", "confidence",
                                                 "bootstrap_samples", "decided_at"]


def test_a_run_summary_keeps_the_json_shape_of_normlab_run_summary():
    check = CheckRow(check="columns", column="", severity="block", outcome="passed", rows=0, detail="")
    validation = ValidationEntry(success=True, failed=[], rows_in=3, rows_accepted=3, rows_quarantined=0,
                                 quarantine_path=None, checks=[check])
    summary = RunSummary(run_id="r" * 32, resumed=False, tracking_uri="sqlite:///m.db", model_uri="runs:/r/model",
                         data=_batch().data_summary(), validation=validation, splits={"id/train": 2, "id/test": 1},
                         metrics={"id/test/accuracy": 1.0}, registry=Publication(enabled=False))
    record = summary.record()
    assert list(record) == ["run_id", "resumed", "tracking_uri", "model_uri", "data", "validation", "splits",
                            "metrics", "registry"]
    assert record["data"] == {"fingerprint": "f" * 64, "rows": 3, "source": "builtin:digits"}
    assert list(record["validation"]) == ["success", "failed", "rows_in", "rows_accepted", "rows_quarantined",
                                          "quarantine_path", "checks"]
    assert record["validation"]["checks"] == [check.model_dump()]
    assert record["registry"] == {"enabled": False}
    assert RunSummary.model_validate_json(summary.model_dump_json()).record() == record  # what Prefect persists
