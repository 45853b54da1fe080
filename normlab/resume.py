"""Run-level resume: a killed ``normlab run`` started again picks up where it stopped.

A run is identified by what determines its result: the hash of its config and
the fingerprint of its data batch, both set as tags when the MLflow run is
created. Starting a pipeline looks for an interrupted run with the same two
tags (status RUNNING, FAILED or KILLED, not blocked by the data gate) whose
local run folder is not held by a live process, and reopens it: same run id,
same folder, training continues from ``checkpoints/last.pt``. Otherwise a new
run is created.

The config hash holds ``train.precision``, so a run is never reopened in
another precision (and `normlab.training.train_model` refuses a checkpoint
written in another one). It holds ``train.device`` as written: with ``auto``,
a run stopped on a machine with a GPU may be reopened on one without (or the
other way round). Checkpoints hold CPU tensors, so training continues from the
checkpoint's state, with a warning; the epochs after it are computed by the
other device's kernels, so the metrics are not bit-identical to an
uninterrupted run's.

Liveness is an exclusive ``flock`` on ``<run folder>/.lock``, held by the
process that runs the pipeline until the run is closed. The kernel drops it
when that process dies, however it dies, so a RUNNING run whose lock can be
taken was interrupted, and two processes can never reopen the same run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

from normlab import tracking
from normlab.config import PipelineConfig
from normlab.contracts import RunHandle
from normlab.tracking import TrackingStore

CONFIG_HASH_TAG = "normlab.config_hash"
FINGERPRINT_TAG = "normlab.data.fingerprint"
RESUMED_TAG = "normlab.resumed_count"
LOCK_NAME = ".lock"
RESUMABLE_STATUSES = ("RUNNING", "FAILED", "KILLED")

# Run folder -> (open descriptor whose flock marks the run as live, the owner that took it).
_held: dict[str, tuple[int, str]] = {}


def config_hash(cfg: PipelineConfig) -> str:
    """SHA-256 of the resolved config (credentials removed), stable across key order."""
    data = cfg.redacted().model_dump(mode="json")
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()


def lock_run_dir(run_dir: str | Path, owner: str) -> bool:
    """Take the run folder's lock for ``owner``; False when anyone else holds it.

    ``owner`` names the pipeline run (a Prefect flow run id): a retried start
    of the same pipeline gets its own lock back, while another pipeline in the
    same process (a sweep) does not.
    """
    key = str(Path(run_dir).resolve())
    if key in _held:
        return _held[key][1] == owner
    Path(key).mkdir(parents=True, exist_ok=True)
    fd = os.open(os.path.join(key, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _held[key] = (fd, owner)
    return True


def unlock_run_dir(run_dir: str | Path) -> None:
    """Release the run folder's lock (no-op when this process does not hold it)."""
    held = _held.pop(str(Path(run_dir).resolve()), None)
    if held is not None:
        os.close(held[0])  # closing the descriptor drops the flock


def find_interrupted_runs(store: TrackingStore, experiment: str, cfg_hash: str, fingerprint: str) -> list[Any]:
    """Runs of ``experiment`` with this config hash and data that did not finish, newest first.

    Runs the data gate blocked are left out: the same config on the same data
    would be blocked again, and the record of that block is kept as it is.
    """
    client = store.client
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    query = f"tags.`{CONFIG_HASH_TAG}` = '{cfg_hash}' and tags.`{FINGERPRINT_TAG}` = '{fingerprint}'"
    runs = client.search_runs([exp.experiment_id], filter_string=query, order_by=["attributes.start_time DESC"],
                              max_results=50)
    return [r for r in runs if r.info.status in RESUMABLE_STATUSES
            and r.data.tags.get("normlab.validation.success") != "False"]


def open_run(
    cfg: PipelineConfig,
    store: TrackingStore,
    data_path: str | None,
    *,
    tags: dict[str, str],
    params: dict[str, Any],
    resume: bool = True,
    owner: str | None = None,
) -> RunHandle:
    """Reopen the interrupted run with this config and data, or create a new one.

    Args:
        cfg: The pipeline config (its hash finds the interrupted run).
        store: The tracking store the run is in.
        data_path: The batch file given on the command line (None: the config's source).
        tags: Provenance tags for the run (set on new and reopened runs).
        params: Params for a new run (flattened, redacted config).
        resume: False starts a new run and marks interrupted runs with this
            config and data KILLED, so none is left RUNNING.
        owner: Names this pipeline run (a retried start passes the same one);
            default: a fresh id.

    Returns:
        The `RunHandle`: ``run_id``, ``run_dir``, ``resumed``, ``config_hash``,
        ``fingerprint`` and ``batch``: the input, read once here (its
        fingerprint finds the interrupted run) and snapshotted into the run
        folder, as `pipeline.load_batch` returns it.

    Raises:
        DataSourceError: The input cannot be read or has no label column (no run is opened).
    """
    from normlab import pipeline
    owner = owner or uuid.uuid4().hex
    cfg_hash = config_hash(cfg)
    loaded = pipeline.read_batch(cfg.data, data_path)
    pipeline.check_label(cfg.data, loaded.frame, loaded.source)
    fingerprint = loaded.fingerprint
    client = store.client
    for old in find_interrupted_runs(store, cfg.tracking.experiment, cfg_hash, fingerprint):
        old_dir = cfg.workdir_path() / "runs" / old.info.run_id
        # Only a run whose folder is here (its checkpoint) and held by no live process.
        if not old_dir.is_dir() or not lock_run_dir(old_dir, owner):
            continue
        if not resume:
            client.set_terminated(old.info.run_id, status="KILLED")
            unlock_run_dir(old_dir)
            continue
        count = int(old.data.tags.get(RESUMED_TAG, "0")) + 1
        client.update_run(old.info.run_id, status="RUNNING")
        tracking.set_tags(store, old.info.run_id, {**tags, RESUMED_TAG: count})
        return RunHandle(run_id=old.info.run_id, run_dir=str(old_dir), resumed=True,
                         config_hash=cfg_hash, fingerprint=fingerprint,
                         batch=pipeline.stage_batch(loaded, old_dir))

    run_id = tracking.start_run(
        store, cfg.tracking.experiment, artifact_location=cfg.artifact_location(), run_name=cfg.tracking.run_name,
        tags={**tags, CONFIG_HASH_TAG: cfg_hash, FINGERPRINT_TAG: fingerprint},
    )
    run_dir = pipeline.run_dir_for(cfg.workdir_path(), run_id)
    lock_run_dir(run_dir, owner)
    tracking.log_params(store, run_id, params)
    return RunHandle(run_id=run_id, run_dir=str(run_dir), resumed=False,
                     config_hash=cfg_hash, fingerprint=fingerprint,
                     batch=pipeline.stage_batch(loaded, run_dir))


def close_run(store: TrackingStore, run: RunHandle, status: str) -> None:
    """End the MLflow run with ``status`` and release its folder, even when the store is down."""
    try:
        tracking.end_run(store, run.run_id, status)
    finally:
        unlock_run_dir(run.run_dir)
