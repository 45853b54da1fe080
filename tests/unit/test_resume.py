"""Run-level resume: which interrupted run is reopened, and the lock that tells live runs from dead ones."""

from __future__ import annotations

import subprocess
import sys

from mlflow.tracking import MlflowClient

from normlab import resume
from normlab.tracking import TrackingStore


def _locked_elsewhere(run_dir) -> bool:
    """Whether another process finds the run folder's lock taken."""
    code = (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(run_dir / resume.LOCK_NAME)!r}, os.O_RDWR | os.O_CREAT)\n"
        "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(1)\n"
    )
    return subprocess.run([sys.executable, "-c", code], check=False).returncode == 1


def test_lock_is_held_for_its_owner_only(tmp_path):
    run_dir = tmp_path / "run"
    try:
        assert resume.lock_run_dir(run_dir, "flow-a")
        assert resume.lock_run_dir(run_dir, "flow-a")  # a retried start gets its own lock back
        assert not resume.lock_run_dir(run_dir, "flow-b")  # another pipeline in this process does not
        assert _locked_elsewhere(run_dir)
    finally:
        resume.unlock_run_dir(run_dir)
    assert not _locked_elsewhere(run_dir)
    assert resume.lock_run_dir(run_dir, "flow-b")
    resume.unlock_run_dir(run_dir)


def test_config_hash_ignores_credentials_and_key_order(tiny_config):
    cfg = tiny_config()
    with_password = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(
        update={"uri": "http://alice:secret@127.0.0.1:5000"})})
    with_other = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(
        update={"uri": "http://alice:other@127.0.0.1:5000"})})
    assert resume.config_hash(with_password) == resume.config_hash(with_other)
    assert resume.config_hash(cfg) != resume.config_hash(tiny_config("train.epochs=3"))


def test_interrupted_run_is_reopened_live_and_blocked_ones_are_not(tiny_config):
    cfg = tiny_config()
    store = TrackingStore(cfg.tracking_uri())
    client = MlflowClient(tracking_uri=store.uri)
    first = resume.open_run(cfg, store, None, tags={}, params={"p": 1}, owner="flow-1")
    try:
        assert first.resumed is False
        tags = client.get_run(first.run_id).data.tags
        assert tags[resume.CONFIG_HASH_TAG] == first.config_hash
        assert tags[resume.FINGERPRINT_TAG] == first.fingerprint

        # While the first is live, the same config and data get a run of their own.
        second = resume.open_run(cfg, store, None, tags={}, params={"p": 1}, owner="flow-2")
        assert second.run_id != first.run_id and second.resumed is False
        resume.close_run(store, second, "FINISHED")

        # Once its owner is gone (lock released, run left RUNNING), the first is reopened.
        resume.unlock_run_dir(first.run_dir)
        again = resume.open_run(cfg, store, None, tags={"t": "x"}, params={"p": 1}, owner="flow-3")
        assert (again.run_id, again.run_dir, again.resumed) == (first.run_id, first.run_dir, True)
        run = client.get_run(first.run_id)
        assert run.info.status == "RUNNING" and run.data.tags[resume.RESUMED_TAG] == "1"
        resume.close_run(store, again, "FAILED")
    finally:
        resume.unlock_run_dir(first.run_dir)

    # A run the data gate blocked is a final outcome, not an interruption.
    client.set_tag(first.run_id, "normlab.validation.success", "False")
    fresh = resume.open_run(cfg, store, None, tags={}, params={"p": 1}, owner="flow-4")
    assert fresh.run_id not in {first.run_id, second.run_id}
    resume.close_run(store, fresh, "KILLED")
    client.set_tag(first.run_id, "normlab.validation.success", "True")

    # --no-resume: a new run, and the interrupted ones are closed as KILLED.
    new = resume.open_run(cfg, store, None, tags={}, params={"p": 1}, resume=False, owner="flow-5")
    resume.close_run(store, new, "FINISHED")
    assert new.run_id not in {first.run_id, fresh.run_id}
    assert client.get_run(first.run_id).info.status == "KILLED"
    assert client.get_run(fresh.run_id).info.status == "KILLED"


def test_a_different_batch_does_not_reopen_the_run(tiny_config, tmp_path):
    from normlab.data.sources import load_builtin

    cfg = tiny_config()
    store = TrackingStore(cfg.tracking_uri())
    first = resume.open_run(cfg, store, None, tags={}, params={}, owner="flow-1")
    resume.unlock_run_dir(first.run_dir)
    data = tmp_path / "fewer.csv"
    load_builtin("digits").iloc[:1000].to_csv(data, index=False)
    other = resume.open_run(cfg, store, str(data), tags={}, params={}, owner="flow-2")
    resume.close_run(store, other, "FINISHED")
    assert other.run_id != first.run_id and other.fingerprint != first.fingerprint


def test_closed_interrupted_runs_are_reopened(tiny_config):
    cfg = tiny_config()
    store = TrackingStore(cfg.tracking_uri())
    for status in ("FAILED", "KILLED"):
        first = resume.open_run(cfg, store, None, tags={}, params={}, owner=f"{status}-1")
        resume.close_run(store, first, status)
        again = resume.open_run(cfg, store, None, tags={}, params={}, owner=f"{status}-2")
        resume.close_run(store, again, "FINISHED")
        assert again.run_id == first.run_id and again.resumed, status


def test_the_config_hash_holds_the_precision_and_the_device_as_written(tiny_config, monkeypatch):
    import torch

    cfg = tiny_config()
    # Another precision is another run: never reopened, so its checkpoint is never resumed in it.
    assert resume.config_hash(cfg) != resume.config_hash(tiny_config("train.precision=bf16"))
    # train.device: auto is hashed as written, whatever it resolves to here: a run can resume on another device.
    auto = tiny_config("train.device=auto")
    before = resume.config_hash(auto)
    present = torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: not present)
    assert resume.config_hash(auto) == resume.config_hash(tiny_config("train.device=auto")) == before
