"""`normlab monitor` on a hostile landing folder, and two monitors at once on one.

The weather model of `test_monitoring_weather` is the reference. Hostile files
are generated here: nested and reserved columns, symbolic links out of the
folder, a file still being written, rows appended to a processed file. Two
real `normlab monitor` processes share one landing folder of drifted days.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from normlab.data.weather import weather_frame
from normlab.monitoring import ledger
from tests.flows import test_monitoring_weather as weather
from tests.flows.test_monitoring_weather import landing, monitor

# The weather model trained once for this module, as `test_monitoring_weather` trains it.
project = weather.project

pytestmark = pytest.mark.usefixtures("prefect_harness")

OLD_NS = 1_700_000_000_000_000_000  # landing times long past: every file has stopped changing
SECRET_HEADER = "TOP_SECRET_COLUMN,other"


def _land(path: Path, order: int) -> None:
    os.utime(path, ns=(OLD_NS + order, OLD_NS + order), follow_symlinks=False)


def _state(root: Path) -> dict:
    return json.loads((root / ".normlab" / "monitoring" / "state.json").read_text())


def _by_name(summary: dict) -> dict[str, dict]:
    return {Path(b["source"]).name: b for b in summary["batches"]}


def test_hostile_files_are_quarantined_and_every_other_batch_is_monitored(project, tmp_path, monkeypatch):
    folder = tmp_path / "landing"
    folder.mkdir()
    weather_frame(300, seed=700).to_csv(folder / "day-00.csv", index=False)
    weather_frame(300, seed=701).assign(tags=[[1, 2]] * 300).to_parquet(folder / "day-01.parquet")
    weather_frame(300, seed=702).assign(_normlab_row=range(300)).to_csv(folder / "day-02.csv", index=False)
    weather_frame(300, seed=703).to_csv(folder / "day-03.csv", index=False)
    secret = tmp_path / "secret.csv"
    secret.write_text(f"{SECRET_HEADER}\n1,2\n")
    (folder / "day-04.csv").symlink_to(secret)
    (folder / "day-05.csv").symlink_to(folder / "day-00.csv")
    for order, name in enumerate(sorted(p.name for p in folder.iterdir())):
        _land(folder / name, order)

    code, output, summary = monitor(project, folder, "hostile")
    assert code == 0, output  # a normal run: the hostile files are reported, not fatal
    batches = _by_name(summary)
    assert {name: b["status"] for name, b in batches.items()} == {
        "day-00.csv": "processed", "day-01.parquet": "unreadable", "day-02.csv": "unreadable",
        "day-03.csv": "processed", "day-04.csv": "refused", "day-05.csv": "refused"}
    assert "'tags'" in batches["day-01.parquet"]["reason"] and "_normlab_row" in batches["day-02.csv"]["reason"]
    for name in ("day-04.csv", "day-05.csv"):
        assert f"{name} is a symbolic link" in batches[name]["reason"]
    assert "Traceback" not in output
    for name, b in batches.items():
        if b["status"] != "processed":
            assert f"{name} {b['status']}" in output  # one line each, by file name
    state = _state(project)
    written = json.dumps(summary) + output + json.dumps(state)
    assert "TOP_SECRET" not in written and str(secret) not in written
    for name in ("day-01.parquet", "day-02.csv"):
        record = state["files"][str(folder / name)]
        assert record["status"] == "unreadable" and record["size"] == (folder / name).stat().st_size

    # The next run reads nothing: the processed files are known, the others recorded until they change.
    reads: list[str] = []
    real_read = ledger.read_table
    monkeypatch.setattr(ledger, "read_table", lambda p: reads.append(str(p)) or real_read(p))
    code, output, summary = monitor(project, folder, "hostile")
    assert code == 0, output
    assert {name: b["status"] for name, b in _by_name(summary).items()} == {
        "day-00.csv": "skipped", "day-01.parquet": "unreadable", "day-02.csv": "unreadable",
        "day-03.csv": "skipped", "day-04.csv": "refused", "day-05.csv": "refused"}
    assert reads == []

    # Fixed (rewritten, so a new size and time): read again and processed.
    weather_frame(300, seed=704).to_parquet(folder / "day-01.parquet")
    _land(folder / "day-01.parquet", 10)
    code, output, summary = monitor(project, folder, "hostile")
    assert code == 0, output
    assert _by_name(summary)["day-01.parquet"]["status"] == "processed"
    assert reads == [str(folder / "day-01.parquet")]


class Writer:
    """Appends five unseen weather days to a CSV every 0.1 s until stopped: an upload still under way."""

    def __init__(self, path: Path):
        self.path, self.rows, self.stop = path, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            weather_frame(5, seed=900 + self.rows).to_csv(self.path, mode="a", header=not self.rows, index=False)
            self.rows += 5
            time.sleep(0.1)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def test_a_batch_being_written_is_left_pending_then_processed_once(project, tmp_path):
    folder = tmp_path / "landing"
    folder.mkdir()
    path = folder / "day-00.csv"
    with Writer(path) as writer:
        while writer.rows < 200:
            time.sleep(0.05)
        code, output, summary = monitor(project, folder, "written")
    assert code == 0, output
    (entry,) = summary["batches"]
    assert entry["status"] == "pending" and "not yet stable" in entry["reason"]
    assert "day-00.csv pending" in output
    assert str(path) not in _state(project)["files"]  # not marked: the next run looks again

    _land(path, 0)  # the upload finished long ago
    code, output, summary = monitor(project, folder, "written")
    assert code == 0, output
    (entry,) = summary["batches"]
    assert (entry["status"], entry["rows_in"], entry["change"]) == ("processed", writer.rows, None)
    code, output, summary = monitor(project, folder, "written")
    assert [b["status"] for b in summary["batches"]] == ["skipped"]

    # More days appended to the processed file: a batch of the new rows only, and the summary says so.
    weather_frame(250, seed=950).to_csv(path, mode="a", header=False, index=False)
    _land(path, 1)
    code, output, summary = monitor(project, folder, "written")
    assert code == 0, output
    (entry,) = summary["batches"]
    assert (entry["status"], entry["rows_in"]) == ("processed", 250)
    assert "appended to since it was processed" in entry["change"] and "appended to since" in output
    assert pd.read_csv(path).shape[0] == writer.rows + 250


@pytest.fixture
def slow_receiver():
    """An Apprise ``json://`` URL to a local webhook that answers after 2 s, and how many alerts it got.

    A batch's alerts are sent between its decision and its commit: a slow
    receiver keeps each monitor there long enough for the other to decide.
    """
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # the http.server API name
            received.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            time.sleep(2.0)  # under Apprise's 4 s read timeout: delivered, slowly
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"json://127.0.0.1:{server.server_port}/alerts", received
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_two_monitors_count_four_drifted_batches_in_landing_order(project, tmp_path, slow_receiver):
    from prefect.settings import PREFECT_API_URL

    url, received = slow_receiver
    folder = landing(tmp_path / "race", [weather_frame(300, seed=600 + i, shift="severe") for i in range(4)])
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    normlab = Path(sys.executable).with_name("normlab")
    command = [str(normlab), "monitor", "configs/weather.yaml", "--data", str(folder),
               "--set", "model.registry_name=weather-race", "--set", f'alerts.urls=["{url}"]',
               # No cooldown: every batch alerts, so each monitor spends seconds between a decision and its commit.
               "--set", "monitor.cooldown_minutes=0"]
    monitors = [subprocess.Popen([*command, "--summary", str(tmp_path / f"monitor-{i}.json")], cwd=project, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [m.communicate(timeout=600)[0] for m in monitors]
    for m, output in zip(monitors, outputs, strict=True):
        assert m.returncode in (0, 3), output  # 3: the severe days are blocked by the data gate, as any run says

    processed: dict[str, dict] = {}
    split: list[list[str]] = []
    for i in range(2):
        mine = [b for b in json.loads((tmp_path / f"monitor-{i}.json").read_text())["batches"]
                if b["status"] == "processed"]
        split.append([Path(b["source"]).name for b in mine])
        for b in mine:
            assert Path(b["source"]).name not in processed  # each batch once
            processed[Path(b["source"]).name] = b
    print(f"\nbatches processed by each monitor: {split}")
    days = sorted(processed)
    assert days == [f"day-{i:02d}.csv" for i in range(4)]
    assert [processed[d]["drift"]["level"] for d in days] == ["suspected", "detected", "detected", "detected"]
    assert [processed[d]["drift"]["streak"] for d in days] == [1, 2, 3, 4]
    history = _state(project)["models"]["weather-race"]
    assert history["streak"] == len(history["streak_batches"]) == 4
    # Every blocked day raised a data-quality alert, every `detected` one a drift alert, each delivered once.
    assert len(received) == 4 + 3
    assert [a["delivered"] for a in history["alerts"]] == [1, 1, 1]
    assert [a["delivered"] for a in history["quality_alerts"]] == [1, 1, 1, 1]
