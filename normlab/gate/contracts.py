"""Typed hand-offs of the data gate: the suite it reads, the report it writes, the result it returns.

`Suite` and `Expectation` are an expectation suite file as `normlab.gate.expectations.load_suite`
reads it (Great Expectations' JSON; the keys the gate does not use are
ignored). `GateReport` is ``validation.json``, with a `CheckRecord` per check;
`GateResult` is what `normlab.gate.run_gate` returns to the training flow, the
monitoring flow and ``normlab validate``. They hold only what is small and
JSON-able (paths, fingerprints, counts, short lists): the rows stay in their
Parquet files. Where JSON is written (``validation.json``, the summaries, the
MLflow artifacts), it is built from them with ``model_dump()``, in the shape
it always had. The per-check table's `CheckRow` and `GateResult.entry`'s
`ValidationEntry` are in `normlab.contracts`, with the run summary that holds them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from normlab.contract_base import Contract
from normlab.contracts import Batch, CheckRow, ValidationEntry


class _Contract(Contract, BaseModel):  # BaseModel for ruff's sake: see `normlab.contract_base`
    """The base of this module's results: `normlab.contract_base.Contract`."""


class _Read(BaseModel):
    """A document read from a user's file: keys the gate does not use are ignored, not refused."""

    model_config = ConfigDict(frozen=True, extra="ignore")


# The suite (read by `load_suite`, written by `normlab init`) ------------------------------


class Expectation(_Read):
    """One expectation of a suite (`load_suite`, `normlab.profiling.profile_suite`).

    ``kwargs`` are Great Expectations' arguments of its ``type``
    (free-form); ``meta`` may carry ``why`` (the reason it exists) and
    ``severity`` (``block``, ``quarantine`` or ``warn``; default ``block``).
    """

    type: str
    kwargs: dict[str, Any] = {}
    meta: dict[str, Any] | None = None

    @property
    def severity(self) -> str:
        """Its severity as the suite sets it (``meta.severity``, default ``block``)."""
        return (self.meta or {}).get("severity", "block")

    @property
    def why(self) -> str | None:
        """Why it exists (``meta.why``), if the suite says."""
        return (self.meta or {}).get("why")

    @property
    def column(self) -> Any:
        """Its ``column`` argument, for a column expectation (else None)."""
        return self.kwargs.get("column")


class Suite(_Read):
    """An expectation suite (`load_suite`; `normlab.profiling.profile_suite` writes one with `to_json`)."""

    name: str | None = None
    expectations: list[Expectation]
    meta: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The suite file's JSON: the keys it was built (or read) with."""
        return self.model_dump(exclude_unset=True)


# The report (validation.json) ------------------------------------------------------------


class CheckRecord(_Contract):
    """One check of a `GateReport` as ``validation.json`` holds it (`normlab.gate.results.CheckResult.record`).

    ``observed`` is what the check measured (a number, a text, a list of
    values); ``details`` the check's own facts (free-form: Great Expectations
    reports its own).
    """

    name: str
    success: bool
    severity: str = "block"
    column: str | None = None
    unexpected_count: int = 0
    unexpected_sample: list[Any] = []
    why: str | None = None
    observed: Any = None
    kind: str = "expectation"
    scope: str = "rows"
    engine: str | None = None
    outcome: str = ""
    rows_flagged: int = 0
    details: dict[str, Any] = {}
    error: str | None = None


class GateReport(_Contract):
    """The validation report of one batch (`normlab.gate.settle`), as ``validation.json`` holds it.

    ``failed`` has a line per failed check; ``quarantine_path`` is the
    Parquet of the rejected rows, or None.
    """

    suite: str
    fingerprint: str
    source: str | None
    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    success: bool
    blocked: bool
    failed: list[str]
    checks: list[CheckRecord]
    quarantine_path: str | None = None


class GateResult(_Contract):
    """What the data gate decided and wrote (`normlab.gate.run_gate`, `normlab.gate.settle`).

    ``accepted`` is the `Batch` of the accepted rows (what training reads;
    None when blocked), in ``accepted_path``; ``quarantine_path`` the Parquet
    of the rejected rows (or None), in ``quarantine_dir``; ``success`` is not
    ``blocked``; ``failed`` a line per failed check; ``table`` the per-check
    table; ``report_path`` and ``html_path`` the report's files. In the
    ``monitor`` context, ``typed_path`` holds the rows that can be read and
    typed (``rows_typed``; ``rows_untyped`` could not), else they are None.
    """

    report: GateReport
    accepted: Batch | None
    accepted_path: str | None
    quarantine_path: str | None
    quarantine_dir: str
    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    blocked: bool
    success: bool
    failed: list[str]
    table: list[CheckRow]
    report_path: str
    html_path: str
    context: str = "train"
    typed_path: str | None = None
    rows_typed: int | None = None
    rows_untyped: int | None = None

    def entry(self) -> ValidationEntry:
        """The gate in a training run's summary: the outcome, the accounting and the per-check table."""
        return ValidationEntry(success=self.success, failed=self.failed, rows_in=self.rows_in,
                               rows_accepted=self.rows_accepted, rows_quarantined=self.rows_quarantined,
                               quarantine_path=self.quarantine_path, checks=self.table)


# The split audit -------------------------------------------------------------------------


class LeakageAudit(_Contract):
    """The split audit (`normlab.gate.check_splits`): the leakage check, and the evaluation rows recorded."""

    leakage: CheckRecord
    evaluation_rows: int


# normlab validate --summary ---------------------------------------------------------------


class SummaryCheck(_Contract):
    """One check in `GateSummary`."""

    check: str
    column: str | None
    severity: str
    outcome: str
    rows_flagged: int
    unexpected_count: int
    observed: Any


class GateSummary(_Contract):
    """What ``normlab validate --summary`` writes (`normlab.gate.summary`): counts, paths, each check's outcome."""

    status: str
    fingerprint: str
    source: str | None
    suite: str
    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    accepted_path: str | None
    quarantine_path: str | None
    report_path: str
    html_path: str
    checks: list[SummaryCheck]
