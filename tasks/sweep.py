"""Thin Prefect tasks of sweeps and the study: policy in the decorator, one library call in the body.

No task caches: each writes into its own MLflow run and run folder.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.runtime import flow_run

from normlab import study, sweep
from normlab.config import PipelineConfig
from normlab.contracts import Batch, SweepParent
from normlab.sweep_contracts import Finding, GridPoint, PointOutcome, StudyResult, SweepSummary
from normlab.tasks.policy import LOCAL, TRANSIENT
from normlab.tracking import TrackingStore
from normlab.training import throttled


@task(name="start-sweep", **TRANSIENT)
def start_sweep(cfg: PipelineConfig, store: TrackingStore, kind: str) -> SweepParent:
    """Open the parent MLflow run with the grid as params."""
    parent = sweep.start_parent(cfg, store, kind=kind, flow_run_id=str(flow_run.id or ""))
    get_run_logger().info("%s %s: %d grid points", kind, parent.run_id, len(parent.points))
    return parent


@task(name="log-sweep-data", **TRANSIENT)
def log_data(cfg: PipelineConfig, store: TrackingStore, parent: SweepParent, batch: Batch) -> None:
    """Record the validated batch on the parent run, so that the points only link to it."""
    sweep.log_data(store, cfg.name, cfg.data, parent, batch)


# A point is deterministic given its inputs: a failure is not transient, so no retries.
@task(name="grid-point", task_run_name="{point.name}", **LOCAL)
def run_point(cfg: PipelineConfig, store: TrackingStore, point: GridPoint, parent: SweepParent,
              batch: Batch) -> PointOutcome:
    """Run one grid point as a nested MLflow run (on whichever Dask worker gets it)."""
    logger = get_run_logger()

    def show(record) -> None:
        logger.info("epoch %d/%d  train loss %.4f | val acc %.4f | %.2fs",
                    record.epoch, cfg.train.epochs, record.train_loss, record.val_accuracy, record.seconds)

    result = sweep.run_point(cfg, store, point, parent_run_id=parent.run_id, batch=batch,
                             on_epoch_end=throttled(show, last_epoch=cfg.train.epochs))
    logger.info("%s: ID %.4f, OOD %.4f (run %s)", point.name, result.metrics["id/test/accuracy"],
                result.metrics.get("ood/mean/accuracy", float("nan")), result.run_id)
    return result


@task(name="sweep-report", **TRANSIENT)
def finish_sweep(cfg: PipelineConfig, store: TrackingStore, parent: SweepParent, batch: Batch,
                 results: list[PointOutcome]) -> SweepSummary:
    """Aggregate over seeds, write the comparison report, log it to the parent run."""
    summary = sweep.finish(cfg.sweep, cfg.workdir_path(), store, parent, batch, results)
    get_run_logger().info("report: %s", (summary.report or {}).get("html"))
    return summary


@task(name="study-findings", **LOCAL)
def check_findings(cfg: PipelineConfig, summary: SweepSummary) -> list[Finding]:
    """Test each known finding against the study's runs."""
    return study.check_findings(summary, threads=cfg.train.threads)


@task(name="study-report", **TRANSIENT)
def write_study(cfg: PipelineConfig, store: TrackingStore, summary: SweepSummary,
                findings: list[Finding]) -> StudyResult:
    """Write the one-page study report and log it to the parent run."""
    return study.finish(cfg.model, cfg.train, store, summary, findings)
