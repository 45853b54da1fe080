"""The data gate: run every check on a batch, quarantine what fails, block what must stop.

One entry point, `run_gate`, serves the training flow, the monitoring flow and
``normlab validate``; `enforce` raises `normlab.errors.DataValidationError` on a
blocked batch, and `check_splits` audits a training run's split for leakage.
The modules, by role:

``assessment``      `assess` (run the registered checks stage by stage, pure), `settle`
                    (write accepted rows, quarantine and reports; prove the accounting),
                    `run_gate`, `enforce`
``contracts``       the typed hand-offs: `Suite`/`Expectation` (a suite file), `GateReport`
                    (``validation.json``), `GateResult` (what `run_gate` returns), `LeakageAudit`
``check_registry``  the gate's checks by name (`CHECKS`): stage, evaluator, config
                    section, monitoring default; `severity_of`
``checks``          the gate's own vectorized checks (columns, types, duplicates, ...)
``expectations``    Great Expectations suites: `load_suite`, `evaluate_suite` (numpy for
                    `FAST_TYPES`, Great Expectations for the rest), suite readers
``results``         `CheckResult`, `Evaluated`, `ValidationReport`, row-position helpers
``quarantine``      the rejected rows with their reasons, and the row accounting
``reports``         the per-check table, HTML page, summary JSON, MLflow and Prefect views
``split_audit``     the leakage check after the split, and the index of evaluation rows
``scope``           `GateScope`: what the gate reads of a pipeline config, built once by the wiring

The label-noise check itself is `normlab.label_noise`.
"""

from __future__ import annotations

from normlab.contracts import CheckRow
from normlab.gate.assessment import Assessment, assess, enforce, run_gate, settle
from normlab.gate.check_registry import CHECKS, CONTEXTS, MONITOR_DEFAULTS, severity_of
from normlab.gate.contracts import (
    CheckRecord,
    Expectation,
    GateReport,
    GateResult,
    GateSummary,
    LeakageAudit,
    Suite,
)
from normlab.gate.reports import check_table, log_gate, markdown_summary, render_html, summary
from normlab.gate.scope import GateScope, evaluation_index_dir
from normlab.gate.split_audit import check_splits, read_evaluation_index

__all__ = [
    "CHECKS",
    "CONTEXTS",
    "MONITOR_DEFAULTS",
    "Assessment",
    "CheckRecord",
    "CheckRow",
    "Expectation",
    "GateReport",
    "GateResult",
    "GateScope",
    "GateSummary",
    "LeakageAudit",
    "Suite",
    "assess",
    "check_splits",
    "check_table",
    "enforce",
    "evaluation_index_dir",
    "log_gate",
    "markdown_summary",
    "read_evaluation_index",
    "render_html",
    "run_gate",
    "settle",
    "severity_of",
    "summary",
]
