"""Normalization sweeps: the grid, one grid point end to end, and aggregation over seeds.

A sweep is one MLflow parent run plus one nested child run per grid point
(norm x batch size x seed). The parent loads and validates the batch once; each
point then runs split -> train -> evaluate -> record on exactly that validated
snapshot (its fingerprint is checked again), so a model is never trained on
data the gate did not see. A point is a plain function of small JSON-able
inputs, which is what lets a Dask worker on another machine run it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from normlab import pipeline, tracking
from normlab.config import DataConfig, PipelineConfig, SweepConfig, TrainConfig, flatten, to_yaml
from normlab.contracts import Batch, RunHandle, SweepParent
from normlab.credentials import redact_uri
from normlab.errors import DataValidationError
from normlab.intervals import mean_interval
from normlab.stages import fit, library_stages
from normlab.sweep_contracts import AggregateRow, GridPoint, PointOutcome, SweepGrid, SweepSummary
from normlab.tracking import TrackingStore

# Metrics summarised per (norm, batch size) in reports and the summary JSON.
SUMMARY_METRICS: tuple[str, ...] = (
    "id/test/accuracy",
    "ood/mean/accuracy",
    "ood/mean/accuracy_drop",
    "id/test/ece",
    "train/epochs_to_target",
    "time/train_seconds",
    "time/infer/eager/p50_ms",
)


def expand_grid(sweep: SweepConfig) -> list[GridPoint]:
    """Every grid point of the ``sweep`` section, norms outermost, seeds innermost."""
    return [
        GridPoint(norm=norm, batch_size=batch_size, seed=seed)
        for norm in sweep.norms
        for batch_size in sweep.batch_sizes
        for seed in sweep.seeds
    ]


def scaled_lr(train: TrainConfig, sweep: SweepConfig, batch_size: int) -> float:
    """The learning rate of a point: ``train.lr`` scaled from ``train.batch_size`` by the sweep's rule."""
    ratio = batch_size / train.batch_size
    if sweep.lr_scaling == "linear":
        return train.lr * ratio
    if sweep.lr_scaling == "sqrt":
        return train.lr * math.sqrt(ratio)
    return train.lr


def point_config(cfg: PipelineConfig, point: GridPoint) -> PipelineConfig:
    """The single-run config of a grid point.

    Each point trains with one torch thread unless ``train.threads`` says
    otherwise: one worker process per core then scales, where several
    multi-threaded workers would fight over the same cores.
    """
    model = cfg.model.model_copy(update={"norm": point.norm})
    train = cfg.train.model_copy(update={
        "batch_size": point.batch_size,
        "lr": scaled_lr(cfg.train, cfg.sweep, point.batch_size),
        "threads": cfg.train.threads or 1,
    })
    run_name = f"{cfg.tracking.run_name or cfg.name}-{point.name}"
    track = cfg.tracking.model_copy(update={"run_name": run_name})
    return cfg.model_copy(update={"seed": point.seed, "model": model, "train": train, "tracking": track})


def start_parent(
    cfg: PipelineConfig, store: TrackingStore, *, kind: str = "sweep", flow_run_id: str | None = None
) -> SweepParent:
    """Open the sweep's parent run with the grid and the config as params; returns its id and folder."""
    points = expand_grid(cfg.sweep)
    tags = {**tracking.environment_tags(), "normlab.kind": kind, "normlab.model.family": cfg.model.family,
            "normlab.sweep.points": len(points), "prefect.flow_run_id": flow_run_id or ""}
    run_id = tracking.start_run(store, cfg.tracking.experiment, artifact_location=cfg.artifact_location(),
                                run_name=cfg.tracking.run_name or f"{cfg.name}-{kind}", tags=tags)
    tracking.log_params(store, run_id, flatten(cfg.redacted()))
    tracking.log_text(store, run_id, to_yaml(cfg.redacted()), "config.yaml")
    return SweepParent(run_id=run_id, run_dir=str(pipeline.run_dir_for(cfg.workdir_path(), run_id)), points=points)


