"""Hostile files in a landing folder, and decisions of concurrent monitors (no Prefect, no MLflow).

Every hostile file is generated here: nested columns, reserved column names,
files still being written or appended to, symbolic links out of the folder.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from normlab import monitoring
from normlab.config import load_config
from normlab.drift import AlertRecord, PredictionDrift
from normlab.errors import DataSourceError
from normlab.monitoring import analysis, ledger
from normlab.monitoring.records import _settle_alert
from normlab.registry import registry_name

OLD_NS = 10**18  # 2001: a file that has long stopped changing


@pytest.fixture
def cfg(tmp_path):
    return load_config(None, [f"workdir={tmp_path / 'work'}"])


def _open(cfg, path: str) -> monitoring.LandedBatch:
    """Open and claim a batch for the config's model, as the open-batch task does."""
    return monitoring.open_batch(cfg.workdir_path(), registry_name(cfg), path)


def _decide(cfg, batch, reference, analysis, gated) -> monitoring.Decision:
    """Decide a batch with the config's sections, as the decide task does."""
    return monitoring.decide_batch(cfg.monitor, cfg.alerts, cfg.workdir_path(), batch, reference, analysis, gated)


def _settle(path, order: int = 0) -> str:
    os.utime(path, ns=(OLD_NS + order, OLD_NS + order))
    return str(path)


def _state(cfg) -> dict:
    return json.loads((monitoring.monitor_dir(cfg.workdir_path()) / "state.json").read_text())


def _frame(rows: int = 6, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"a": range(start, start + rows), "label": [i % 2 for i in range(start, start + rows)]})


def _table(path, rows: int = 6, start: int = 0, order: int = 0) -> str:
    """A small valid batch file that stopped changing long ago."""
    frame = _frame(rows, start)
    frame.to_csv(path, index=False) if path.name.endswith(".csv") else frame.to_parquet(path, index=False)
    return _settle(path, order)


def _list_column(path):
    pd.DataFrame({"a": [[1, 2], [3]], "label": [0, 1]}).to_parquet(path)


def _record_column(path):
    pd.DataFrame({"a": [{"x": 1}, {"x": 2}], "label": [0, 1]}).to_parquet(path)


def _map_column(path):
    pq.write_table(pa.table({"a": pa.array([[("k", 1)], [("k", 2)]], type=pa.map_(pa.string(), pa.int64())),
                             "label": [0, 1]}), path)


def _reserved_column(path):
    pd.DataFrame({"_normlab_row": [1, 2], "label": [0, 1]}).to_csv(path, index=False)


def _repeated_column(path):
    pq.write_table(pa.table([[1, 2], [3, 4]], names=["a", "a"]), path)


def _not_a_table(path):
    path.write_bytes(b"PAR1 this is not parquet")


