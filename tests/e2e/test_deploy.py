"""``normlab deploy`` against a real ``prefect server``: schedules read back, a worker runs training.

The session's server (`prefect_api`) is a real ``prefect server start`` on
127.0.0.1 and a free port, stopped at the end of the session.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from tests.e2e.conftest import base_env, executable, normlab_env, run_normlab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ONE_OOD = "splits.ood=[{name: noise, kind: corruption, corruption: gaussian_noise, severity: 3}]"


@pytest.fixture(scope="module")
def deployed(prefect_api, tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy")
    work, landing = out / "work", out / "landing"
    code, output = run_normlab(
        ["deploy", "--set", f"workdir={work}", "--set", "train.epochs=1", "--set", "train.threads=1",
         "--set", ONE_OOD, "--landing", str(landing), "--summary", str(out / "deploy.json")],
        normlab_env(prefect_api), out / "deploy.log", timeout=240)
    assert code == 0, output[-3000:]
    return {"out": out, "work": work, "landing": landing, "summary": json.loads((out / "deploy.json").read_text())}


@contextmanager
def prefect_client(prefect_api: str) -> Iterator:
    """A Prefect client on the session's server."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_api}), get_client(sync_client=True) as client:
        yield client


def test_deployments_and_schedules_read_back(prefect_api, deployed):
    with prefect_client(prefect_api) as client:
        deployments = {d.name: d for d in client.read_deployments()}
        pool = client.read_work_pool("normlab")
    assert {"train", "monitor", "sweep"} <= set(deployments)
    assert pool.type == "process"
    train, monitor, sweep = deployments["train"], deployments["monitor"], deployments["sweep"]
    assert [(s.schedule.cron, s.schedule.timezone) for s in train.schedules] == [("0 2 * * *", "UTC")]
    assert [s.schedule.interval for s in monitor.schedules] == [timedelta(hours=1)]
    assert sweep.schedules == []
    for deployment in (train, monitor, sweep):
        assert deployment.work_pool_name == "normlab"
        assert deployment.parameters["config"]["workdir"] == str(deployed["work"])
        assert deployment.parameters["config"]["train"]["epochs"] == 1
    assert monitor.parameters["data"] == str(deployed["landing"])
    assert train.entrypoint == "flows/training.py:training_flow"
    assert sweep.entrypoint == "flows/sweep.py:sweep_flow"
    names = {d["name"] for d in deployed["summary"]["deployments"]}
    assert names >= {"normlab-train/train", "normlab-monitor/monitor", "normlab-sweep/sweep"}


def test_a_worker_runs_the_triggered_training_deployment(prefect_api, deployed):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_api}):
        flow_run = run_deployment("normlab-train/train", timeout=0)
    env = {**base_env(), "PREFECT_API_URL": prefect_api}
    log = deployed["out"] / "worker.log"
    with log.open("wb") as handle:
        # One poll, then wait for the run it picked up.
        worker = subprocess.run(
            [executable("prefect"), "worker", "start", "--pool", "normlab", "--run-once", "--limit", "1"],
            cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=300, check=False)
    assert worker.returncode == 0, log.read_text(errors="replace")[-3000:]
    with prefect_client(prefect_api) as client:
        state = client.read_flow_run(flow_run.id).state
    assert state.is_completed(), f"{state}\n{log.read_text(errors='replace')[-3000:]}"

    store = MlflowClient(tracking_uri=f"sqlite:///{deployed['work'] / 'mlflow.db'}")
    experiment = store.get_experiment_by_name("normlab")
    runs = store.search_runs([experiment.experiment_id],
                             filter_string=f"tags.`prefect.flow_run_id` = '{flow_run.id}'")
    assert len(runs) == 1
    assert runs[0].info.status == "FINISHED"
    assert 0.0 <= runs[0].data.metrics["id/test/accuracy"] <= 1.0
