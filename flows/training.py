"""The training flow: wiring only."""

from __future__ import annotations

from typing import Any

from prefect import flow

from normlab.config import PipelineConfig
from normlab.deployments import resolve_config
from normlab.tasks import gate as g
from normlab.tasks import registry as r
from normlab.tasks import training as t


@flow(name="normlab-train", log_prints=True)
def training_flow(config: PipelineConfig | str, data_path: str | None = None, resume: bool = True) -> dict[str, Any]:
    """Validate a batch, train with the configured norm, evaluate ID and OOD, log everything.

    With ``resume`` (the default) an interrupted run with the same config and
    data is reopened and training continues from its last checkpoint.
    """
    config = resolve_config(config)  # a config file path: plain `prefect deploy` of deploy/prefect.yaml
    # 1. Open the MLflow run (params, provenance), or reopen the interrupted one
    run = t.start_run(config, data_path, resume)
    try:
        # 2. Load, snapshot and fingerprint the batch
        batch = t.load_batch(config, run, data_path)
        # 3. Data gate: validate, quarantine rejected rows, record, stop on a blocking failure
        validation = t.validate_batch(config, batch, run)
        t.log_validation(config, run, batch, validation)
        t.enforce_validation(validation)
        accepted = validation["accepted"]  # only the accepted rows go on
        # 4. Split ID train/val/test and OOD; stop if evaluation rows leak training content
        prepared = t.prepare_splits(config, accepted, run)
        g.check_splits(config, accepted, prepared, run)
        # 5. Train
        trained = t.train(config, prepared, run)
        # 6. Evaluate every split
        metrics = t.evaluate(config, prepared, trained, run)
        # 7. Log model, dataset, plots
        recorded = t.record_run(config, run, accepted, prepared, trained, metrics)
        # 8. Register the serving model (raw rows in, labels out) as a new version
        registered = r.register_model(config, run, prepared)
        # 9. Promotion gate: thresholds, then the champion re-scored on this run's splits
        decision = r.gate_model(config, run, prepared, registered, metrics)
        # 10. Governance record first, then the aliases (challenger; champion on a pass)
        promotion = r.publish_decision(config, run, accepted, validation, prepared, metrics, registered, decision)
    except BaseException as exc:
        t.end_run(config, run, "FAILED")
        exc.run_id = run.run_id  # lets the CLI name the failed run
        raise
    t.end_run(config, run, "FINISHED")
    return {
        "run_id": run.run_id,
        "resumed": run.resumed,
        "tracking_uri": config.redacted().tracking_uri(),
        "model_uri": recorded.model_uri,
        "data": batch.data_summary(),
        "validation": {"success": validation["success"], "failed": validation["failed"],
                       "rows_in": validation["rows_in"], "rows_accepted": validation["rows_accepted"],
                       "rows_quarantined": validation["rows_quarantined"],
                       "quarantine_path": validation["quarantine_path"], "checks": validation["table"]},
        "splits": dict(prepared.counts),
        "metrics": metrics,
        "registry": promotion.summary(),
    }
