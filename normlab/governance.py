"""Data validation with Great Expectations 1.x suites stored as JSON.

A suite file is Great Expectations' own serialisation of an
``ExpectationSuite`` (``name``, ``expectations`` with ``type``/``kwargs``/``meta``).
Each expectation may carry ``meta.why`` (the reason it exists) and
``meta.severity``; here every failed expectation blocks the batch unless its
severity says otherwise.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from normlab.errors import ConfigError, DataValidationError

SEVERITIES = ("block", "quarantine", "warn")


@dataclass
class CheckResult:
    """The outcome of one expectation or check."""

    name: str
    success: bool
    severity: str = "block"
    column: str | None = None
    unexpected_count: int = 0
    unexpected_sample: list[Any] = field(default_factory=list)
    why: str | None = None
    observed: Any = None

    def describe(self) -> str:
        """One line a user can act on."""
        where = f" on '{self.column}'" if self.column else ""
        what = f": {self.unexpected_count} unexpected" if self.unexpected_count else ""
        sample = f" (e.g. {', '.join(map(str, self.unexpected_sample[:3]))})" if self.unexpected_sample else ""
        observed = f" (observed {self.observed})" if self.observed is not None and not self.unexpected_count else ""
        return f"{self.name}{where}{what}{sample}{observed}"


@dataclass
class ValidationReport:
    """Every check run on one batch, readable by name."""

    suite: str
    fingerprint: str
    rows_in: int
    checks: list[CheckResult]

    @property
    def success(self) -> bool:
        """True when no blocking check failed."""
        return not self.blocking_failures

    @property
    def blocking_failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success and c.severity == "block"]

    @property
    def failed(self) -> list[str]:
        """A line per failed check, blocking or not."""
        return [c.describe() for c in self.checks if not c.success]

    def by_name(self, name: str, column: str | None = None) -> list[CheckResult]:
        """Results of the checks called ``name`` (optionally on one column)."""
        return [c for c in self.checks if c.name == name and (column is None or c.column == column)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "fingerprint": self.fingerprint,
            "rows_in": self.rows_in,
            "success": self.success,
            "failed": self.failed,
            "checks": [asdict(c) for c in self.checks],
        }


def load_suite(path: str | Path) -> dict[str, Any]:
    """Read a suite JSON file and check its shape."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"expectation suite not found: {p} (set data.expectations, or null for none)")
    try:
        suite = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not a valid JSON suite ({exc})") from None
    if not isinstance(suite, dict) or "expectations" not in suite:
        raise ConfigError(f"{p}: a suite needs 'name' and 'expectations'")
    for exp in suite["expectations"]:
        severity = exp.get("meta", {}).get("severity", "block")
        if severity not in SEVERITIES:
            raise ConfigError(
                f"{p}: {exp.get('type')} has severity {severity!r}; allowed: {', '.join(SEVERITIES)}"
            )
    return suite


def _ephemeral_context():
    """An in-memory Great Expectations context with no progress bars or analytics."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def run_suite(df: pd.DataFrame, suite: dict[str, Any], *, fingerprint: str) -> ValidationReport:
    """Validate a frame against a suite with Great Expectations.

    Args:
        df: The batch.
        suite: The suite as loaded by `load_suite`.
        fingerprint: The batch's content fingerprint, recorded in the report.

    Returns:
        A report with one `CheckResult` per expectation, in suite order.
    """
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = _ephemeral_context()
    expectations = [
        {"type": e["type"], "kwargs": e.get("kwargs", {}), "meta": e.get("meta", {})} for e in suite["expectations"]
    ]
    gx_suite = gx.ExpectationSuite(name=suite.get("name", "suite"), expectations=expectations)
    batch = (
        context.data_sources.add_pandas("normlab")
        .add_dataframe_asset("batch")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": df})
    )
    result = batch.validate(gx_suite, result_format="SUMMARY")

    checks: list[CheckResult] = []
    for res in result.results:
        conf = res.expectation_config
        meta = conf.meta or {}
        details = res.result or {}
        error = (res.exception_info or {}).get("exception_message") if not res.success else None
        checks.append(
            CheckResult(
                name=conf.type,
                success=bool(res.success),
                severity=meta.get("severity", "block"),
                column=conf.kwargs.get("column"),
                unexpected_count=int(details.get("unexpected_count") or 0),
                unexpected_sample=[_plain(v) for v in details.get("partial_unexpected_list") or []][:5],
                why=meta.get("why"),
                observed=_plain(details.get("observed_value")) if error is None else error,
            )
        )
    return ValidationReport(suite=gx_suite.name, fingerprint=fingerprint, rows_in=len(df), checks=checks)


def raise_for_blocking(report: ValidationReport) -> None:
    """Raise `DataValidationError` listing each blocking failure."""
    failures = report.blocking_failures
    if failures:
        listed = "; ".join(c.describe() for c in failures)
        raise DataValidationError(
            f"batch {report.fingerprint[:12]} blocked by {len(failures)} failed expectation(s): {listed}",
            report=report.to_dict(),
        )


def _plain(value: Any) -> Any:
    """Make numpy scalars and containers JSON-friendly."""
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, TypeError):
            return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
