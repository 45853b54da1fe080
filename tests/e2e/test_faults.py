"""Faults injected into real ``normlab run`` processes: a kill mid-epoch, two runs at once on one store.

Each test drives the installed ``normlab`` command in subprocesses against
the session's Prefect API and reads the outcome back from the MLflow store.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from normlab.data.sources import load_builtin
from tests.e2e.conftest import finish, normlab_env, run_normlab, small_run_args, start_normlab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EPOCHS = 8
# Small batches and wide layers: each epoch takes about a second, long enough to be killed inside.
SLOW_EPOCHS = ["--set", f"train.epochs={EPOCHS}", "--set", "train.batch_size=4", "--set", "train.lr=0.01",
               "--set", "model.hidden=[1024,1024]"]


def non_timing(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not k.startswith("time/")}


def all_runs(uri: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("normlab")
    return [] if exp is None else client.search_runs([exp.experiment_id])


def checkpoint_epoch(workdir: Path) -> int:
    """The epoch of the newest checkpoint under ``workdir`` (0: none yet)."""
    epochs = [0]
    for path in workdir.glob("runs/*/checkpoints/last.pt"):
        try:
            epochs.append(int(torch.load(path, map_location="cpu", weights_only=True)["epoch"]))
        except (OSError, RuntimeError, EOFError):
            continue  # replaced while being read: the next poll sees the new one
    return max(epochs)


def kept_rows(workdir: Path, run_id: str) -> dict[str, int]:
    """Rows in the run's quarantine file and in its accepted batch."""
    (quarantine,) = workdir.glob(f"quarantine/*/{run_id}/rows.parquet")
    (accepted,) = (workdir / "runs" / run_id).rglob("accepted.parquet")
    assert pd.read_parquet(quarantine)["pixel_20"].isna().all()
    return {"quarantined": len(pd.read_parquet(quarantine)), "accepted": len(pd.read_parquet(accepted))}


