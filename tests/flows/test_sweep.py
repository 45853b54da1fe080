"""A tiny sweep on a local Dask cluster of 2 workers: nested MLflow runs, the report, reproducing a point."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from prefect.logging.configuration import ensure_logging_setup
from typer.testing import CliRunner

from normlab.cli import app
from normlab.inference import LATENCY_KEY
from tests.conftest import REPO

pytestmark = pytest.mark.slow

NORMS, BATCH_SIZES, SEEDS, EPOCHS = ("batch", "layer"), (8, 32), (0, 1), 2
ONE_OOD = "splits.ood=[{name: noise, kind: corruption, corruption: gaussian_noise, severity: 3}]"


@pytest.fixture(scope="module")
def swept(prefect_harness, tmp_path_factory):
    """Run ``normlab sweep`` once for the module; returns (summary, tracking URI, output text)."""
    tmp = tmp_path_factory.mktemp("sweep")
    # Prefect's console handler binds to the stderr of the moment it is set up: here,
    # not inside CliRunner, whose stream is closed once the command returns.
    ensure_logging_setup()
    summary_path = tmp / "summary.json"
    result = CliRunner().invoke(app, [
        "sweep", str(REPO / "configs" / "digits.yaml"), "--set", f"workdir={tmp / 'work'}",
        "--set", f"train.epochs={EPOCHS}", "--set", ONE_OOD,
        "--norms", ",".join(NORMS), "--batch-sizes", ",".join(map(str, BATCH_SIZES)),
        "--seeds", ",".join(map(str, SEEDS)), "--workers", "2", "--summary", str(summary_path),
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(summary_path.read_text())
    return summary, f"sqlite:///{tmp / 'work' / 'mlflow.db'}", result.output


def test_a_grid_point_s_task_run_is_named_after_the_point():
    from normlab.sweep_contracts import GridPoint
    from normlab.tasks.sweep import run_point

    # Prefect formats a string task run name with the task's parameters.
    assert run_point.task_run_name.format(point=GridPoint(norm="batch", batch_size=8, seed=1)) == "batch-bs8-s1"


def test_summary_lists_every_grid_point_with_single_run_metrics(swept):
    summary, _, _ = swept
    grid = sorted((p["norm"], p["batch_size"], p["seed"]) for p in summary["points"])
    assert grid == sorted((n, b, s) for n in NORMS for b in BATCH_SIZES for s in SEEDS)
    assert summary["status"] == "finished"
    for point in summary["points"]:
        assert point["status"] == "finished"
        assert len(point["run_id"]) == 32
        for key in ("id/test/accuracy", "ood/noise/accuracy", "ood/mean/accuracy", "id/val/accuracy",
                    "time/train_seconds", LATENCY_KEY):
            assert key in point["metrics"], key
        assert 0.0 <= point["metrics"]["id/test/accuracy"] <= 1.0
    assert len({p["run_id"] for p in summary["points"]}) == len(summary["points"])


def test_every_point_is_a_child_run_of_the_parent(swept):
    summary, uri, _ = swept
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["normlab.kind"] == "sweep"
    assert "mlflow.parentRunId" not in parent.data.tags
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_id = {c.info.run_id: c for c in children}
    assert set(by_id) == {p["run_id"] for p in summary["points"]}
    for point in summary["points"]:
        child = by_id[point["run_id"]]
        assert child.info.status == "FINISHED"
        assert child.data.params["model.norm"] == point["norm"]
        assert child.data.params["train.batch_size"] == str(point["batch_size"])
        assert child.data.params["seed"] == str(point["seed"])
        assert child.data.params["train.threads"] == "1"
        assert child.data.tags["normlab.data.fingerprint"] == summary["data"]["fingerprint"]
        assert child.data.metrics["id/test/accuracy"] == pytest.approx(point["metrics"]["id/test/accuracy"])
        history = client.get_metric_history(child.info.run_id, "val/accuracy")
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))
        assert "config.yaml" in {a.path for a in client.list_artifacts(child.info.run_id)}
        assert child.data.tags["normlab.model_uri"] == f"runs:/{child.info.run_id}/model"


def test_report_is_written_and_logged_to_the_parent(swept):
    summary, uri, output = swept
    report = summary["report"]
    markdown = Path(report["markdown"]).read_text(encoding="utf-8")
    assert "| norm | batch 8 | batch 32 |" in markdown
    assert "8 of 8 grid points finished" in markdown
    for name in ("accuracy_vs_batch_size.png", "convergence.png", "time_and_latency.png"):
        assert f"plots/{name}" in markdown
    assert "data:image/png;base64," in Path(report["html"]).read_text(encoding="utf-8")
    with Path(report["results_csv"]).open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["run_id"] for r in rows} == {p["run_id"] for p in summary["points"]}
    # The aggregate is the mean over seeds of the points' own metrics.
    for cell in summary["aggregate"]:
        values = [p["metrics"]["id/test/accuracy"] for p in summary["points"]
                  if (p["norm"], p["batch_size"]) == (cell["norm"], cell["batch_size"])]
        assert cell["id/test/accuracy"]["n"] == len(SEEDS)
        assert cell["id/test/accuracy"]["mean"] == pytest.approx(sum(values) / len(values))
        assert cell["id/test/accuracy"]["low"] <= cell["id/test/accuracy"]["mean"] <= cell["id/test/accuracy"]["high"]
    client = MlflowClient(tracking_uri=uri)
    logged = {a.path for a in client.list_artifacts(summary["parent_run_id"], "report")}
    assert {"report/report.md", "report/report.html", "report/results.csv", "report/aggregate.csv"} <= logged
    assert "ID test accuracy: mean [95 % interval] over seeds" in output


def test_reproducing_a_grid_point_gives_identical_metrics(swept, tmp_path):
    summary, uri, _ = swept
    point = next(p for p in summary["points"] if p["norm"] == "batch" and p["batch_size"] == 8)
    out = tmp_path / "reproduce.json"
    result = CliRunner().invoke(app, ["reproduce", point["run_id"], "--tracking-uri", uri, "--summary", str(out)])
    assert result.exit_code == 0, result.output
    comparison = json.loads(out.read_text())
    assert comparison["status"] == "identical"
    assert comparison["differ"] == []
    compared = {r["key"] for r in comparison["metrics"] if r["repeatable"]}
    assert {"id/test/accuracy", "ood/noise/accuracy", "val/accuracy", "train/loss"} <= compared
    assert "time/train_seconds" in comparison["unrepeatable"]
    client = MlflowClient(tracking_uri=uri)
    again = client.get_run(comparison["reproduced_run_id"])
    assert again.data.tags["normlab.reproduces"] == point["run_id"]
    assert again.data.metrics["id/test/accuracy"] == point["metrics"]["id/test/accuracy"]
