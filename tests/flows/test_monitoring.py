"""The monitoring flow under the Prefect test harness, with a real webhook receiver on 127.0.0.1.

One model is trained once for the module on 70 % of the digits; clean batches
are draws from the other 30 % (rows the model never saw: no duplicates, no
evaluation rows of the run, so the data gate accepts them), shifted batches
are the same draws with their intensities inverted. Each test monitors under its
own registered-model name, so streaks and alert histories do not mix.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from normlab import drift, monitoring
from normlab.config import load_config
from normlab.data.shifts import corrupt_images
from normlab.data.sources import load_builtin
from normlab.flows.monitoring import monitoring_flow
from normlab.registry import registry_name
from normlab.tracking import TrackingStore
from tests.conftest import REPO
from tests.flows.conftest import SECRET

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prefect_harness):
    """A model trained on 70 % of the digits; the other 30 % are held out for batches."""
    from normlab.flows.training import training_flow

    root = tmp_path_factory.mktemp("monitoring")
    digits = load_builtin("digits")
    order = np.random.default_rng(0).permutation(len(digits))
    cut = int(0.7 * len(digits))
    digits.iloc[order[:cut]].to_parquet(root / "train.parquet", index=False)
    held = digits.iloc[order[cut:]].reset_index(drop=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        cfg = load_config(REPO / "configs" / "digits.yaml", [f"workdir={root / 'work'}", "train.epochs=2"])
        result = training_flow(cfg, data_path=str(root / "train.parquet"))
    return {"work": root / "work", "held": held, "run_id": result.run_id, "train": root / "train.parquet"}


def _config(trained, name: str, *overrides: str):
    return load_config(REPO / "configs" / "digits.yaml",
                       [f"workdir={trained['work']}", f"model.registry_name=normlab-{name}", *overrides])


def _reference(cfg) -> monitoring.Reference:
    """The drift reference the resolve-reference task would find for ``cfg``."""
    return monitoring.resolve_reference(TrackingStore(cfg.tracking_uri()), experiment=cfg.tracking.experiment,
                                        model=registry_name(cfg), workdir=cfg.workdir_path())


def clean_batch(trained, seed: int, rows: int = 400) -> pd.DataFrame:
    """Held-out digits drawn without replacement: the reference distribution, rows the model never saw."""
    return trained["held"].sample(rows, random_state=seed).reset_index(drop=True)


def shifted_batch(trained, seed: int, rows: int = 400) -> pd.DataFrame:
    """A clean batch with inverted intensities (severity 5: dark digits on a bright ground)."""
    frame = clean_batch(trained, seed, rows)
    features = [c for c in frame.columns if c != "label"]
    frame[features] = corrupt_images(frame[features].to_numpy(float), (8, 8), "inversion", 5, seed=seed,
                                     value_range=(0, 16))
    return frame


def _write(frame: pd.DataFrame, path: Path, order: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    os.utime(path, ns=(1_700_000_000_000_000_000 + order, 1_700_000_000_000_000_000 + order))  # landing order
    return str(path)


def test_clean_batch_is_quiet_and_a_shifted_batch_alerts_once(trained, receiver, tmp_path, repo_root, monkeypatch):
    url, received = receiver
    events = []
    monkeypatch.setattr("normlab.tasks.monitoring.emit_event", lambda **kw: events.append(kw))
    cfg = _config(trained, "alerts", "monitor.consecutive=1", f'alerts.urls=["{url}"]')

    clean = monitoring_flow(cfg, data=_write(clean_batch(trained, 1), tmp_path / "clean.parquet"))
    (entry,) = clean.batches
    assert (entry.status, entry.drift.level, entry.alert.sent) == ("processed", "none", False)
    assert entry.rows_in == entry.rows_accepted == 400
    assert entry.drift.share < cfg.monitor.drift_share
    assert received == [] and events == []

    shifted = monitoring_flow(cfg, data=_write(shifted_batch(trained, 2), tmp_path / "shifted.parquet"))
    (entry,) = shifted.batches
    assert entry.drift.level == "detected" and entry.alert.sent is True
    assert entry.drift.share > 0.5 and entry.prediction.drifted is True
    assert entry.performance.accuracy < 0.5  # labelled batch: the model fails on inverted digits
    assert len(received) == 1
    message = received[0]
    assert message["path"] == f"/{SECRET}"
    assert message["title"].startswith("normlab: drift detected for normlab-alerts")
    assert entry.fingerprint[:12] in message["message"]
    for column in entry.drift.columns:
        assert f"`{column.column}`: ks score {column.score:.3f}" in message["message"]
    assert entry.report.html in message["message"] and entry.monitor_run_id in message["message"]
    assert f"Accuracy on this labelled batch: {entry.performance.accuracy:.3f}" in message["message"]
    assert f"class distribution shift {entry.prediction.class_shift:.3f}" in message["message"]
    assert "Next:" in message["message"]
    # The entry as the summary JSON holds it: every key of a processed batch, the alert without its services.
    written = entry.to_json()
    assert set(written) == {"fingerprint", "source", "status", "rows_in", "rows_accepted", "rows_quarantined",
                            "rows_typed", "rows_untyped", "quarantine_path", "gate_report", "quality", "drift",
                            "prediction", "performance", "alert", "quality_alert", "report", "monitor_run_id",
                            "change"}
    assert set(written["alert"]) == {"due", "sent", "targets", "delivered"}
    assert set(written["report"]) == {"html", "json", "snapshot_id"}
    assert set(written["prediction"]) == {"drifted", "class_shift", "confidence_shift"}

    (event,) = events
    assert event["event"] == "normlab.drift.detected"
    assert event["resource"]["prefect.resource.id"] == "normlab.model.normlab-alerts"
    assert event["payload"]["fingerprint"] == entry.fingerprint

    # The report exists, the Evidently workspace has one snapshot per batch, MLflow one run per batch.
    assert Path(entry.report.html).stat().st_size > 10_000
    from evidently.ui.workspace import Workspace

    ws = Workspace(str(trained["work"] / "evidently"))
    (project,) = ws.search_project("normlab-alerts")
    assert len(ws.list_runs(project.id)) == 2
    client = MlflowClient(tracking_uri=cfg.tracking_uri())
    exp = client.get_experiment_by_name("normlab-monitoring")
    runs = client.search_runs([exp.experiment_id], "tags.`normlab.model` = 'normlab-alerts'")
    assert sorted(r.data.tags["normlab.drift.level"] for r in runs) == ["detected", "none"]
    by_level = {r.data.tags["normlab.drift.level"]: r for r in runs}
    assert by_level["detected"].data.metrics["drift/share"] == pytest.approx(entry.drift.share)
    artifacts = {a.path for a in client.list_artifacts(entry.monitor_run_id, "evidently")}
    assert artifacts == {"evidently/report.html", "evidently/report.json"}

    # The URL is nowhere on disk: not in MLflow (params, tags, artifacts), the state or the reports.
    for path in trained["work"].rglob("*"):
        if path.is_file():
            assert b"monitor-secret-7f3a" not in path.read_bytes(), path


def test_a_repeated_batch_is_skipped_even_renamed(trained, tmp_path, repo_root):
    cfg = _config(trained, "repeat")
    first = _write(clean_batch(trained, 3), tmp_path / "landing" / "a.parquet", order=1)
    assert monitoring_flow(cfg, data=first).batches[0].status == "processed"

    again = monitoring_flow(cfg, data=first).batches[0]
    assert again.status == "skipped" and "already processed" in again.reason
    assert again.drift.level == "none"  # the earlier result, for the record

    # A renamed copy is the same content; only the new batch is processed. A file being uploaded is
    # ignored; a broken one is left in place and does not stop the others.
    shutil.copy(first, tmp_path / "landing" / "a-copy.parquet")
    _write(clean_batch(trained, 4), tmp_path / "landing" / "b.parquet", order=2)
    _write(clean_batch(trained, 5), tmp_path / "landing" / "_uploading.parquet", order=3)
    (tmp_path / "landing" / "broken.parquet").write_bytes(b"not a parquet file")
    entries = monitoring_flow(cfg, data=str(tmp_path / "landing")).batches
    assert sorted((Path(e.source).name, e.status) for e in entries) == [
        ("a-copy.parquet", "skipped"), ("a.parquet", "skipped"), ("b.parquet", "processed"),
        ("broken.parquet", "unreadable")]
    assert (tmp_path / "landing" / "broken.parquet").is_file()

    state = json.loads((trained["work"] / "monitoring" / "state.json").read_text())
    done = [fp for fp, rec in state["batches"].items() if rec["status"] == "done"]
    assert {e.fingerprint for e in entries if e.fingerprint} <= set(done)


def test_a_blocked_batch_is_quarantined_and_an_unlabelled_one_is_monitored(trained, receiver, tmp_path, repo_root):
    url, received = receiver
    cfg = _config(trained, "gate", "monitor.consecutive=1", f'alerts.urls=["{url}"]')
    broken = shifted_batch(trained, 12).drop(columns="pixel_5")  # the model's input lacks a column
    (entry,) = monitoring_flow(cfg, data=_write(broken, tmp_path / "broken.parquet")).batches
    assert (entry.status, entry.drift.level, entry.quality.level) == ("processed", "blocked", "blocked")
    assert (entry.rows_accepted, entry.rows_quarantined) == (0, 400)
    assert len(pd.read_parquet(entry.quarantine_path)) == 400  # kept, with reasons, never dropped
    # No drift decision without the model's inputs, but never silence: a data-quality alert says why.
    assert entry.alert.due is False and entry.quality_alert.sent is True
    assert len(received) == 1 and received[0]["title"].startswith("normlab: data blocked for normlab-gate")
    assert "pixel_5" in received[0]["message"] and entry.quarantine_path in received[0]["message"]

    # New data awaiting labels: drift and prediction drift still work, performance is not claimed.
    unlabelled = shifted_batch(trained, 13).drop(columns="label")
    (entry,) = monitoring_flow(cfg, data=_write(unlabelled, tmp_path / "unlabelled.parquet")).batches
    assert (entry.drift.level, entry.rows_accepted, entry.performance) == ("detected", 400, None)
    assert entry.alert.sent is True and len(received) == 2


def test_detection_needs_consecutive_batches_and_the_cooldown_holds_back_a_repeat(
    trained, receiver, tmp_path, repo_root
):
    url, received = receiver
    cfg = _config(trained, "cooldown", "monitor.consecutive=2", f'alerts.urls=["{url}"]')
    for i, seed in enumerate((6, 7, 8)):
        _write(shifted_batch(trained, seed), tmp_path / "landing" / f"shifted-{i}.parquet", order=i)
    entries = monitoring_flow(cfg, data=str(tmp_path / "landing")).batches
    levels = [(e.drift.level, e.alert.sent) for e in entries]
    assert levels == [("suspected", False), ("detected", True), ("detected", False)]
    assert "repeats the alert" in entries[2].drift.reason
    assert len(received) == 1


def test_twenty_clean_batches_raise_at_most_one_detection(trained, tmp_path, repo_root):
    """The decision path on 20 fresh samples of the reference distribution, with `detected` after one window."""
    cfg = _config(trained, "seeds", "monitor.consecutive=1")
    reference = _reference(cfg)

    def level(frame: pd.DataFrame, name: str) -> str:
        folder = tmp_path / name
        path = _write(frame, folder / "batch.parquet")
        batch = monitoring.LandedBatch(skip=False, status="claimed", fingerprint=f"{abs(hash(name)):016x}" * 4,
                                       source=path, path=path, batch_dir=str(folder))
        gated = monitoring.GateOutcome(accepted_path=path, quarantine_path=None, typed_path=path, rows_in=len(frame),
                                       rows_accepted=len(frame), rows_quarantined=0, rows_typed=len(frame),
                                       rows_untyped=0, blocked=False, failed=[], report_path="", problems=[],
                                       missing_features=[])
        analysis = monitoring.analyze_batch(cfg.monitor, cfg.eval, cfg.data, cfg.seed, TrackingStore(cfg.tracking_uri()),
                                            reference, gated, batch)
        decision = drift.decide(analysis.drifted, analysis.drifted_columns, 0, [],
                                consecutive=1, cooldown_minutes=0, dedup_overlap=1.0, min_level="detected",
                                now=monitoring.now_utc())
        return decision.level

    clean = [level(clean_batch(trained, 100 + seed, rows=300), f"clean-{seed}") for seed in range(20)]
    assert clean.count("detected") <= 1, clean
    # The same procedure does see a real shift (so the count above is not trivially zero).
    assert [level(shifted_batch(trained, 200 + seed, rows=300), f"shifted-{seed}") for seed in range(3)] == [
        "detected"] * 3


@pytest.mark.slow
def test_cli_summary_and_fail_on_drift(trained, tmp_path, repo_root):
    from normlab.cli import app

    clean = _write(clean_batch(trained, 9), tmp_path / "clean.parquet")
    shifted = _write(shifted_batch(trained, 10), tmp_path / "shifted.parquet")
    base = ["monitor", "--set", f"workdir={trained['work']}", "--set", "model.registry_name=normlab-cli",
            "--set", "monitor.consecutive=1"]
    result = CliRunner().invoke(app, [*base, "--data", clean, "--summary", str(tmp_path / "s.json"),
                                      "--fail-on-drift"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s.json").read_text())
    (batch,) = summary["batches"]
    for key in ("fingerprint", "rows_in", "rows_accepted"):
        assert key in batch
    assert batch["drift"]["level"] == "none" and isinstance(batch["drift"]["share"], float)
    assert isinstance(batch["drift"]["columns"], list) and batch["alert"]["sent"] is False

    result = CliRunner().invoke(app, [*base, "--data", shifted, "--summary", str(tmp_path / "s2.json")])
    assert result.exit_code == 0, result.output  # drift alone never fails the command
    result = CliRunner().invoke(app, [*base, "--data", str(tmp_path), "--summary", str(tmp_path / "s3.json"),
                                      "--fail-on-drift"])
    assert result.exit_code == 0, result.output  # both batches already processed: nothing drifted this time
    assert {b["status"] for b in json.loads((tmp_path / "s3.json").read_text())["batches"]} == {"skipped"}

    third = _write(shifted_batch(trained, 11), tmp_path / "more" / "shifted.parquet")
    result = CliRunner().invoke(app, [*base, "--data", third, "--fail-on-drift"])
    assert result.exit_code == 5, result.output


def test_no_reference_is_one_clear_error(tmp_path, repo_root):
    from normlab.cli import app

    batch = tmp_path / "b.parquet"
    load_builtin("digits").head(50).to_parquet(batch, index=False)
    result = CliRunner().invoke(app, ["monitor", "--set", f"workdir={tmp_path / 'empty'}", "--data", str(batch)])
    assert result.exit_code == 2
    assert "no drift reference" in result.output and "normlab run" in result.output


@pytest.mark.slow
def test_detected_drift_retrains_through_the_gate(tiny_config, tmp_path):
    from normlab.flows.training import training_flow

    digits = load_builtin("digits")
    order = np.random.default_rng(1).permutation(len(digits))
    cut = int(0.7 * len(digits))
    digits.iloc[order[:cut]].to_parquet(tmp_path / "train.parquet", index=False)
    held = {"held": digits.iloc[order[cut:]].reset_index(drop=True)}
    cfg = tiny_config("monitor.consecutive=1", "monitor.retrain_on_drift=true")
    first = training_flow(cfg, data_path=str(tmp_path / "train.parquet"))

    result = monitoring_flow(cfg, data=_write(shifted_batch(held, 3), tmp_path / "new" / "shifted.parquet"))
    (entry,) = result.batches
    assert entry.drift.level == "detected"
    (retrained,) = result.retrained
    assert retrained.error is None
    assert retrained.run_id not in (None, first.run_id)
    assert retrained.rows_new == 400
    assert retrained.rows == retrained.rows_reference + retrained.rows_new
    # The new model went through the registry's gate like any run: a new version with a recorded decision.
    registry = retrained.registry
    assert int(registry.version) == int(first.registry.version) + 1
    assert "challenger" in registry.aliases and registry.record
    assert set(retrained.to_json()["registry"]) == set(first.record()["registry"])  # the run summary's shape
    client = MlflowClient(tracking_uri=cfg.tracking_uri())
    assert client.get_run(retrained.run_id).info.status == "FINISHED"
    # Later batches compare against whatever the gate made the reference.
    assert result.reference.run_id == _reference(cfg).run_id
