"""Monitoring on data it was not built around, through the CLI: generated daily weather.

The history (mixed numeric and text columns, a label the readings only partly
decide) is profiled with `normlab init` and trained with `normlab run`; new
batches are unseen days from the same climate, a warmer and wetter spell
(moderate: inside the observed ranges), a heat wave with storms (severe:
outside them), a re-sent sample of the history, and a repeated file. Every
alert goes to a real webhook on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from prefect.logging.configuration import ensure_logging_setup
from typer.testing import CliRunner

from normlab.cli import app
from normlab.data.weather import flip_labels, weather_frame

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

HISTORY_ROWS = 1500


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_harness):
    """A project folder with the weather history profiled and one model trained on it."""
    root = tmp_path_factory.mktemp("weather")
    weather_frame(HISTORY_ROWS, seed=0).to_csv(root / "history.csv", index=False)
    ensure_logging_setup()  # Prefect's console handler must not bind to CliRunner's short-lived stream
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        made = CliRunner().invoke(app, ["init", "--data", "history.csv", "--label", "weather", "--name", "weather"])
        assert made.exit_code == 0, made.output
        trained = CliRunner().invoke(app, ["run", "configs/weather.yaml", "--data", "history.csv",
                                           "--set", "train.epochs=8", "--summary", str(root / "run.json")])
        assert trained.exit_code == 0, trained.output
    return root


def monitor(project: Path, data: Path, name: str, *args: str, url: str | None = None) -> tuple[int, str, dict]:
    """``normlab monitor`` in the project folder under its own registered-model name (own streak and alerts)."""
    summary = data.parent / f"{data.name}.summary.json"
    command = ["monitor", "configs/weather.yaml", "--data", str(data), "--summary", str(summary),
               "--set", f"model.registry_name=weather-{name}", *args]
    if url:
        command += ["--set", f'alerts.urls=["{url}"]']
    cwd = os.getcwd()
    os.chdir(project)
    try:
        result = CliRunner().invoke(app, command)
    finally:
        os.chdir(cwd)
    return result.exit_code, result.output, json.loads(summary.read_text()) if summary.is_file() else {}


def landing(folder: Path, frames: list[pd.DataFrame]) -> Path:
    """Write batches as CSV files, landing in order (oldest first)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        path = folder / f"day-{i:02d}.csv"
        frame.to_csv(path, index=False)
        os.utime(path, ns=(1_700_000_000_000_000_000 + i, 1_700_000_000_000_000_000 + i))
    return folder


def kinds(received: list[dict]) -> list[str]:
    """Each received alert as ``drift`` or ``data`` (data quality) or ``retraining``, in order."""
    out = []
    for message in received:
        title = message["title"]
        out.append("drift" if "drift" in title.split(":")[1] else "retraining" if "retraining" in title else "data")
    return out


def test_twenty_unseen_clean_batches_raise_no_alert(project, receiver, tmp_path):
    url, received = receiver
    folder = landing(tmp_path / "clean", [weather_frame(300, seed=100 + i) for i in range(20)])
    code, output, summary = monitor(project, folder, "clean", url=url)
    assert code == 0, output
    batches = summary["batches"]
    assert [b["status"] for b in batches] == ["processed"] * 20
    levels = [b["drift"]["level"] for b in batches]
    quality = [b["quality"]["level"] for b in batches]
    print(f"\n20 clean batches: drift levels {pd.Series(levels).value_counts().to_dict()}, "
          f"quality {pd.Series(quality).value_counts().to_dict()}, alerts {len(received)}")
    assert received == []  # false alarms: none
    assert "blocked" not in quality and "detected" not in levels
    # Label noise is judged against the reference, not within each small batch: it never fires on clean days.
    gate_reports = [json.loads(Path(b["gate_report"]).read_text()) for b in batches]
    noise = [next(c for c in r["checks"] if c["name"] == "label_noise") for r in gate_reports]
    assert all(c["success"] for c in noise), [c["observed"] for c in noise]


def test_a_moderate_shift_is_detected_with_one_alert_naming_the_columns(project, receiver, tmp_path):
    url, received = receiver
    folder = landing(tmp_path / "moderate", [weather_frame(500, seed=300 + i, shift="moderate") for i in range(2)])
    code, output, summary = monitor(project, folder, "moderate", url=url)
    assert code == 0, output
    first, second = summary["batches"]
    assert (first["drift"]["level"], second["drift"]["level"]) == ("suspected", "detected")
    assert first["quality"]["level"] == second["quality"]["level"] == "ok"
    assert kinds(received) == ["drift"]
    message = received[0]["message"]
    drifted = [c["column"] for c in second["drift"]["columns"] if c["drifted"]]
    assert "temp_c" in drifted and "humidity" in drifted
    for column in drifted:
        assert f"`{column}`" in message


