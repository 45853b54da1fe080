"""The data gate inside the training flow: a new user's CSV, faults quarantined, leakage blocked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from normlab.config import load_config
from normlab.errors import DataValidationError
from normlab.flows.training import training_flow
from normlab.profiling import init_project

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _customers(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"age": rng.integers(18, 80, n), "income": rng.normal(50, 10, n).round(2),
                          "city": rng.choice(["oslo", "lima", "pune"], n)})
    frame["segment"] = np.where(frame["income"] + rng.normal(0, 3, n) > 50, "high", "low")
    return frame


def _prefect_artifacts(flow_run_id: str) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        only_this_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        found = client.read_artifacts(artifact_filter=only_this_run)
    return {a.key: a for a in found}


def test_a_new_users_csv_trains_on_the_accepted_rows_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _customers(500, 0).to_csv("customers.csv", index=False)
    init_project("customers.csv", "segment")
    batch = _customers(500, 1).astype({"age": object})
    batch.loc[3, "age"] = "unknown"
    batch.loc[5, "income"] = np.inf
    batch.loc[7, "city"] = "atlantis"
    batch.loc[9, "segment"] = "vip"
    batch = pd.concat([batch, batch.iloc[[20]]], ignore_index=True)
    batch.to_csv("new.csv", index=False)

    cfg = load_config("configs/customers.yaml", ["train.epochs=1"])
    result = training_flow(cfg, data_path="new.csv")
    validation = result.validation
    assert (validation.rows_in, validation.rows_accepted, validation.rows_quarantined) == (501, 496, 5)
    assert sum(result.splits[k] for k in ("id/train", "id/val", "id/test")) == 496  # nothing else was trained on
    quarantined = pd.read_parquet(validation.quarantine_path)
    assert sorted(quarantined["_normlab_row"]) == [3, 5, 7, 9, 500]
    assert {r.check for r in validation.checks if r.outcome == "quarantined"} == {
        "types", "expect_column_values_to_be_between", "expect_column_values_to_be_in_set", "non_finite", "duplicates"}

    client = MlflowClient(tracking_uri=result.tracking_uri)
    run = client.get_run(result.run_id)
    metrics = run.data.metrics
    assert metrics["gate/rows_in"] == metrics["gate/rows_accepted"] + metrics["gate/rows_quarantined"] == 501
    assert metrics["gate/rows_quarantined"] == 5 and metrics["gate/leakage_share"] == 0.0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "validation")}
    assert {"validation/result.json", "validation/checks.json", "validation/validation.html",
            "validation/leakage.json", "validation/quarantine"} <= artifacts
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest != run.data.tags["normlab.data.fingerprint"][:32]  # the accepted rows

    published = _prefect_artifacts(run.data.tags["prefect.flow_run_id"])
    assert {"data-gate", "data-gate-checks"} <= set(published)
    assert "accepted 496 + quarantined 5" in published["data-gate"].data


@pytest.mark.slow
def test_leaking_split_stops_the_flow_before_training(tmp_path, tiny_config):
    from normlab.data.sources import load_builtin

    digits = load_builtin("digits")
    twins = digits.sample(200, random_state=0).assign(label=lambda f: (f["label"] + 5) % 10)
    csv = tmp_path / "twins.csv"
    pd.concat([digits, twins], ignore_index=True).to_csv(csv, index=False)
    cfg = tiny_config()
    with pytest.raises(DataValidationError, match="split leaks") as info:
        training_flow(cfg, data_path=str(csv))
    client = MlflowClient(tracking_uri=cfg.tracking_uri())
    run = client.get_run(info.value.run_id)
    assert run.info.status == "FAILED" and run.data.metrics["gate/leaked_rows"] > 0
    assert not (cfg.workdir_path() / "runs" / run.info.run_id / "model.pt").exists()
    assert client.search_model_versions(f"run_id='{run.info.run_id}'") == []  # nothing registered