HOSTILE = {
    "list column": ("b.parquet", _list_column),
    "record column": ("b.parquet", _record_column),
    "map column": ("b.parquet", _map_column),
    "reserved column": ("b.csv", _reserved_column),
    "repeated column": ("b.parquet", _repeated_column),
    "not a table": ("b.parquet", _not_a_table),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_file_is_recorded_unreadable_and_not_read_again_until_it_changes(cfg, tmp_path, kind,
                                                                                   monkeypatch):
    name, write = HOSTILE[kind]
    path = tmp_path / name
    write(path)
    path = _settle(path)
    opened = _open(cfg, path)
    assert (opened.skip, opened.status, opened.fingerprint) == (True, "unreadable", None)
    reason = opened.reason
    assert reason.startswith("unreadable, left in place: ") and "\n" not in reason
    state = _state(cfg)
    assert state["batches"] == {}  # nothing claimed, nothing left half done
    record = state["files"][path]
    assert (record["status"], record["reason"]) == ("unreadable", reason)
    assert (record["size"], record["mtime_ns"]) == (os.stat(path).st_size, os.stat(path).st_mtime_ns)

    # The next run knows it by size and time: reported with its reason, not read.
    def no_read(p):
        raise AssertionError(f"{p} read again")

    monkeypatch.setattr(ledger, "read_table", no_read)
    triage = monitoring.triage_batches(cfg.workdir_path(), [path])
    assert triage.new == []
    (entry,) = triage.skipped
    assert entry.status == "unreadable" and entry.reason.startswith(reason)
    monkeypatch.undo()

    # Fixed (new content, new size and time): tried again, and processed.
    _table(tmp_path / name, order=1)
    assert monitoring.triage_batches(cfg.workdir_path(), [path]).new == [path]
    fixed = _open(cfg, path)
    assert (fixed.skip, fixed.status, fixed.rows) == (False, "claimed", 6)


def test_the_reason_names_the_reserved_column_and_the_nested_one(cfg, tmp_path):
    for kind, needle in (("reserved column", "_normlab_row"), ("list column", "'a'")):
        name, write = HOSTILE[kind]
        path = tmp_path / kind.replace(" ", "-") / name
        path.parent.mkdir()
        write(path)
        assert needle in _open(cfg, _settle(path)).reason


@pytest.mark.parametrize(("frame", "needle"), [
    (pd.DataFrame({"_normlab_status": ["x", "y"], "label": [0, 1]}), "'_normlab_status' uses the prefix"),
    (pd.DataFrame([[1, 2], [3, 4]], columns=["a", "a"]), "'a' appears more than once"),
    (pd.DataFrame({"a": [[1, 2], [3]], "label": [0, 1]}), "cannot be hashed"),
], ids=["reserved", "repeated", "nested"])
def test_the_ledger_checks_what_a_reader_lets_through(cfg, tmp_path, monkeypatch, frame, needle):
    path = _table(tmp_path / "b.parquet")
    monkeypatch.setattr(ledger, "read_table", lambda p: frame)
    opened = _open(cfg, path)
    assert opened.status == "unreadable" and needle in opened.reason
    assert _state(cfg)["batches"] == {}


def test_any_exception_of_one_file_is_one_line_and_an_interrupt_is_not_swallowed(cfg, tmp_path, monkeypatch):
    path = _table(tmp_path / "b.parquet")

    def broken(p):
        raise RuntimeError("decoder gave up\nTraceback line two")

    monkeypatch.setattr(ledger, "read_table", broken)
    opened = _open(cfg, path)
    assert opened.status == "unreadable"
    assert opened.reason == "unreadable, left in place: RuntimeError: decoder gave up"

    def interrupted(p):
        raise KeyboardInterrupt

    os.utime(path, ns=(OLD_NS + 5, OLD_NS + 5))
    monkeypatch.setattr(ledger, "read_table", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _open(cfg, path)


def test_a_snapshot_parquet_cannot_hold_is_unreadable(cfg, tmp_path, monkeypatch):
    path = _table(tmp_path / "b.parquet")
    # A column of mixed values (what a lenient reader may hand back): hashable, but no Parquet type holds it.
    monkeypatch.setattr(ledger, "read_table", lambda p: pd.DataFrame({"a": [1, "x"], "label": [0, 1]}))
    opened = _open(cfg, path)
    assert opened.status == "unreadable" and "Arrow" in opened.reason
    assert _state(cfg)["batches"] == {}


# Symbolic links ------------------------------------------------------------------------


SECRET_HEADER = "TOP_SECRET_COLUMN,other"


@pytest.mark.parametrize("target", ["outside", "inside", "system", "dangling"])
def test_a_symlink_is_refused_by_name_and_its_target_is_never_read(cfg, tmp_path, target, monkeypatch):
    land = tmp_path / "landing"
    land.mkdir()
    secret = tmp_path / "secret.csv"
    secret.write_text(f"{SECRET_HEADER}\n1,2\n")
    inside = land / "real.csv"
    _table(inside)
    pointed = {"outside": secret, "inside": inside, "system": "/etc/os-release", "dangling": tmp_path / "gone.csv"}
    link = land / "link.csv"
    link.symlink_to(pointed[target])
    os.utime(link, ns=(OLD_NS + 1, OLD_NS + 1), follow_symlinks=False)

    listed = monitoring.discover_batches(land)
    assert str(link) in listed  # listed as the link, not as what it points to
    reads = []
    real_read = ledger.read_table
    monkeypatch.setattr(ledger, "read_table", lambda p: reads.append(str(p)) or real_read(p))
    opened = _open(cfg, str(link))
    assert opened.status == "refused" and opened.fingerprint is None
    assert "link.csv is a symbolic link" in opened.reason
    assert reads == []
    written = (monitoring.monitor_dir(cfg.workdir_path()) / "state.json").read_text()
    for leaked in ("TOP_SECRET", str(pointed[target]), "secret.csv"):
        assert leaked not in opened.reason and leaked not in written
    assert _state(cfg)["files"][str(link)]["status"] == "refused"
    (entry,) = monitoring.triage_batches(cfg.workdir_path(), [str(link)]).skipped
    assert entry.status == "refused"


def test_a_file_swapped_for_a_link_while_read_is_left_pending(cfg, tmp_path, monkeypatch):
    land = tmp_path / "landing"
    land.mkdir()
    path = land / "b.csv"
    _table(path)
    (tmp_path / "secret.csv").write_text(f"{SECRET_HEADER}\n1,2\n")
    real_read = ledger.read_table

    def swap_then_read(p):
        os.replace(tmp_path / "secret.csv", land / "tmp.csv")
        os.remove(path)
        os.symlink(land / "tmp.csv", path)
        return real_read(p)

    monkeypatch.setattr(ledger, "read_table", swap_then_read)
    opened = _open(cfg, str(path))
    assert opened.status == "pending" and "TOP_SECRET" not in opened.model_dump_json()
    assert monitoring.read_state(cfg.workdir_path()).files == {}


def test_data_that_is_a_symlink_to_a_file_is_an_error_naming_the_link(tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text(f"{SECRET_HEADER}\n1,2\n")
    link = tmp_path / "batch.csv"
    link.symlink_to(secret)
    with pytest.raises(DataSourceError, match=re.escape("batch.csv' is a symbolic link")) as raised:
        monitoring.discover_batches(link)
    assert "secret" not in str(raised.value) and "TOP_SECRET" not in str(raised.value)
    # A landing folder given as a link to a folder is the operator's choice: followed.
    real = tmp_path / "real-landing"
    real.mkdir()
    _table(real / "a.csv")
    (tmp_path / "landing").symlink_to(real)
    assert monitoring.discover_batches(tmp_path / "landing") == [str(real.resolve() / "a.csv")]


# Files still being written -------------------------------------------------------------


class Appender:
    """Appends CSV rows to a file every 0.1 s until stopped: a writer still at work."""

    def __init__(self, path, start: int):
        self.path, self.next, self.stop = path, start, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            _frame(5, self.next).to_csv(self.path, mode="a", header=False, index=False)
            self.next += 5
            time.sleep(0.1)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def test_a_file_being_written_is_pending_then_processed_once_with_every_row(cfg, tmp_path):
    path = tmp_path / "landing" / "b.csv"
    path.parent.mkdir()
    _frame(5).to_csv(path, index=False)
    with Appender(path, start=5) as writer:
        opened = _open(cfg, str(path))
    assert (opened.skip, opened.status) == (True, "pending")
    assert "not yet stable" in opened.reason
    state = monitoring.read_state(cfg.workdir_path())
    assert state.files == {} and state.batches == {}

    # Written to the end and left alone: processed once, with every row.
    _settle(path)
    assert monitoring.triage_batches(cfg.workdir_path(), [str(path)]).new == [str(path)]
    opened = _open(cfg, str(path))
    assert (opened.status, opened.rows, opened.change) == ("claimed", writer.next, None)
    assert pd.read_parquet(opened.path)["a"].tolist() == list(range(writer.next))


def test_a_young_file_that_stands_still_is_read_after_the_settle_interval(cfg, tmp_path):
    path = tmp_path / "b.parquet"
    _frame().to_parquet(path, index=False)  # modified just now, then left alone
    started = time.monotonic()
    opened = _open(cfg, str(path))
    assert opened.status == "claimed"
    assert time.monotonic() - started >= monitoring.SETTLE_S * 0.9


def test_a_file_that_changes_while_it_is_read_is_pending(cfg, tmp_path, monkeypatch):
    path = tmp_path / "b.csv"
    _table(path)
    real_read = ledger.read_table

    def read_while_appending(p):
        frame = real_read(p)
        _frame(3, 100).to_csv(path, mode="a", header=False, index=False)
        return frame

    monkeypatch.setattr(ledger, "read_table", read_while_appending)
    assert _open(cfg, str(path)).status == "pending"
    assert monitoring.read_state(cfg.workdir_path()).files == {}


def _mark_done(cfg, opened):
    with monitoring.locked_state(cfg.workdir_path()) as state:
        state.batches[opened.fingerprint] = monitoring.BatchRecord(
            status="done", source=opened.source, processed_at="2026-01-01T00:00:00+00:00",
            entry=monitoring.BatchEntry(fingerprint=opened.fingerprint, source=opened.source, status="processed",
                                        rows_in=opened.rows, alert=monitoring.NO_ALERT,
                                        quality_alert=monitoring.NO_ALERT))


def test_rows_appended_to_a_processed_file_are_a_batch_of_their_own(cfg, tmp_path):
    path = tmp_path / "b.csv"
    first = _open(cfg, _table(path))
    _mark_done(cfg, first)

    _frame(4, 6).to_csv(path, mode="a", header=False, index=False)
    _settle(path, order=1)
    second = _open(cfg, str(path))
    assert second.status == "claimed" and second.fingerprint != first.fingerprint
    assert second.rows == 4 and pd.read_parquet(second.path)["a"].tolist() == [6, 7, 8, 9]
    assert "appended to since it was processed" in second.change and "4 new rows" in second.change
    # Failed and released: the next try still takes only the new rows.
    monitoring.release_batch(cfg.workdir_path(), second)
    retried = _open(cfg, str(path))
    assert (retried.fingerprint, retried.rows) == (second.fingerprint, 4)
    _mark_done(cfg, retried)

    _settle(path, order=2)  # touched, same content: already processed
    again = _open(cfg, str(path))
    assert again.status == "skipped" and "already processed" in again.reason

    _table(path, rows=3, start=50, order=3)  # rewritten: a new batch of the whole file, said so
    rewritten = _open(cfg, str(path))
    assert rewritten.rows == 3 and "processed in full as a new batch" in rewritten.change


# Decisions: one critical section, landing order ----------------------------------------


GATED = monitoring.GateOutcome(accepted_path=None, quarantine_path=None, typed_path="b/typed.parquet", rows_in=300,
                               rows_accepted=300, rows_quarantined=0, rows_typed=300, rows_untyped=0, blocked=False,
                               failed=[], report_path="b/validation.json", problems=[], missing_features=[])
_SHIFT = {"test": "chi2", "score": 0.0, "p_value": 1.0, "drifted": False, "reference_shares": {},
          "current_shares": {}}
DRIFTED = monitoring.Analysis(
    rows=300, decidable=True, drifted=True, drifted_columns=["a"],
    drift=monitoring.DriftSummary(share=1.0, n_columns=1, n_drifted=1, drifted=True, columns=[]),
    prediction=PredictionDrift.model_validate({"class": _SHIFT, "confidence": {
        "test": "ks", "score": 0.0, "p_value": 1.0, "shifted": False, "reference_mean": 0.9, "current_mean": 0.9},
        "drifted": False}),
    performance=None, drift_json="b/drift.json",
    report_inputs=monitoring.ReportInputs(reference="b/report_reference.parquet", current="b/report_current.parquet"),
    report_columns=["a"])


def _reference(cfg) -> monitoring.Reference:
    """The reference of the monitored model (the name a claim records)."""
    return monitoring.Reference(model=registry_name(cfg), run_id="run-1", version="1", selected_by="champion",
                                reference_accuracy=None, reference="ref.parquet", encoder="encoder.json")


def _claimed(cfg, tmp_path, name: str, order: int) -> monitoring.LandedBatch:
    return _open(cfg, _table(tmp_path / name, start=order * 10, order=order))


def test_a_decision_is_committed_with_the_streak_and_counted_once(cfg, tmp_path):
    reference = _reference(cfg)
    batch = _claimed(cfg, tmp_path, "b.parquet", 0)
    gated = GATED.model_copy(update={"accepted_path": "b/accepted.parquet"})
    first = _decide(cfg, batch, reference, DRIFTED, gated)
    assert (first.level, first.streak, first.alert) == ("suspected", 1, False)
    history = _state(cfg)["models"][reference.model]
    assert (history["streak"], history["streak_batches"]) == (1, ["b/accepted.parquet"])

    # A retried task, or a release and a new claim (a later stage failed): the same decision, counted once.
    assert _decide(cfg, batch, reference, DRIFTED, gated).streak == 1
    monitoring.release_batch(cfg.workdir_path(), batch)
    assert _state(cfg)["batches"][batch.fingerprint]["status"] == "released"
    again = _open(cfg, batch.source)
    assert _decide(cfg, again, reference, DRIFTED, gated).streak == 1
    assert _state(cfg)["models"][reference.model]["streak"] == 1


def test_a_due_alert_starts_the_cooldown_at_once_and_a_failed_delivery_drops_it(tmp_path):
    cfg = load_config(None, [f"workdir={tmp_path / 'work'}", "monitor.consecutive=1"])
    reference = _reference(cfg)
    first = _claimed(cfg, tmp_path, "a.parquet", 0)
    second = _claimed(cfg, tmp_path, "b.parquet", 1)
    decided = _decide(cfg, first, reference, DRIFTED, GATED)
    assert decided.alert is True
    (pending,) = _state(cfg)["models"][reference.model]["alerts"]
    assert (pending["fingerprint"], pending["delivered"]) == (first.fingerprint, None)
    # Another monitor deciding meanwhile sees the pending alert: a repeat, held back.
    held = _decide(cfg, second, reference, DRIFTED, GATED)
    assert held.alert is False and "repeats the alert" in held.reason

    history = monitoring.ModelHistory.model_validate(_state(cfg)["models"][reference.model])
    failed = monitoring.AlertOutcome(due=True, sent=False, targets=2, delivered=0)
    assert _settle_alert(history, "alerts", first.fingerprint, failed).alerts == []
    history = history.model_copy(update={"alerts": [AlertRecord.model_validate(pending)]})
    sent = monitoring.AlertOutcome(due=True, sent=True, targets=2, delivered=1)
    assert _settle_alert(history, "alerts", first.fingerprint, sent).alerts[0].delivered == 1


def _owned_by_another_live_process(cfg, batch) -> None:
    with monitoring.locked_state(cfg.workdir_path()) as state:
        claim = state.batches[batch.fingerprint]
        state.batches[batch.fingerprint] = claim.model_copy(update={"pid": os.getppid()})


def test_a_decision_waits_for_an_earlier_batch_another_monitor_is_processing(cfg, tmp_path):
    reference = _reference(cfg)
    earlier = _claimed(cfg, tmp_path, "a.parquet", 0)
    later = _claimed(cfg, tmp_path, "b.parquet", 1)
    _owned_by_another_live_process(cfg, earlier)
    assert monitoring.earlier_claims(monitoring.read_state(cfg.workdir_path()), later, reference.model)
    assert not monitoring.earlier_claims(monitoring.read_state(cfg.workdir_path()), earlier, reference.model)
    assert not monitoring.earlier_claims(monitoring.read_state(cfg.workdir_path()), later, "another-model")

    decisions: list = []
    waiting = threading.Thread(target=lambda: decisions.append(
        _decide(cfg, later, reference, DRIFTED, GATED)))
    waiting.start()
    time.sleep(1.0)
    assert waiting.is_alive() and reference.model not in monitoring.read_state(cfg.workdir_path()).models
    first = _decide(cfg, earlier, reference, DRIFTED, GATED)  # the other monitor decides
    waiting.join(timeout=30)
    assert (first.level, first.streak) == ("suspected", 1)
    (decided,) = decisions
    assert (decided.level, decided.streak) == ("detected", 2)


def test_a_decision_waits_at_most_the_order_limit_and_says_so(cfg, tmp_path, monkeypatch):
    earlier = _claimed(cfg, tmp_path, "a.parquet", 0)
    later = _claimed(cfg, tmp_path, "b.parquet", 1)
    _owned_by_another_live_process(cfg, earlier)
    monkeypatch.setattr(analysis, "_ORDER_WAIT_S", 0.5)
    decided = _decide(cfg, later, _reference(cfg), DRIFTED, GATED)
    assert decided.streak == 1 and "decided before earlier batch(es) a.parquet" in decided.reason