def test_a_severe_shift_alerts_every_time_for_data_quality_and_drift(project, receiver, tmp_path, monkeypatch):
    url, received = receiver
    events: list[dict] = []
    monkeypatch.setattr("normlab.tasks.monitoring.emit_event", lambda **kw: events.append(kw))
    folder = landing(tmp_path / "severe", [weather_frame(500, seed=400 + i, shift="severe") for i in range(2)])
    code, output, summary = monitor(project, folder, "severe", url=url)
    assert code == 3, output  # blocked batches: the command says so, after processing and alerting
    assert "blocked by the data gate" in output
    first, second = summary["batches"]
    for b in (first, second):
        assert b["status"] == "processed"
        assert b["quality"]["level"] == "blocked"
        assert b["rows_accepted"] == 0 and len(pd.read_parquet(b["quarantine_path"])) == 500  # kept, not dropped
        # The quarantined rows are the drift: measured, not skipped.
        assert b["drift"]["share"] is not None and b["drift"]["n_drifted"] >= 2
    assert (first["drift"]["level"], second["drift"]["level"]) == ("suspected", "detected")
    # The user hears about each batch: the first one's data quality, the second one's drift (its
    # data-quality alert repeats the first within the cooldown and is held back).
    assert first["quality_alert"]["sent"] is True
    assert second["alert"]["sent"] is True
    assert "repeats the data-quality alert" in second["quality"]["reason"]
    assert kinds(received) == ["data", "drift"]
    quality = received[0]["message"]
    assert first["fingerprint"][:12] in quality and first["quarantine_path"] in quality
    assert "Top offending columns" in quality and "temp_c" in quality
    assert [e["event"] for e in events] == ["normlab.data.blocked", "normlab.drift.detected"]
    assert events[0]["payload"]["quarantine_path"] == first["quarantine_path"]


def test_a_batch_that_repeats_training_rows_is_processed_and_judged(project, receiver, tmp_path):
    url, received = receiver
    # A source re-sends 400 days it sent before, 10 % of them with corrected labels: rows the model
    # was trained or evaluated on, some under another label (what `contamination` looks for).
    resent = flip_labels(pd.read_csv(project / "history.csv").sample(400, random_state=5), 0.1, seed=5)
    folder = landing(tmp_path / "resent", [resent])
    code, output, summary = monitor(project, folder, "resent", url=url)
    assert code == 0, output
    (batch,) = summary["batches"]
    assert batch["status"] == "processed" and batch["quality"]["level"] == "ok"
    assert batch["rows_accepted"] == 400 and batch["drift"]["level"] == "none"
    checks = json.loads(Path(batch["gate_report"]).read_text())["checks"]
    contamination = next(c for c in checks if c["name"] == "contamination")
    assert contamination["outcome"] == "warned" and contamination["rows_flagged"] > 0  # reported, not blocking
    assert received == []

    # The same file again: skipped, its earlier result kept.
    code, output, summary = monitor(project, folder, "resent", url=url)
    assert code == 0, output
    assert [b["status"] for b in summary["batches"]] == ["skipped"]


def test_a_failing_retraining_exits_7_and_alerts(project, receiver, tmp_path, monkeypatch):
    url, received = receiver

    def broken_training(*args, **kwargs):
        raise RuntimeError("disk full while writing the checkpoint")

    monkeypatch.setattr("normlab.flows.monitoring.training_flow", broken_training)
    folder = landing(tmp_path / "retrain", [weather_frame(500, seed=500, shift="moderate")])
    code, output, summary = monitor(project, folder, "retrain", "--retrain", "--set", "monitor.consecutive=1", url=url)
    assert code == 7, output
    assert "retraining failed" in output and "disk full" in output
    (batch,) = summary["batches"]
    assert batch["drift"]["level"] == "detected" and summary["status"] == "retraining_failed"
    assert kinds(received) == ["drift", "retraining"]
    assert "disk full" in received[1]["message"]
    # The batch's drift result is recorded: a rerun skips it.
    code, output, summary = monitor(project, folder, "retrain", url=url)
    assert [b["status"] for b in summary["batches"]] == ["skipped"]


def test_run_on_a_missing_file_fails_at_once_in_one_line(tmp_path):
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_API_URL": ""}
    started = time.perf_counter()
    normlab = Path(sys.executable).with_name("normlab")
    done = subprocess.run([str(normlab), "run", "--data", str(tmp_path / "missing.csv")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - started
    assert done.returncode == 2
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: data file") and "does not exist" in lines[0], lines
    # No task ran, so nothing was retried: a retry alone would wait 2 + 5 + 15 s.
    assert elapsed < 15, elapsed
    assert not (tmp_path / ".normlab").exists()
