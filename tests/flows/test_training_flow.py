"""The training flow under a Prefect test harness, read back through MlflowClient."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from normlab.data.sources import load_builtin
from normlab.errors import DataValidationError
from normlab.flows.training import training_flow

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _non_timing(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not k.startswith("time/")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, prefect_harness):
    import os

    from normlab.config import load_config
    from tests.conftest import REPO

    work = tmp_path_factory.mktemp("flow")
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        cfg = load_config(REPO / "configs" / "digits.yaml", [f"workdir={work}", "train.epochs=3"])
        result = training_flow(cfg)
    finally:
        os.chdir(cwd)
    return cfg, result


def test_run_is_recorded_with_params_metrics_dataset_and_artifacts(finished):
    _cfg, result = finished
    client = MlflowClient(tracking_uri=result.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"

    params = run.data.params
    assert params["model.norm"] == "batch"
    assert params["train.epochs"] == "3"
    assert params["splits.ood.noise.corruption"] == "gaussian_noise"

    metrics = run.data.metrics
    for key in ("id/test/accuracy", "id/test/f1_macro", "id/test/ece", "id/test/nll",
                "ood/noise/accuracy", "ood/noise/accuracy_drop", "ood/mean/accuracy"):
        assert key in metrics, key
    assert metrics["id/test/accuracy"] == pytest.approx(result.metrics["id/test/accuracy"])
    history = client.get_metric_history(result.run_id, "val/accuracy")
    assert sorted(m.step for m in history) == [1, 2, 3]

    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == result.data.fingerprint[:32]
    assert run.data.tags["normlab.data.fingerprint"] == result.data.fingerprint
    assert run.data.tags["normlab.validation.success"] == "True"
    assert "normlab.version.torch" in run.data.tags

    paths = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "metrics.json", "validation", "plots", "drift", "model_inputs"} <= paths
    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert plots == {"plots/learning_curves.png", "plots/confusion_id_test.png"}
    assert [a.path for a in client.list_artifacts(result.run_id, "drift")] == ["drift/reference.parquet"]


def test_logged_model_predicts(finished):
    import mlflow.pytorch
    import numpy as np

    _, result = finished
    with np.load(f"{cfg_workdir(finished)}/runs/{result.run_id}/prepared.npz") as npz:
        x, y = npz["id/test/x"], npz["id/test/y"]
    from normlab.tracking import TrackingStore, tracking_uri

    with tracking_uri(TrackingStore(result.tracking_uri)):
        exported = mlflow.pytorch.load_model(result.model_uri)
    import torch

    # Logged with torch.export (no pickled code): a graph module traced in eval mode.
    model = exported
    with torch.no_grad():
        accuracy = (model(torch.as_tensor(x)).argmax(1).numpy() == y).mean()
    assert accuracy == pytest.approx(result.metrics["id/test/accuracy"])


def cfg_workdir(finished) -> str:
    return str(finished[0].workdir_path())


def test_second_run_gives_identical_metrics(finished, repo_root):
    cfg, first = finished
    second = training_flow(cfg)
    assert second.run_id != first.run_id
    assert second.data.fingerprint == first.data.fingerprint
    assert _non_timing(second.metrics) == _non_timing(first.metrics)


def test_broken_batch_stops_before_training(tmp_path, tiny_config):
    frame = load_builtin("digits")
    frame.loc[5, "pixel_10"] = 99  # out of the 0..16 range
    frame.loc[7, "label"] = 12  # not a digit
    csv = tmp_path / "broken.csv"
    frame.to_csv(csv, index=False)
    # The digits suite quarantines such rows by default; made blocking here, they stop the batch.
    cfg = tiny_config("gate.expectations={expect_column_values_to_be_between: block, "
                      "expect_column_values_to_be_in_set: block}")
    with pytest.raises(DataValidationError) as info:
        training_flow(cfg, data_path=str(csv))
    message = str(info.value)
    assert "pixel_10" in message and "label" in message

    client = MlflowClient(tracking_uri=cfg.tracking_uri())
    run = client.get_run(info.value.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["normlab.validation.success"] == "False"
    assert "id/test/accuracy" not in run.data.metrics
    paths = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "validation" in paths and "plots" not in paths
    # Nothing was trained from the blocked batch.
    assert not (cfg.workdir_path() / "runs" / run.info.run_id / "model.pt").exists()
    assert pd.read_csv(csv).shape == frame.shape  # the input file is untouched
