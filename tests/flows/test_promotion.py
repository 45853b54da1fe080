"""Registration, the promotion gate and governance records through the training flow."""

from __future__ import annotations

import re

import mlflow.pyfunc
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from normlab import governance_record, registry
from normlab.data.sources import load_builtin
from normlab.flows.training import training_flow
from normlab.tracking import TrackingStore, tracking_uri

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

FAST = ["eval.bootstrap_samples=200", "promotion.bootstrap_samples=200"]


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory, prefect_harness):
    """Two norms in a row, then a deliberately weakened run, on one store."""
    import os

    from normlab.config import load_config
    from tests.conftest import REPO

    work = tmp_path_factory.mktemp("promotion")
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        def run(*overrides: str) -> dict:
            cfg = load_config(REPO / "configs" / "digits.yaml", [f"workdir={work}", *FAST, *overrides])
            return cfg, training_flow(cfg)

        first = run("train.epochs=3", "model.norm=batch")
        second = run("train.epochs=3", "model.norm=layer", "eval.inference=false")
        weak = run("train.epochs=1", "train.lr=0.0005", "model.norm=layer", "eval.inference=false")
    finally:
        os.chdir(cwd)
    return first, second, weak


def test_first_model_becomes_champion_on_thresholds_alone(three_runs):
    (_cfg, result), _, _ = three_runs
    promotion = result.registry
    assert promotion.version == "1" and promotion.passed
    assert promotion.aliases == ["challenger", "champion"]
    assert "no champion yet" in promotion.reason
    metrics = result.metrics
    # The suite: 10 corruptions x 3 severities, their means, intervals, adaptation and inference.
    assert sum(bool(re.fullmatch(r"ood/[a-z]+/s[123]/accuracy", k)) for k in metrics) == 30
    for key in ("ood/noise/accuracy", "ood/mean/accuracy_ci_low", "id/test/f1_macro_ci_high",
                "ood/noise/s1/adapted/accuracy_gain", "id/test/class/3/recall", "infer/folded/max_abs_diff",
                "time/infer/folded/p95_ms", "infer/int8/accuracy_delta"):
        assert key in metrics, key
    assert metrics["infer/folded/max_abs_diff"] <= 1e-5


def test_the_gate_chooses_between_two_norms_and_says_why(three_runs):
    (cfg, first), (_, second), _ = three_runs
    client = MlflowClient(tracking_uri=cfg.tracking_uri())
    promotion = second.registry
    assert promotion.version == "2"
    expected_champion = 2 if promotion.passed else 1
    assert client.get_registered_model("normlab-digits").aliases["champion"] in (expected_champion, 3)

    version = registry.version_for_run(TrackingStore(cfg.tracking_uri()), "normlab-digits", second.run_id)
    record = governance_record.read_record(TrackingStore(cfg.tracking_uri()), version).to_json()
    gate = record["gate"]
    assert gate["champion"]["version"] == "1"
    compared = [c for c in gate["checks"] if c["kind"] == "champion"]
    assert {c["metric"] for c in compared} >= {"id/test/accuracy", "ood/mean/accuracy", "ood/noise/accuracy"}
    # The champion was re-scored on this run's rows: its ID test accuracy is the first run's.
    assert gate["champion"]["metrics"]["id/test/accuracy"] == pytest.approx(first.metrics["id/test/accuracy"])
    assert all(c["ci_low"] <= c["delta"] <= c["ci_high"] for c in compared)
    assert record["decisions"][0]["reason"] == promotion.reason == gate["reason"]
    assert record["data"]["fingerprint"] == second.data.fingerprint
    assert record["validation"]["rows_in"] == 1797
    assert record["metrics"]["id/test"]["accuracy_ci_low"] <= record["metrics"]["id/test"]["accuracy"]
    assert record["drift_reference"]["artifact_uri"] == f"runs:/{second.run_id}/drift/reference.parquet"
    assert record["prefect"]["flow_run_id"]
    run = client.get_run(second.run_id)
    assert run.data.tags["normlab.registry.version"] == "2"
    assert run.data.metrics["gate/passed"] == float(promotion.passed)


def test_a_weakened_run_is_refused_with_a_clear_reason(three_runs):
    (cfg, _), (_, second), (_, weak) = three_runs
    promotion = weak.registry
    assert not promotion.passed
    assert promotion.aliases == ["challenger"]
    assert promotion.reason.startswith("refused: id/test/accuracy ")
    assert "< 0.9" in promotion.reason and "vs champion v" in promotion.reason
    client = MlflowClient(tracking_uri=cfg.tracking_uri())
    aliases = client.get_registered_model("normlab-digits").aliases
    assert aliases["challenger"] == 3
    assert aliases["champion"] == (2 if second.registry.passed else 1)


def test_champion_serves_raw_rows_and_can_be_replaced_by_hand(three_runs, repo_root):
    from normlab.cli import app

    (cfg, _), _, (_, weak) = three_runs
    frame = load_builtin("digits")
    with tracking_uri(TrackingStore(cfg.tracking_uri())):
        champion = mlflow.pyfunc.load_model("models:/normlab-digits@champion")
    predictions = champion.predict(frame.drop(columns="label").head(50))
    assert (predictions["label"] == frame["label"].head(50)).mean() > 0.8

    runner = CliRunner()
    result = runner.invoke(app, ["promote", weak.run_id, "--reason", "pinned for a latency test", "--by", "ana",
                                 "--set", f"workdir={cfg.workdir}"])
    assert result.exit_code == 0, result.output
    assert "version 3 is now the champion" in result.output
    client = MlflowClient(tracking_uri=cfg.tracking_uri())
    assert client.get_registered_model("normlab-digits").aliases["champion"] == 3
    weak_version = registry.version_for_run(TrackingStore(cfg.tracking_uri()), "normlab-digits", weak.run_id)
    assert weak_version.version == "3"
    record = governance_record.read_record(TrackingStore(cfg.tracking_uri()), weak_version).to_json()
    assert [d["kind"] for d in record["decisions"]] == ["gate", "manual"]
    assert record["decisions"][-1]["by"] == "ana" and record["decisions"][-1]["overrides_gate"]

    missing = runner.invoke(app, ["promote", "f" * 32, "--reason", "x", "--set", f"workdir={cfg.workdir}"])
    assert missing.exit_code == 2
    assert "has no version of registered model 'normlab-digits'" in missing.output
