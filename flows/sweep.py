"""Sweeps and the built-in study: wiring only.

The grid runs in a subflow whose task runner is a `prefect_dask.DaskTaskRunner`
built from ``config.sweep``: a local cluster of single-threaded worker
processes, or an existing scheduler by address (the same sweep on many machines).
"""

from __future__ import annotations

import gc
from typing import Any

from prefect import flow, unmapped
from prefect.settings import get_current_settings
from prefect_dask import DaskTaskRunner

from normlab.config import PipelineConfig, SweepConfig
from normlab.contracts import Batch, SweepParent
from normlab.deployments import resolve_config
from normlab.sweep import collect
from normlab.sweep_contracts import PointOutcome, StudyResult, SweepSummary
from normlab.tasks import gate as g
from normlab.tasks import sweep as s
from normlab.tasks import training as t
from normlab.tracking import TrackingStore


def dask_runner(settings: SweepConfig) -> DaskTaskRunner:
    """The configured scheduler, else a local cluster of ``workers`` processes with one thread each."""
    if settings.address:
        return DaskTaskRunner(address=settings.address)
    # Local workers report to this process's Prefect API, including the temporary
    # server Prefect starts when none is configured (else each would start its own).
    api_url = get_current_settings().api.url
    if not api_url:
        # Imported here: the server module is heavy, and workers import this module too.
        from prefect.server.api.server import SubprocessASGIServer

        api_url = SubprocessASGIServer().api_url if SubprocessASGIServer().running else None
    env = {"PREFECT_API_URL": api_url} if api_url else {}
    # One thread per process: torch trains on one core per worker, so N workers use N cores.
    # Workers preload this module: its imports happen while the cluster starts, and
    # `dask_teardown` below runs as each worker closes.
    return DaskTaskRunner(cluster_kwargs={"n_workers": settings.workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": ":0", "env": env,
                                          "preload": [__name__]})


def dask_teardown(worker: Any) -> None:
    """Dask's hook in a closing worker: skip the interpreter's last full garbage collection.

    A worker that has imported torch, MLflow and Prefect spends seconds in that
    collection at exit, longer than the nanny waits before it kills the worker.
    """
    gc.freeze()


@flow(name="normlab-sweep-grid")
def grid_flow(config: PipelineConfig, store: TrackingStore, parent: SweepParent,
              batch: Batch) -> list[PointOutcome]:
    """Run every grid point as one task on the Dask cluster; a failed point is recorded, not fatal."""
    # 1. One task per grid point, shipped to the workers (each opens its own client on the store)
    futures = s.run_point.map(unmapped(config), unmapped(store), parent.points, unmapped(parent), unmapped(batch))
    # 2. Wait for every point; a failed one keeps its error and run id
    return collect(parent.points, [f.result(raise_on_failure=False) for f in futures])


@flow(name="normlab-sweep", log_prints=True)
def sweep_flow(config: PipelineConfig | str, data_path: str | None = None, kind: str = "sweep") -> SweepSummary:
    """Train every (norm, batch size, seed) of ``config.sweep`` as nested MLflow runs and compare them."""
    config = resolve_config(config)  # a config file path: plain `prefect deploy` of deploy/prefect.yaml
    store = TrackingStore(config.tracking_uri())  # one client for the parent run's stages
    # 1. Open the parent MLflow run (the grid as params)
    parent = s.start_sweep(config, store, kind)
    try:
        # 2. Data gate, once for every grid point: validate, quarantine, stop on a blocking failure
        batch = t.load_batch(config, parent, data_path)
        validation = t.validate_batch(config, batch, parent)
        t.log_validation(store, parent, validation)
        t.enforce_validation(validation)
        accepted = validation.accepted  # only the accepted rows go on
        # 3. Leakage check on the split every point makes (it depends on the rows only)
        prepared = t.prepare_splits(config, accepted, parent)
        g.check_splits(config, store, accepted, prepared, parent)
        # 4. The accepted batch as the parent's dataset input (the points link to it)
        s.log_data(config, store, parent, accepted)
        # 5. Run the grid on Dask: one nested child run per point
        results = grid_flow.with_options(task_runner=dask_runner(config.sweep))(config, store, parent, accepted)
        # 6. Aggregate over seeds, write the comparison report, log it to the parent run
        summary = s.finish_sweep(config, store, parent, accepted, results)
    except BaseException as exc:
        t.end_run(store, parent, "FAILED")
        exc.run_id = parent.run_id  # lets the CLI name the failed run
        raise
    t.end_run(store, parent, "FINISHED" if summary.status == "finished" else "FAILED")
    return summary


@flow(name="normlab-study", log_prints=True)
def study_flow(config: PipelineConfig) -> StudyResult:
    """Run the study's grid, test each known finding against it, write the one-page report."""
    # 1. The study's grid, as a sweep (nested runs, comparison report)
    summary = sweep_flow(config, kind="study")
    # 2. Test each finding: intervals, held or not
    findings = s.check_findings(config, summary)
    # 3. The one-page report, logged to the sweep's parent run
    return s.write_study(config, TrackingStore(config.tracking_uri()), summary, findings)
