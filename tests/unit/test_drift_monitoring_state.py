"""Batch discovery and the exactly-once bookkeeping on disk (no Prefect, no MLflow)."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from normlab import monitoring
from normlab.config import load_config
from normlab.drift import AlertRecord
from normlab.errors import DataSourceError
from normlab.registry import registry_name


@pytest.fixture
def cfg(tmp_path):
    return load_config(None, [f"workdir={tmp_path / 'work'}"])


def _open(cfg, path: str) -> monitoring.LandedBatch:
    """Open and claim a batch for the config's model, as the open-batch task does."""
    return monitoring.open_batch(cfg.workdir_path(), registry_name(cfg), path)


def _table(path, seed: int = 0, order: int = 0) -> str:
    pd.DataFrame({"a": [seed, seed + 1], "label": [0, 1]}).to_parquet(path, index=False)
    os.utime(path, ns=(10**18 + order, 10**18 + order))
    return str(path)


def test_discover_batches_oldest_first_skipping_partial_and_other_files(tmp_path):
    land = tmp_path / "landing"
    land.mkdir()
    _table(land / "z.parquet", order=1)
    _table(land / "a.parquet", order=2)
    pd.DataFrame({"a": [1]}).to_csv(land / "m.csv", index=False)
    os.utime(land / "m.csv", ns=(10**18, 10**18))
    _table(land / "_partial.parquet")
    _table(land / ".hidden.parquet")
    (land / "notes.txt").write_text("x")
    assert [os.path.basename(p) for p in monitoring.discover_batches(land)] == ["m.csv", "z.parquet", "a.parquet"]
    assert monitoring.discover_batches(land / "a.parquet") == [str((land / "a.parquet").resolve())]
    with pytest.raises(DataSourceError, match="does not exist"):
        monitoring.discover_batches(tmp_path / "nope")
    with pytest.raises(DataSourceError, match="batch files end with"):
        monitoring.discover_batches(land / "notes.txt")


def test_claim_release_and_a_dead_processs_claim_is_taken_over(cfg, tmp_path):
    path = _table(tmp_path / "b.parquet")
    opened = _open(cfg, path)
    assert not opened.skip and pd.read_parquet(opened.path).shape == (2, 2)
    again = _open(cfg, path)  # claimed by this (live) process
    assert again.skip and "being processed by pid" in again.reason

    monitoring.release_batch(cfg.workdir_path(), opened)
    assert not _open(cfg, path).skip

    with monitoring.locked_state(cfg.workdir_path()) as state:  # a claim left by a process that died
        claim = state.batches[opened.fingerprint]
        state.batches[opened.fingerprint] = claim.model_copy(update={"pid": 2**22 + 12345})
    assert not _open(cfg, path).skip


def _entry(fingerprint: str, source: str) -> monitoring.BatchEntry:
    """A processed batch's summary entry, as `finish_batch` records it."""
    return monitoring.BatchEntry(
        fingerprint=fingerprint, source=source, status="processed", rows_in=2,
        drift=monitoring.EntryDrift(level="none", reason="no drift", streak=0, share=0.0, n_drifted=0, n_columns=1,
                                    columns=[]),
        alert=monitoring.NO_ALERT.model_copy(update={"reason": "no drift"}), quality_alert=monitoring.NO_ALERT,
        monitor_run_id="m" * 32)


