"""The training stages after the gate, sequenced once: split, split audit, train, evaluate, record.

A run (`normlab.flows.training.training_flow`) and a sweep point
(`normlab.sweep.run_point`) both go through `fit`; they differ only in what
runs each stage. The flow passes its Prefect tasks
(`normlab.tasks.training.STAGES`: retries, task runs in the UI), a sweep point
the plain library functions (`library_stages`: it already runs inside one
task, on a Dask worker). A stage added to `Stages` and `fit` is run by both;
tests/unit/test_stages.py fails if either calls a stage outside `fit`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from normlab import gate, pipeline, splitting, tracking
from normlab.config import PipelineConfig
from normlab.contracts import Batch, Evaluation, Fitted, Recorded, RunHandle, Splits, Trained
from normlab.tracking import TrackingStore


@dataclass(frozen=True)
class Stages:
    """What runs each stage of `fit`: one callable per stage, each given the run it writes into."""

    prepare_splits: Callable[[PipelineConfig, Batch, RunHandle], Splits]
    check_splits: Callable[[PipelineConfig, TrackingStore, Batch, Splits, RunHandle], object]
    train: Callable[[PipelineConfig, TrackingStore, Splits, RunHandle], Trained]
    evaluate: Callable[[PipelineConfig, Splits, Trained, RunHandle], Evaluation]
    record_run: Callable[[PipelineConfig, TrackingStore, RunHandle, Batch, Splits, Trained, Evaluation], Recorded]


STAGE_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Stages))


def fit(stages: Stages, cfg: PipelineConfig, store: TrackingStore, run: RunHandle, batch: Batch) -> Fitted:
    """Run the stages after the gate on the accepted ``batch``, in the one order every run and point uses.

    ``store`` is the tracking store ``run`` is in: the stages that log reuse its client.

    Raises:
        DataValidationError: The split leaks training content into evaluation rows.
    """
    # 1. Split ID train/val/test and OOD, encode
    prepared = stages.prepare_splits(cfg, batch, run)
    # 2. Stop if evaluation rows share their features with training rows; index them
    stages.check_splits(cfg, store, batch, prepared, run)
    # 3. Train with the configured norm
    trained = stages.train(cfg, store, prepared, run)
    # 4. Score every split
    evaluation = stages.evaluate(cfg, prepared, trained, run)
    # 5. Log metrics, dataset, model, plots
    recorded = stages.record_run(cfg, store, run, batch, prepared, trained, evaluation)
    return Fitted(prepared=prepared, trained=trained, evaluation=evaluation, recorded=recorded)


def train_stage(cfg: PipelineConfig, prepared: Splits, run_dir: str | Path, *, on_epoch_end=None,
                on_checkpoint=None) -> Trained:
    """`normlab.pipeline.train` given the sections of ``cfg`` it reads (the wiring's one call of it)."""
    return pipeline.train(cfg.model, cfg.train, prepared, run_dir, seed=cfg.seed, image_shape=cfg.data.image_shape,
                          eval_batch_size=cfg.eval.batch_size, checkpoint=cfg.checkpoint,
                          on_epoch_end=on_epoch_end, on_checkpoint=on_checkpoint)


def library_stages(*, on_epoch_end: Callable[[object], None] | None = None) -> Stages:
    """The stages as plain library calls; epochs reach MLflow at each checkpoint, ``on_epoch_end`` each epoch."""

    def prepare_splits(cfg: PipelineConfig, batch: Batch, run: RunHandle) -> Splits:
        return splitting.prepare_splits(cfg.data, cfg.splits, cfg.eval, cfg.seed, batch, run.run_dir)

    def check_splits(cfg: PipelineConfig, store: TrackingStore, batch: Batch, prepared: Splits,
                     run: RunHandle) -> object:
        return gate.check_splits(gate.GateScope.from_config(cfg), batch, prepared, run.run_dir, store=store,
                                 run_id=run.run_id)

    def train(cfg: PipelineConfig, store: TrackingStore, prepared: Splits, run: RunHandle) -> Trained:
        return train_stage(cfg, prepared, run.run_dir, on_epoch_end=on_epoch_end,
                           on_checkpoint=tracking.epoch_logger(store, run.run_id))

    def evaluate(cfg: PipelineConfig, prepared: Splits, trained: Trained, run: RunHandle) -> Evaluation:
        return pipeline.evaluate(cfg.eval, prepared, trained, run.run_dir, seed=cfg.seed)

    def record_run(cfg: PipelineConfig, store: TrackingStore, run: RunHandle, batch: Batch, prepared: Splits,
                   trained: Trained, evaluation: Evaluation) -> Recorded:
        return pipeline.record_run(cfg, store, run.run_id, batch, prepared, trained, evaluation)

    return Stages(prepare_splits=prepare_splits, check_splits=check_splits, train=train, evaluate=evaluate,
                  record_run=record_run)