def wait_for_checkpoint(workdir: Path, epoch: int, process, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while checkpoint_epoch(workdir) < epoch:
        assert process.poll() is None, "normlab exited before writing a checkpoint"
        assert time.monotonic() < deadline, f"no checkpoint of epoch {epoch} after {timeout:.0f} s"
        time.sleep(0.1)


def test_run_killed_mid_epoch_resumes_and_ends_like_an_uninterrupted_run(tmp_path, prefect_api, mlflow_template_db):
    interrupted, reference = tmp_path / "interrupted", tmp_path / "reference"
    for work in (interrupted, reference):
        work.mkdir()
        shutil.copyfile(mlflow_template_db, work / "mlflow.db")
    # A batch with five broken rows: the gate quarantines them and trains on the rest.
    frame = load_builtin("digits")
    frame.loc[[3, 50, 400, 900, 1500], "pixel_20"] = np.nan
    data = tmp_path / "digits-with-nan.csv"
    frame.to_csv(data, index=False)
    env = normlab_env(prefect_api)
    # Registration is tested elsewhere; without it each of the three runs here is shorter.
    extra = [*SLOW_EPOCHS, "--data", str(data), "--set", "promotion.enabled=false"]
    args = small_run_args(interrupted, *extra)

    # The uninterrupted reference trains alongside the run that gets killed.
    ref_process = start_normlab(small_run_args(reference, *extra), env, tmp_path / "reference.log")
    victim = start_normlab(args, env, tmp_path / "killed.log")
    wait_for_checkpoint(interrupted, 2, victim)
    time.sleep(0.3)  # into the next epoch
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_at = checkpoint_epoch(interrupted)
    assert 2 <= killed_at < EPOCHS

    store = f"sqlite:///{interrupted / 'mlflow.db'}"
    (killed_run,) = all_runs(store)
    assert killed_run.info.status == "RUNNING"  # SIGKILL: nothing could close it
    # The crash lost neither the quarantined rows nor the accepted batch.
    kept = kept_rows(interrupted, killed_run.info.run_id)
    assert kept == {"quarantined": 5, "accepted": len(frame) - 5}

    code, output = run_normlab(args, env, tmp_path / "resumed.log")
    assert code == 0, output[-3000:]
    assert f"resuming interrupted run {killed_run.info.run_id}" in output
    assert f"epoch {killed_at + 1}/{EPOCHS}" in output and f"epoch {killed_at}/{EPOCHS}" not in output
    ref_output = finish(ref_process, tmp_path / "reference.log")
    assert ref_process.returncode == 0, ref_output[-3000:]

    # One run: the interrupted one, reused and finished; no duplicate, no orphan.
    (run,) = all_runs(store)
    assert run.info.run_id == killed_run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["normlab.resumed_count"] == "1"
    (ref_run,) = all_runs(f"sqlite:///{reference / 'mlflow.db'}")
    assert non_timing(run.data.metrics) == non_timing(ref_run.data.metrics)
    assert "id/test/accuracy" in run.data.metrics

    client = MlflowClient(tracking_uri=store)
    ref_client = MlflowClient(tracking_uri=f"sqlite:///{reference / 'mlflow.db'}")
    for key in ("val/accuracy", "train/loss"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        ref_history = sorted((m.step, m.value) for m in ref_client.get_metric_history(ref_run.info.run_id, key))
        assert [step for step, _ in history] == list(range(1, EPOCHS + 1))  # every epoch once
        assert history == ref_history
    # The run folder is the same one, with the batch snapshot that was accepted before the kill.
    run_dir = interrupted / "runs" / run.info.run_id
    assert (run_dir / "batch.parquet").is_file() and (run_dir / "model.pt").is_file()
    assert sorted(p.name for p in (interrupted / "runs").iterdir()) == [run.info.run_id]
    assert kept_rows(interrupted, run.info.run_id) == kept


def test_two_runs_at_once_on_a_fresh_sqlite_store_both_finish(tmp_path, prefect_api):
    work = tmp_path / "shared"
    env = normlab_env(prefect_api)
    # Same config, same data, same fresh store: neither may take the other's run for an interrupted one.
    processes = [start_normlab(small_run_args(work), env, tmp_path / f"run{i}.log") for i in range(2)]
    outputs = [finish(p, tmp_path / f"run{i}.log") for i, p in enumerate(processes)]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]

    runs = all_runs(f"sqlite:///{work / 'mlflow.db'}")
    assert len(runs) == 2 and runs[0].info.run_id != runs[1].info.run_id
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.params["train.epochs"] == "2"
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/accuracy")) == [1, 2]
        assert {"plots", "config.yaml", "metrics.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
        models = client.search_logged_models([run.info.experiment_id],
                                             filter_string=f"source_run_id = '{run.info.run_id}'")
        names = [m.name for m in models]
        assert "model" in names and len(names) == len(set(names))  # logged once each
        assert (work / "runs" / run.info.run_id / "model.pt").is_file()
    # Each run registered its own version; the aliases point at them.
    versions = client.search_model_versions("name = 'normlab-digits'")
    assert sorted(v.run_id for v in versions) == sorted(r.info.run_id for r in runs)
    assert sorted(int(v.version) for v in versions) == [1, 2]
    champion = client.get_model_version_by_alias("normlab-digits", "champion")
    assert champion.run_id in {r.info.run_id for r in runs}
    # Same config and data, both complete: the same metrics, recorded twice.
    assert non_timing(runs[0].data.metrics) == non_timing(runs[1].data.metrics)


def test_tracking_server_lost_mid_run_fails_in_one_line_and_moves_no_alias(tmp_path, prefect_api, start_mlflow):
    folder = tmp_path / "server"
    server = start_mlflow(folder)
    port = server.url.rsplit(":", 1)[1]
    env = normlab_env(prefect_api)
    uri_args = ["--set", f"tracking.uri={server.url}"]

    # A first run makes version 1 the champion.
    code, output = run_normlab(small_run_args(tmp_path / "first", *uri_args), env, tmp_path / "first.log")
    assert code == 0, output[-3000:]
    client = MlflowClient(tracking_uri=server.url)
    (champion,) = client.search_model_versions("name = 'normlab-digits'")
    assert client.get_model_version_by_alias("normlab-digits", "champion").version == champion.version

    # The second run loses the server while it trains.
    work = tmp_path / "second"
    args = small_run_args(work, *uri_args, *SLOW_EPOCHS)
    process = start_normlab(args, env, tmp_path / "lost.log")
    wait_for_checkpoint(work, 2, process)
    server.stop()
    started = time.monotonic()
    output = finish(process, tmp_path / "lost.log")
    assert process.returncode == 4, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "tracking store unreachable" in errors[0] and f"127.0.0.1:{port}" in errors[0]
    # Prefect's backoff on the tracking task: 2, 5 then 15 s, before giving up.
    for attempt, delay in ((1, 2), (2, 5), (3, 15)):
        assert f"Retry {attempt}/3 will start {delay} second(s) from now" in output
    assert "Retries are exhausted" in output
    assert time.monotonic() - started >= 2 + 5 + 15
    assert checkpoint_epoch(work) == EPOCHS  # training finished regardless of the lost live logging

    # Back up on the same store: nothing half-registered, the champion has not moved.
    server = start_mlflow(folder, port=int(port))
    client = MlflowClient(tracking_uri=server.url)
    assert [v.version for v in client.search_model_versions("name = 'normlab-digits'")] == [champion.version]
    assert client.get_model_version_by_alias("normlab-digits", "champion").version == champion.version
    exp = client.get_experiment_by_name("normlab")
    lost = [r for r in client.search_runs([exp.experiment_id]) if r.info.run_id != champion.run_id]
    assert [r.info.status for r in lost] == ["RUNNING"]  # closing it needed the server too

    # Running it again reuses the interrupted run and finishes it: no orphan, one new version.
    code, output = run_normlab(args, env, tmp_path / "again.log")
    assert code == 0, output[-3000:]
    assert f"resuming interrupted run {lost[0].info.run_id}" in output
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    history = client.get_metric_history(lost[0].info.run_id, "val/accuracy")
    assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))
    versions = client.search_model_versions("name = 'normlab-digits'")
    assert sorted(v.run_id for v in versions) == sorted([champion.run_id, lost[0].info.run_id])