def test_done_batches_are_skipped_by_content_across_restarts(cfg, tmp_path):
    path = _table(tmp_path / "b.parquet")
    fingerprint = _open(cfg, path).fingerprint
    entry = _entry(fingerprint, path)
    with monitoring.locked_state(cfg.workdir_path()) as state:
        state.batches[fingerprint] = monitoring.BatchRecord(status="done", source=path,
                                                            processed_at="2026-01-01T00:00:00", entry=entry)
    state_file = cfg.workdir_path() / "monitoring" / "state.json"
    written = json.loads(state_file.read_text())["batches"][fingerprint]
    assert written == {"status": "done", "source": path, "processed_at": "2026-01-01T00:00:00",
                       "entry": entry.to_json()}  # the keys it was built with, no more
    triage = monitoring.triage_batches(cfg.workdir_path(), [path])  # known by size and time: not even read
    assert triage.new == [] and triage.skipped[0].status == "skipped"
    copy = _table(tmp_path / "copy.parquet")  # same content, another name
    assert monitoring.triage_batches(cfg.workdir_path(), [copy]).new == [copy]
    for p in (path, copy):
        seen = _open(cfg, p)
        assert seen.skip and "already processed" in seen.reason
        skipped = monitoring.skipped_entry(seen)
        assert skipped.drift == entry.drift  # the earlier result, for the record
        assert skipped.to_json() == {**entry.to_json(), "source": p, "status": "skipped", "reason": seen.reason,
                                     "alert": monitoring.NO_ALERT.to_json(),
                                     "quality_alert": monitoring.NO_ALERT.to_json()}


def test_unreadable_file_is_skipped_and_left_in_place(cfg, tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"garbage")
    opened = _open(cfg, str(broken))
    assert (opened.skip, opened.status, opened.fingerprint) == (True, "unreadable", None)
    assert broken.read_bytes() == b"garbage"


def test_corrupt_state_is_one_clear_error(cfg):
    folder = monitoring.monitor_dir(cfg.workdir_path())
    (folder / "state.json").write_text("{not json")
    with pytest.raises(DataSourceError, match=r"unreadable.*move it away"):
        monitoring.read_state(cfg.workdir_path())
    (folder / "state.json").write_text(json.dumps({"version": 1, "files": {"/x.csv": {"size": "big"}}}))
    with pytest.raises(DataSourceError, match=r"files\./x\.csv\.size.*move it away"):
        monitoring.read_state(cfg.workdir_path())


def test_the_state_file_keeps_its_shape_through_a_read_and_a_write(cfg, tmp_path):
    """Records are typed in memory; state.json is written back with the keys it was read with."""
    path = _table(tmp_path / "b.parquet")
    opened = _open(cfg, path)
    state_file = cfg.workdir_path() / "monitoring" / "state.json"
    before = json.loads(state_file.read_text())
    assert set(before["files"][path]) == {"size", "mtime_ns", "fingerprint", "content", "rows", "processed"}
    assert set(before["batches"][opened.fingerprint]) == {"status", "source", "pid", "host", "claimed_ts", "model",
                                                          "landed_ns"}
    # A record as an older monitor may have left it (fewer keys) stays as it is.
    before["models"]["old"] = {"reference_run_id": "r", "streak": 2, "streak_batches": [None, "a.parquet"],
                               "alerts": []}
    state_file.write_text(json.dumps(before))
    with monitoring.locked_state(cfg.workdir_path()) as state:
        assert isinstance(state.batches[opened.fingerprint], monitoring.BatchRecord)
        assert state.models["old"].streak == 2
    assert json.loads(state_file.read_text()) == before


def _reference(run_id: str, version: str | None) -> monitoring.Reference:
    return monitoring.Reference(model="m", run_id=run_id, version=version, selected_by="champion",
                                reference_accuracy=None, reference="ref.parquet", encoder="encoder.json")


def test_history_starts_afresh_for_a_new_reference(cfg):
    alert = AlertRecord(at="2026-01-01T00:00:00+00:00", level="detected", columns=["a"], fingerprint="f" * 64,
                        delivered=1)
    state = monitoring.MonitorState(version=1, models={"m": monitoring.ModelHistory(
        reference_run_id="old", streak=3, streak_batches=["x"], alerts=[alert])})
    assert monitoring.model_history(state, _reference("old", None)).streak == 3
    fresh = monitoring.model_history(state, _reference("new", "2"))
    assert (fresh.streak, fresh.alerts, fresh.version) == (0, [], "2")
    assert fresh.to_json() == {"reference_run_id": "new", "version": "2", "streak": 0, "streak_batches": [],
                               "alerts": []}
