"""``normlab run`` against a real MLflow tracking server, read back through the REST client.

The session's server has a SQLite backend and serves artifacts itself; two
runs (BatchNorm and GroupNorm) were started at once against it, with a
password in the tracking URI and an alert token in the environment.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_both_concurrent_runs_are_recorded_over_http(server_runs):
    client = MlflowClient(tracking_uri=server_runs.server.url)
    exp = client.get_experiment_by_name("normlab")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert sorted(runs) == sorted(server_runs.run_names)
    for name, norm in zip(server_runs.run_names, ["batch", "group"], strict=True):
        run = runs[name]
        assert run.info.status == "FINISHED"
        assert run.data.params["model.norm"] == norm
        assert run.data.tags["normlab.model.norm"] == norm
        # Artifacts went through the server, not to a local path of the client.
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
        for split in ("id/test", "ood/noise", "ood/contrast", "ood/rotation"):
            assert 0.0 <= run.data.metrics[f"{split}/accuracy"] <= 1.0
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/accuracy")) == [1, 2]
    summaries = {s["run_id"]: s for s in server_runs.summaries}
    assert set(summaries) == {r.info.run_id for r in runs.values()}
    for run in runs.values():
        summary = summaries[run.info.run_id]
        assert run.data.metrics["id/test/accuracy"] == pytest.approx(summary["metrics"]["id/test/accuracy"])


def test_dataset_model_and_artifacts_read_back_from_the_server(server_runs, tmp_path):
    import mlflow.pytorch
    import torch

    from normlab.tracking import TrackingStore, tracking_uri

    client = MlflowClient(tracking_uri=server_runs.server.url)
    summary = server_runs.summaries[0]
    run = client.get_run(summary["run_id"])

    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "digits"
    assert dataset_input.dataset.digest == summary["data"]["fingerprint"][:32]
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"
    assert run.data.tags["normlab.data.fingerprint"] == summary["data"]["fingerprint"]

    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/learning_curves.png", "plots/confusion_id_test.png"}
    png = Path(client.download_artifacts(run.info.run_id, "plots/learning_curves.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text()
    assert "norm: batch" in config

    logged = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
    assert [m.name for m in logged].count("model") == 1
    with tracking_uri(TrackingStore(server_runs.server.url)):
        model = mlflow.pytorch.load_model(summary["model_uri"])
    with np.load(server_runs.workdir / "runs" / run.info.run_id / "prepared.npz") as npz:
        x, y = npz["id/test/x"], npz["id/test/y"]
    with torch.no_grad():
        accuracy = float((model(torch.as_tensor(x)).argmax(1).numpy() == y).mean())
    assert accuracy == pytest.approx(run.data.metrics["id/test/accuracy"])


def test_registry_versions_and_aliases_read_back_from_the_server(server_runs):
    client = MlflowClient(tracking_uri=server_runs.server.url)
    run_ids = {s["run_id"] for s in server_runs.summaries}
    versions = client.search_model_versions("name = 'normlab-digits'")
    # Both runs registered at once: one version each, numbered without a gap.
    assert sorted(v.run_id for v in versions) == sorted(run_ids)
    assert sorted(int(v.version) for v in versions) == [1, 2]
    champion = client.get_model_version_by_alias("normlab-digits", "champion")
    challenger = client.get_model_version_by_alias("normlab-digits", "challenger")
    assert champion.run_id in run_ids and challenger.run_id in run_ids
    for summary in server_runs.summaries:
        registry = summary["registry"]
        assert client.get_model_version("normlab-digits", registry["version"]).run_id == summary["run_id"]
        assert "challenger" in registry["aliases"]
    # The alias is held by a version whose run reported winning it (the later one, if both did).
    claimed = {s["registry"]["version"] for s in server_runs.summaries if "champion" in s["registry"]["aliases"]}
    assert champion.version in claimed


def _artifact_files(client: MlflowClient, run_id: str, dest: Path) -> list[Path]:
    local = Path(client.download_artifacts(run_id, "", str(dest)))
    return [p for p in local.rglob("*") if p.is_file()]


def test_no_password_or_alert_token_in_params_tags_artifacts_or_logs(server_runs, prefect_api, tmp_path):
    from mlflow.artifacts import download_artifacts

    client = MlflowClient(tracking_uri=server_runs.server.url)
    exp = client.get_experiment_by_name("normlab")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2
    places: dict[str, bytes] = {}
    for run in runs:
        rid = run.info.run_id
        places[f"{rid} params"] = json.dumps(run.data.params).encode()
        places[f"{rid} tags"] = json.dumps(run.data.tags).encode()
        places[f"{rid} run info"] = str(run.info.to_proto()).encode()
        for path in _artifact_files(client, rid, tmp_path / rid):
            places[f"{rid} artifact {path.name}"] = path.read_bytes()
        for model in client.search_logged_models([exp.experiment_id], filter_string=f"source_run_id = '{rid}'"):
            model_dir = Path(download_artifacts(artifact_uri=model.artifact_location,
                                                tracking_uri=server_runs.server.url,
                                                dst_path=str(tmp_path / f"{rid}-model")))
            for path in model_dir.rglob("*"):
                if path.is_file():
                    places[f"{rid} model {path.name}"] = path.read_bytes()
    for i, output in enumerate(server_runs.outputs):
        places[f"normlab output {i}"] = output.encode()
    for summary in server_runs.summaries:
        places[f"summary {summary['run_id']}"] = json.dumps(summary).encode()
    places["mlflow server log"] = server_runs.server.log.read_bytes()
    for path in server_runs.workdir.rglob("*"):
        if path.is_file():
            places[f"work folder {path.relative_to(server_runs.workdir)}"] = path.read_bytes()
    # The flow runs' parameters as Prefect stored them.
    request = urllib.request.Request(f"{prefect_api}/flow_runs/filter", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        flow_runs = json.loads(resp.read())
    assert flow_runs, "no flow run recorded by Prefect"
    places["prefect flow run parameters"] = json.dumps([r["parameters"] for r in flow_runs]).encode()

    assert any(name.startswith(f"{runs[0].info.run_id} model") for name in places)
    assert any("artifact config.yaml" in name for name in places)
    for secret in server_runs.secrets:
        leaks = [name for name, content in places.items() if secret.encode() in content]
        assert leaks == [], f"{secret[:6]}... found in: {', '.join(leaks)}"
