"""Thin Prefect tasks around the pipeline stages: policy in the decorator, one call in the body.

No task caches: every stage writes into its run's folder and MLflow run, so a
cached result from another run would point at another run's files.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.runtime import flow_run

from normlab import gate, pipeline, splitting, tracking
from normlab import resume as resume_runs
from normlab.config import PipelineConfig, flatten
from normlab.contracts import Batch, Evaluation, Recorded, RunHandle, Splits, Trained
from normlab.gate.contracts import GateResult
from normlab.gate.scope import GateScope
from normlab.stages import Stages, train_stage
from normlab.tasks.gate import check_splits, publish_gate
from normlab.tasks.policy import LOCAL, TRANSIENT
from normlab.tracking import TrackingStore
from normlab.training import throttled


@task(name="start-run", **TRANSIENT)
def start_run(cfg: PipelineConfig, store: TrackingStore, data_path: str | None = None,
              resume: bool = True) -> RunHandle:
    """Reopen the interrupted run with this config and data, or open a new one (params, provenance tags)."""
    tags = {**tracking.environment_tags(), "normlab.model.norm": cfg.model.norm,
            "normlab.model.family": cfg.model.family, "prefect.flow_run_id": str(flow_run.id or "")}
    run = resume_runs.open_run(cfg, store, data_path, tags=tags, params=flatten(cfg.redacted()), resume=resume,
                               owner=str(flow_run.id) if flow_run.id else None)
    if run.resumed:
        get_run_logger().info("resuming interrupted run %s (same config and data)", run.run_id)
    return run


@task(name="load-batch", **LOCAL)
def load_batch(cfg: PipelineConfig, run: RunHandle, data_path: str | None) -> Batch:
    """The batch `start_run` read and snapshotted (the input is parsed once per run); else load it now."""
    batch = run.batch or pipeline.load_batch(cfg.data, run.run_dir, data_path)
    get_run_logger().info("batch %s: %d rows, fingerprint %s", batch.source, batch.rows, batch.fingerprint[:12])
    return batch


@task(name="validate-batch", **LOCAL)
def validate_batch(cfg: PipelineConfig, batch: Batch, run: RunHandle) -> GateResult:
    """Run the expectation suite."""
    return pipeline.validate_batch(GateScope.from_config(cfg), batch, run.run_dir)


@task(name="log-validation", **TRANSIENT)
def log_validation(store: TrackingStore, run: RunHandle, report: GateResult) -> None:
    """Record the data gate's outcome (``report`` is the gate's result) before anything is trained."""
    gate.log_gate(store, run.run_id, report)
    publish_gate(report)


@task(name="enforce-validation", **LOCAL)
def enforce_validation(report: GateResult) -> None:
    """Stop here when a blocking check failed."""
    pipeline.enforce_validation(report)


@task(name="prepare-splits", **LOCAL)
def prepare_splits(cfg: PipelineConfig, batch: Batch, run: RunHandle) -> Splits:
    """Hash-split, build OOD splits, encode."""
    prepared = splitting.prepare_splits(cfg.data, cfg.splits, cfg.eval, cfg.seed, batch, run.run_dir)
    get_run_logger().info("splits: %s", ", ".join(f"{k}={v}" for k, v in prepared.counts.items()))
    return prepared


@task(name="train", **LOCAL)
def train(cfg: PipelineConfig, store: TrackingStore, prepared: Splits, run: RunHandle) -> Trained:
    """Train; epochs go to the console as they end (at most one line a second) and to MLflow at each checkpoint."""
    logger = get_run_logger()
    log_epochs = tracking.epoch_logger(store, run.run_id)

    def log_line(record) -> None:
        logger.info("epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.2fs",
                    record.epoch, cfg.train.epochs, record.train_loss, record.train_accuracy,
                    record.val_loss, record.val_accuracy, record.seconds)

    return train_stage(cfg, prepared, run.run_dir, on_checkpoint=log_epochs,
                       on_epoch_end=throttled(log_line, last_epoch=cfg.train.epochs))


@task(name="evaluate", **LOCAL)
def evaluate(cfg: PipelineConfig, prepared: Splits, trained: Trained, run: RunHandle) -> Evaluation:
    """Score every split."""
    return pipeline.evaluate(cfg.eval, prepared, trained, run.run_dir, seed=cfg.seed)


@task(name="record-run", **TRANSIENT)
def record_run(cfg: PipelineConfig, store: TrackingStore, run: RunHandle, batch: Batch, prepared: Splits,
               trained: Trained, evaluation: Evaluation) -> Recorded:
    """Log metrics, dataset, model, plots and files."""
    return pipeline.record_run(cfg, store, run.run_id, batch, prepared, trained, evaluation)


@task(name="end-run", **TRANSIENT)
def end_run(store: TrackingStore, run: RunHandle, status: str) -> None:
    """Close the MLflow run and release its folder."""
    resume_runs.close_run(store, run, status)


# The stages after the gate as Prefect tasks: the training flow runs them through `normlab.stages.fit`.
STAGES = Stages(prepare_splits=prepare_splits, check_splits=check_splits, train=train, evaluate=evaluate,
                record_run=record_run)
