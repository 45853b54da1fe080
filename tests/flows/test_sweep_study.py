"""``normlab study --quick``, shrunk further (2 seeds, 1 epoch): its one-page report and verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from prefect.logging.configuration import ensure_logging_setup
from typer.testing import CliRunner

from normlab.cli import app
from normlab.study import ACCURACY_MARGIN, STUDY_NORMS
from tests.conftest import REPO

pytestmark = pytest.mark.slow

ONE_OOD = "splits.ood=[{name: contrast, kind: corruption, corruption: contrast, severity: 3}]"
KEYS = ["bn_small_batch", "bn_folding", "bn_adaptation", "rms_matches_layer", "dyt_matches_layer"]


@pytest.fixture(scope="module")
def studied(prefect_harness, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    # Prefect's console handler binds to the stderr of the moment it is set up: here,
    # not inside CliRunner, whose stream is closed once the command returns.
    ensure_logging_setup()
    summary_path = tmp / "study.json"
    result = CliRunner().invoke(app, [
        "study", str(REPO / "configs" / "digits.yaml"), "--quick", "--seeds", "2", "--epochs", "1",
        "--workers", "2", "--set", f"workdir={tmp / 'work'}", "--set", ONE_OOD, "--summary", str(summary_path),
    ])
    assert result.exit_code == 0, result.output
    return json.loads(summary_path.read_text()), f"sqlite:///{tmp / 'work' / 'mlflow.db'}", result.output


def test_every_finding_is_reported_with_its_test_and_intervals(studied):
    summary, _, output = studied
    assert [f["key"] for f in summary["findings"]] == KEYS
    assert summary["held"] == sum(f["held"] for f in summary["findings"])
    for finding in summary["findings"]:
        assert finding["published"] and finding["test"] and finding["verdict"]
        assert finding["measured"], finding["key"]
    assert f"{summary['held']} of 5 findings held on this data" in output


def test_verdicts_follow_the_intervals(studied):
    findings = {f["key"]: f for f in studied[0]["findings"]}
    for key in ("rms_matches_layer", "dyt_matches_layer"):
        diff = findings[key]["measured"][0]
        assert diff["n"] == 2
        inside = diff["low"] > -ACCURACY_MARGIN and diff["high"] < ACCURACY_MARGIN
        assert findings[key]["held"] is inside
    small = findings["bn_small_batch"]["measured"]
    assert [s["label"].split(":")[0] for s in small] == ["batch", "group", "layer", "rms"]
    expected = small[0]["low"] > ACCURACY_MARGIN and all(s["high"] < ACCURACY_MARGIN for s in small[1:])
    assert findings["bn_small_batch"]["held"] is expected
    # Folding is exact whatever the training did: the outputs agree to 1e-5.
    assert findings["bn_folding"]["measured"][0]["mean"] <= 1e-5
    assert findings["bn_adaptation"]["measured"][0]["n"] == 2


def test_one_page_report_plot_and_runs(studied):
    summary, uri, _ = studied
    markdown = Path(summary["report"]["markdown"]).read_text(encoding="utf-8")
    assert markdown.startswith("# normlab study: which normalization findings held on this data")
    assert markdown.count("**held**") + markdown.count("**not held**") == 5
    assert "![the findings](findings.png)" in markdown
    assert "data:image/png;base64," in Path(summary["report"]["html"]).read_text(encoding="utf-8")
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(summary["parent_run_id"])
    assert parent.data.tags["normlab.kind"] == "study"
    for finding in summary["findings"]:
        assert parent.data.tags[f"normlab.study.{finding['key']}"] == ("held" if finding["held"] else "not held")
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "study")}
    assert {"study/study.md", "study/study.html", "study/findings.png", "study/study.json"} <= logged
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == len(STUDY_NORMS) * 2 * 2
