"""The training flow: wiring only."""

from __future__ import annotations

from typing import Any

from prefect import flow

from normlab.config import PipelineConfig
from tasks import training as t


@flow(name="normlab-train", log_prints=True)
def training_flow(config: PipelineConfig, data_path: str | None = None) -> dict[str, Any]:
    """Validate a batch, train with the configured norm, evaluate ID and OOD, log everything."""
    # 1. Open the MLflow run (params, provenance)
    run = t.start_run(config)
    try:
        # 2. Load, snapshot and fingerprint the batch
        batch = t.load_batch(config, run, data_path)
        # 3. Data gate: validate, record, stop on a blocking failure
        validation = t.validate_batch(config, batch, run)
        t.log_validation(config, run, batch, validation)
        t.enforce_validation(validation)
        # 4. Split ID train/val/test and OOD
        prepared = t.prepare_splits(config, batch, run)
        # 5. Train
        trained = t.train(config, prepared, run)
        # 6. Evaluate every split
        metrics = t.evaluate(config, prepared, trained, run)
        # 7. Log model, dataset, plots
        recorded = t.record_run(config, run, batch, prepared, trained, metrics)
    except BaseException as exc:
        t.end_run(config, run, "FAILED")
        exc.run_id = run["run_id"]  # lets the CLI name the failed run
        raise
    t.end_run(config, run, "FINISHED")
    return {
        "run_id": run["run_id"],
        "tracking_uri": config.tracking_uri(),
        "model_uri": recorded["model_uri"],
        "data": {"fingerprint": batch["fingerprint"], "rows": batch["rows"], "source": batch["source"]},
        "validation": {"success": validation["success"], "failed": validation["failed"]},
        "splits": prepared["counts"],
        "metrics": metrics,
    }
