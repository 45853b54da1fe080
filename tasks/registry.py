"""Thin Prefect tasks around registration, the promotion gate and the aliases."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.runtime import flow_run

from normlab import pipeline
from normlab.config import PipelineConfig
from normlab.contracts import Batch, Decision, Evaluation, Publication, Registration, RunHandle, Splits
from normlab.gate import GateResult
from normlab.registry import registry_name
from normlab.tasks.policy import TRANSIENT
from normlab.tracking import TrackingStore


@task(name="register-model", **TRANSIENT)
def register_model(cfg: PipelineConfig, store: TrackingStore, run: RunHandle, prepared: Splits) -> Registration:
    """Log the serving model and register it as a new version of model.registry_name."""
    registered = pipeline.register_model(cfg.promotion, store, registry_name(cfg), run.run_id, prepared, run.run_dir)
    if registered.enabled:
        get_run_logger().info("registered %s version %s", registered.name, registered.version)
    return registered


@task(name="promotion-gate", **TRANSIENT)
def gate_model(cfg: PipelineConfig, store: TrackingStore, run: RunHandle, prepared: Splits,
               registered: Registration, evaluation: Evaluation) -> Decision:
    """Thresholds, then the champion re-scored on this run's splits."""
    decision = pipeline.gate_model(cfg.promotion, store, prepared, registered, evaluation, run.run_dir,
                                   seed=cfg.seed)
    if decision.enabled:
        get_run_logger().info("promotion gate %s", decision.reason)
    return decision


@task(name="publish-decision", **TRANSIENT)
def publish_decision(cfg: PipelineConfig, store: TrackingStore, run: RunHandle, accepted: Batch,
                     validation: GateResult, prepared: Splits, metrics: dict[str, float], registered: Registration,
                     decision: Decision) -> Publication:
    """Write the governance record, then set the aliases it names."""
    published = pipeline.publish_decision(cfg.promotion, store, run.run_id, accepted, validation, prepared, metrics, registered,
                                          decision, str(flow_run.id) if flow_run.id else None)
    if published.enabled:
        get_run_logger().info("%s version %s now holds: %s", published.name, published.version,
                              ", ".join(published.aliases))
    return published