def log_data(store: TrackingStore, name: str, data: DataConfig, parent: SweepParent, batch: Batch) -> None:
    """Log the validated batch as the parent run's dataset input, before any grid point starts.

    Every point logs the same dataset. MLflow keeps one entry per name and digest
    in an experiment and does not guard its creation against concurrent writers
    (two workers inserting it at once fail on a unique constraint), so the parent
    creates it first and the points only link to it. ``name`` is the pipeline's name (the dataset's).
    """
    tracking.log_dataset(store, parent.run_id, pd.read_parquet(batch.path), name=name,
                         source=str(Path(batch.path).resolve()), fingerprint=batch.fingerprint,
                         targets=data.label, context="sweep")


def run_point(
    cfg: PipelineConfig,
    store: TrackingStore,
    point: GridPoint,
    *,
    parent_run_id: str,
    batch: Batch,
    on_epoch_end: Callable[[Any], None] | None = None,
) -> PointOutcome:
    """Run one grid point as a nested MLflow run: the stages of every run (`normlab.stages.fit`).

    Args:
        cfg: The sweep's config; the point's norm, batch size and seed override it.
        store: The tracking store of the sweep.
        point: The grid point: its norm, batch size and seed.
        parent_run_id: The sweep's parent run (tag ``mlflow.parentRunId``).
        batch: The parent's validated batch (the gate's accepted `Batch`).
        on_epoch_end: Called with each epoch's record (progress display); epochs
            reach MLflow in batches, at each checkpoint.

    Returns:
        The finished point: its ``run_id``, ``metrics`` (the keys of a single
        run), ``curve`` (per-epoch losses and accuracies) and ``run_dir``.

    Raises:
        DataValidationError: The snapshot no longer has the validated fingerprint.
    """
    pcfg = point_config(cfg, point)
    tags = {**tracking.environment_tags(), "mlflow.parentRunId": parent_run_id, "normlab.kind": "sweep-point",
            "normlab.model.norm": pcfg.model.norm, "normlab.model.family": pcfg.model.family,
            "normlab.sweep.batch_size": pcfg.train.batch_size, "normlab.sweep.seed": pcfg.seed}
    run_id = tracking.start_run(store, pcfg.tracking.experiment, artifact_location=pcfg.artifact_location(),
                                run_name=pcfg.tracking.run_name, tags=tags)
    try:
        tracking.log_params(store, run_id, flatten(pcfg.redacted()))
        run_dir = pipeline.run_dir_for(pcfg.workdir_path(), run_id)
        try:
            loaded = pipeline.load_snapshot(batch, run_dir)
        except DataValidationError as exc:
            raise DataValidationError(f"grid point {point.name}: {exc}") from None
        # The parent validated this exact content; the child records which data it was.
        tracking.set_tags(store, run_id, {"normlab.data.fingerprint": loaded.fingerprint,
                                        "normlab.data.source": batch.source,
                                        "normlab.validation.success": True})
        # The same stages as a run, in the same order (normlab.stages.fit)
        fitted = fit(library_stages(on_epoch_end=on_epoch_end), pcfg, store,
                     RunHandle(run_id=run_id, run_dir=str(run_dir)), loaded)
    except BaseException as exc:
        tracking.end_run(store, run_id, "FAILED")
        exc.run_id = run_id  # lets the sweep name the failed child run
        raise
    tracking.end_run(store, run_id, "FINISHED")
    history = fitted.trained.result.history
    return PointOutcome(
        **point.model_dump(),
        run_id=run_id,
        status="finished",
        metrics=fitted.metrics,
        curve={key: [getattr(r, key) for r in history] for key in ("train_loss", "val_loss", "val_accuracy")},
        run_dir=str(run_dir),
    )


