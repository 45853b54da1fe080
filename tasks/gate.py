"""Thin Prefect tasks and artifacts for the data gate (the gate itself is `normlab.gate`)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from normlab import gate
from normlab.config import PipelineConfig
from normlab.contracts import Batch, RunHandle, Splits
from normlab.gate.contracts import GateResult, LeakageAudit
from normlab.tasks.policy import TRANSIENT
from normlab.tracking import TrackingStore


def publish_gate(result: GateResult) -> None:
    """Publish the per-check table and the row accounting as Prefect artifacts (call inside a task)."""
    create_table_artifact(key="data-gate-checks", table=[row.model_dump() for row in gate.check_table(result.report)],
                          description="Data gate: one row per failed check, passed checks grouped")
    create_markdown_artifact(key="data-gate", markdown=gate.markdown_summary(result),
                             description="Data gate: outcome and row accounting")
    blocked = " (blocked)" if result.blocked else ""
    get_run_logger().info("data gate: %d rows in = %d accepted + %d quarantined%s", result.rows_in,
                          result.rows_accepted, result.rows_quarantined, blocked)


@task(name="check-splits", **TRANSIENT)
def check_splits(
    cfg: PipelineConfig, store: TrackingStore, batch: Batch, prepared: Splits, run: RunHandle
) -> LeakageAudit:
    """Stop when evaluation rows share their features with training rows; index them for later batches."""
    return gate.check_splits(gate.GateScope.from_config(cfg), batch, prepared, run.run_dir, store=store,
                             run_id=run.run_id)
