"""The training flow: wiring only."""

from __future__ import annotations

from prefect import flow

from normlab.config import PipelineConfig
from normlab.contracts import RunSummary
from normlab.deployments import resolve_config
from normlab.stages import fit
from normlab.tasks import registry as r
from normlab.tasks import training as t
from normlab.tracking import TrackingStore


@flow(name="normlab-train", log_prints=True)
def training_flow(config: PipelineConfig | str, data_path: str | None = None, resume: bool = True) -> RunSummary:
    """Validate a batch, train with the configured norm, evaluate ID and OOD, log everything.

    With ``resume`` (the default) an interrupted run with the same config and
    data is reopened and training continues from its last checkpoint.
    """
    config = resolve_config(config)  # a config file path: plain `prefect deploy` of deploy/prefect.yaml
    store = TrackingStore(config.tracking_uri())  # one client for every stage of this run
    # 1. Open the MLflow run (params, provenance), or reopen the interrupted one
    run = t.start_run(config, store, data_path, resume)
    try:
        # 2. Load, snapshot and fingerprint the batch
        batch = t.load_batch(config, run, data_path)
        # 3. Data gate: validate, quarantine rejected rows, record, stop on a blocking failure
        validation = t.validate_batch(config, batch, run)
        t.log_validation(store, run, validation)
        t.enforce_validation(validation)
        accepted = validation.accepted  # only the accepted rows go on
        # 4-7. Split (stop if evaluation rows leak training content), train, evaluate, log model and plots:
        #      the stages every run and sweep point go through (normlab.stages.fit)
        fitted = fit(t.STAGES, config, store, run, accepted)
        prepared, metrics = fitted.prepared, fitted.metrics
        # 8. Register the serving model (raw rows in, labels out) as a new version
        registered = r.register_model(config, store, run, prepared)
        # 9. Promotion gate: thresholds, then the champion re-scored on this run's splits
        decision = r.gate_model(config, store, run, prepared, registered, fitted.evaluation)
        # 10. Governance record first, then the aliases (challenger; champion on a pass)
        promotion = r.publish_decision(config, store, run, accepted, validation, prepared, metrics, registered, decision)
    except BaseException as exc:
        t.end_run(store, run, "FAILED")
        exc.run_id = run.run_id  # lets the CLI name the failed run
        raise
    t.end_run(store, run, "FINISHED")
    return RunSummary(
        run_id=run.run_id,
        resumed=run.resumed,
        tracking_uri=config.redacted().tracking_uri(),
        model_uri=fitted.recorded.model_uri,
        data=batch.data_summary(),
        validation=validation.entry(),
        splits=prepared.counts,
        metrics=metrics,
        registry=promotion,
    )
