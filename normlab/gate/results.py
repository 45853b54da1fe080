"""The data gate's results: what a check found, and the report of every check on one batch.

`CheckResult` is one expectation's or gate check's outcome (its `CheckRecord`
is what the report keeps); `Evaluated` pairs it with the positions of the rows
it singles out; `ValidationReport` is every check run on one batch, with the
row accounting (its `GateReport` is ``validation.json``). Rows are named by their
position in the batch (0..n-1): `positional` and `take_rows` keep frames that
way. `expectation_result` shapes a suite expectation's outcome, whichever
engine evaluated it (numpy or Great Expectations, `normlab.gate.expectations`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from normlab.gate.contracts import CheckRecord, Expectation, GateReport

# Great Expectations' default `partial_unexpected_count`: unexpected values kept per expectation.
SAMPLE_SIZE = 20


@dataclass
class CheckResult:
    """The outcome of one expectation or gate check.

    ``outcome`` says what the gate did: ``passed``, ``warned``, ``quarantined``
    (the flagged rows were taken out), ``blocked``, or ``off`` (not evaluated).
    ``rows_flagged`` counts the rows the check singled out; table-level checks
    (``scope == "table"``) single out none.
    """

    name: str
    success: bool
    severity: str = "block"
    column: str | None = None
    unexpected_count: int = 0
    unexpected_sample: list[Any] = field(default_factory=list)
    why: str | None = None
    observed: Any = None
    kind: str = "expectation"
    scope: str = "rows"
    engine: str | None = None
    outcome: str = ""
    rows_flagged: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def of(cls, record: CheckRecord) -> CheckResult:
        """The result a report's `CheckRecord` was made from."""
        return cls(**record.model_dump())

    def record(self) -> CheckRecord:
        """The result as the report keeps it."""
        return CheckRecord.model_validate(asdict(self))

    @property
    def label(self) -> str:
        """The check's name with its column, as used in quarantine reasons."""
        return f"{self.name}({self.column})" if self.column else self.name

    def describe(self) -> str:
        """One line a user can act on."""
        where = f" on '{self.column}'" if self.column else ""
        if self.error:
            return f"{self.name}{where}: error: {self.error}"
        what = f": {self.unexpected_count} unexpected" if self.unexpected_count else ""
        lead = "rows" if self.kind == "check" else "e.g."
        sample = f" ({lead} {', '.join(map(str, self.unexpected_sample[:3]))})" if self.unexpected_sample else ""
        shown = self.observed
        if isinstance(shown, list) and len(shown) > 5:
            shown = f"{len(shown)} values"
        observed = f" (observed {shown})" if shown is not None and not self.unexpected_count else ""
        return f"{self.name}{where}{what}{sample}{observed}{_facts(self.details)}"


# Detail keys worth a place in the one-line description.
_FACT_KEYS = ("missing", "unexpected", "columns", "below", "leaked_rows")


def _facts(details: dict[str, Any]) -> str:
    flat = {**(details.get("mismatched") or {}), **details}
    facts = [f"{k} {v}" for k, v in flat.items() if k in _FACT_KEYS]
    return f" [{'; '.join(facts)}]" if facts else ""


@dataclass
class ValidationReport:
    """Every check run on one batch, readable by name, with the row accounting."""

    suite: str
    fingerprint: str
    rows_in: int
    checks: list[CheckResult]
    rows_accepted: int | None = None
    rows_quarantined: int = 0
    source: str | None = None

    @property
    def success(self) -> bool:
        """True when no blocking check failed."""
        return not self.blocking_failures

    @property
    def blocking_failures(self) -> list[CheckResult]:
        """Failed checks that stop the batch (a table-level quarantine rejects the whole batch)."""
        return [c for c in self.checks if not c.success and is_blocking(c)]

    @property
    def failed(self) -> list[str]:
        """A line per failed check, blocking or not."""
        return [c.describe() for c in self.checks if not c.success and c.outcome != "off"]

    def record(self, quarantine_path: str | None = None) -> GateReport:
        """The report as ``validation.json`` holds it, naming the Parquet of the rejected rows (or None)."""
        return GateReport(
            suite=self.suite,
            fingerprint=self.fingerprint,
            source=self.source,
            rows_in=self.rows_in,
            rows_accepted=self.rows_in if self.rows_accepted is None else self.rows_accepted,
            rows_quarantined=self.rows_quarantined,
            success=self.success,
            blocked=not self.success,
            failed=self.failed,
            checks=[c.record() for c in self.checks],
            quarantine_path=quarantine_path,
        )


def is_blocking(check: CheckResult) -> bool:
    """Whether a failure of this check stops the batch."""
    return check.severity == "block" or (check.severity == "quarantine" and check.scope == "table")


@dataclass
class Evaluated:
    """One evaluated expectation: its result and the positions of its unexpected rows."""

    result: CheckResult
    rows: np.ndarray | None = None  # int64 row positions; None for table-level expectations


def positional(df: pd.DataFrame) -> pd.DataFrame:
    """The frame with a 0..n-1 index, copied only when its index is something else."""
    index = df.index
    if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
        return df
    return df.reset_index(drop=True)


def take_rows(df: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    """The rows at ``positions`` with a fresh 0..n-1 index (one copy, where reset_index would make two)."""
    out = df.take(positions)
    out.index = pd.RangeIndex(len(out))
    return out


def expectation_result(
    exp: Expectation,
    *,
    success: bool,
    engine: str | None,
    scope: str,
    unexpected_count: int = 0,
    sample: list[Any] | None = None,
    observed: Any = None,
    details: dict[str, Any] | None = None,
    error: str | None = None,
) -> CheckResult:
    """A suite expectation's result; its name, column, severity and reason come from the expectation."""
    return CheckResult(
        name=exp.type,
        success=success,
        severity=exp.severity,
        column=exp.column,
        unexpected_count=unexpected_count,
        unexpected_sample=sample or [],
        why=exp.why,
        observed=observed,
        kind="expectation",
        scope=scope,
        engine=engine,
        rows_flagged=unexpected_count,
        details=details or {},
        error=error,
    )


def plain(value: Any) -> Any:
    """Make numpy scalars and containers JSON-friendly; NaN becomes None, infinities text."""
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return None
        return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if value is pd.NaT or value is pd.NA:
        return None
    if hasattr(value, "item") and callable(value.item):
        try:
            return plain(value.item())
        except (ValueError, TypeError):
            return str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value