def failed_point(point: GridPoint, error: BaseException) -> PointOutcome:
    """The outcome of a grid point whose run raised: no metrics, the reason in one line."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return PointOutcome(**point.model_dump(), run_id=getattr(error, "run_id", None), status="failed",
                        error=f"{type(error).__name__}: {text}")


def collect(points: list[GridPoint], outcomes: list[PointOutcome | BaseException]) -> list[PointOutcome]:
    """Pair each grid point with its outcome (a `run_point` result or the exception it raised)."""
    return [failed_point(p, o) if isinstance(o, BaseException) else o for p, o in zip(points, outcomes, strict=True)]


# Aggregation -----------------------------------------------------------------------------


def aggregate(results: list[PointOutcome], metrics: tuple[str, ...] = SUMMARY_METRICS) -> list[AggregateRow]:
    """Mean and 95 % interval over seeds of each metric, per (norm, batch size).

    Rows keep the grid's order; only finished points count, and ``n`` says how many.
    """
    groups: dict[tuple[str, int], list[PointOutcome]] = {}
    for result in results:
        groups.setdefault((result.norm, result.batch_size), []).append(result)
    rows = []
    for (norm, batch_size), members in groups.items():
        finished = [m for m in members if m.finished]
        rows.append(AggregateRow(norm=norm, batch_size=batch_size, points=len(members), finished=len(finished),
                                 stats={key: mean_interval([m.metrics.get(key) for m in finished])
                                        for key in metrics}))
    return rows


def summarize(
    sweep: SweepConfig, store: TrackingStore, parent: SweepParent, batch: Batch, results: list[PointOutcome]
) -> SweepSummary:
    """The sweep's summary: every grid point with its run and metrics, plus the aggregate."""
    return SweepSummary(
        status="finished" if all(r.finished for r in results) else "partial",
        parent_run_id=parent.run_id,
        tracking_uri=redact_uri(store.uri),
        data=batch.data_summary(),
        grid=SweepGrid(norms=list(sweep.norms), batch_sizes=list(sweep.batch_sizes),
                       seeds=list(sweep.seeds), lr_scaling=sweep.lr_scaling),
        points=results,
        aggregate=aggregate(results),
    )


def output_dir(sweep: SweepConfig, workdir: Path, parent_run_id: str) -> Path:
    """The sweep's report folder (created): ``sweep.output``, else ``<workdir>/sweeps/<parent run>``."""
    path = Path(sweep.output).expanduser().resolve() if sweep.output else (
        workdir / "sweeps" / parent_run_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


def finish(
    sweep: SweepConfig,
    workdir: Path,
    store: TrackingStore,
    parent: SweepParent,
    batch: Batch,
    results: list[PointOutcome],
) -> SweepSummary:
    """Write the comparison report and log it, with the aggregate, to the parent run.

    Returns:
        The summary (see `summarize`) with ``report`` naming the written files and ``output`` their folder.
    """
    from normlab import report

    summary = summarize(sweep, store, parent, batch, results)
    out = output_dir(sweep, workdir, parent.run_id)
    files = report.write_sweep_report(summary, results, out)
    for path in files.values():
        tracking.log_artifact(store, parent.run_id, path, "report")
    tracking.log_dict(store, parent.run_id, summary.record(), "sweep_summary.json")
    tracking.log_metrics(store, parent.run_id, parent_metrics(summary))
    tracking.set_tags(store, parent.run_id, {"normlab.data.fingerprint": batch.fingerprint})
    return summary.model_copy(update={"report": {k: str(v) for k, v in files.items()}, "output": str(out)})


def parent_metrics(summary: SweepSummary) -> dict[str, float]:
    """Per-cell means on the parent run, e.g. ``batch/bs2/id/test/accuracy``, for the MLflow UI."""
    out: dict[str, float] = {
        "sweep/points": float(len(summary.points)),
        "sweep/failed": float(sum(not p.finished for p in summary.points)),
    }
    for row in summary.aggregate:
        for key in ("id/test/accuracy", "ood/mean/accuracy"):
            mean = row.stats[key].mean
            if mean is not None:
                out[f"{row.norm}/bs{row.batch_size}/{key}"] = mean
    return out
