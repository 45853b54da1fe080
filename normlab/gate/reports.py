"""The data gate's reports: the per-check table, the HTML page, the summary JSON, MLflow and Prefect views.

Pure functions of the validation report (`GateReport`) and of the gate's result (`GateResult`) that
`normlab.gate.assessment.settle` writes and returns; JSON is built from them with ``model_dump()``.
"""

from __future__ import annotations

import html
import json

from normlab import tracking
from normlab.contracts import CheckRow
from normlab.gate.contracts import CheckRecord, GateReport, GateResult, GateSummary, SummaryCheck
from normlab.tracking import TrackingStore


def check_table(report: GateReport) -> list[CheckRow]:
    """The per-check table: every failed check on its own row, passed and off checks grouped by name."""
    rows: list[CheckRow] = []
    grouped: dict[tuple[str, str], list[CheckRecord]] = {}
    for c in report.checks:
        if c.outcome in ("passed", "off"):
            grouped.setdefault((c.name, c.outcome), []).append(c)
            continue
        rows.append(CheckRow(check=c.name, column=c.column or "", severity=c.severity, outcome=c.outcome,
                             rows=c.rows_flagged, detail=_detail(c)))
    for (name, outcome), members in grouped.items():
        severities = sorted({m.severity for m in members})
        many = len(members) > 1
        rows.append(CheckRow(
            check=name,
            column=f"{len(members)} columns" if many and members[0].column else (members[0].column or ""),
            severity=severities[0] if len(severities) == 1 else "/".join(severities),
            outcome=outcome,
            rows=sum(m.rows_flagged for m in members),
            detail="" if many else _detail(members[0]),
        ))
    order = {o: i for i, o in enumerate(("blocked", "quarantined", "warned", "passed", "off"))}
    return sorted(rows, key=lambda r: order[r.outcome])


def _detail(c: CheckRecord) -> str:
    if c.error:
        return f"error: {c.error}"
    parts = []
    observed = c.observed
    if isinstance(observed, list) and len(observed) > 5:
        observed = f"{len(observed)} values"
    if observed is not None:
        parts.append(f"observed {observed}")
    if c.unexpected_sample:
        what = "rows" if c.kind == "check" else "e.g."
        parts.append(f"{what} {', '.join(map(str, c.unexpected_sample[:5]))}")
    if c.details:
        parts.append(", ".join(f"{k}={v}" for k, v in c.details.items() if k not in ("max_share", "min_share"))
                     if c.kind == "check" else json.dumps(c.details))
    return "; ".join(p for p in parts if p)


def summary(gate: GateResult) -> GateSummary:
    """What ``normlab validate --summary`` writes: counts, paths and each check's outcome."""
    report = gate.report
    return GateSummary(
        status="blocked" if gate.blocked else "passed",
        fingerprint=report.fingerprint,
        source=report.source,
        suite=report.suite,
        rows_in=gate.rows_in,
        rows_accepted=gate.rows_accepted,
        rows_quarantined=gate.rows_quarantined,
        accepted_path=gate.accepted_path,
        quarantine_path=gate.quarantine_path,
        report_path=gate.report_path,
        html_path=gate.html_path,
        checks=[
            SummaryCheck(check=c.name, column=c.column, severity=c.severity, outcome=c.outcome,
                         rows_flagged=c.rows_flagged, unexpected_count=c.unexpected_count, observed=c.observed)
            for c in report.checks
        ],
    )


_COLOURS = {"passed": "#e6f4ea", "warned": "#fff4e5", "quarantined": "#fde7d9", "blocked": "#fce8e6", "off": "#f1f3f4"}


def render_html(report: GateReport) -> str:
    """A self-contained HTML page: the accounting, then one row per check."""
    esc = html.escape
    status = "BLOCKED" if report.blocked else "passed"
    head = (
        f"<h1>Data gate: {esc(status)}</h1>"
        f"<p>batch <code>{esc(report.fingerprint)}</code> from {esc(str(report.source))}, "
        f"suite {esc(str(report.suite))}</p>"
        f"<p>rows in {report.rows_in} = accepted {report.rows_accepted} "
        f"+ quarantined {report.rows_quarantined}</p>"
    )
    if report.quarantine_path:
        head += f"<p>rejected rows: <code>{esc(report.quarantine_path)}</code></p>"
    cells = ("check", "column", "severity", "outcome", "rows", "why", "detail")
    lines = ["<tr>" + "".join(f"<th>{c}</th>" for c in cells) + "</tr>"]
    for c in report.checks:
        values = (c.name, c.column or "", c.severity, c.outcome, c.rows_flagged, c.why or "", _detail(c))
        colour = _COLOURS.get(c.outcome, "#ffffff")
        lines.append(f'<tr style="background:{colour}">' + "".join(f"<td>{esc(str(v))}</td>" for v in values) + "</tr>")
    style = "body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>normlab data gate</title>"
            f"<style>{style}</style></head><body>{head}<table>{''.join(lines)}</table></body></html>\n")


def log_gate(store: TrackingStore, run_id: str, gate: GateResult) -> None:
    """Record the gate in the MLflow run: accounting metrics, the report, the per-check table, the quarantine."""
    report = gate.report
    failed = [c for c in report.checks if c.outcome in ("warned", "quarantined", "blocked")]
    tracking.log_metrics(store, run_id, {
        "data/rows": gate.rows_in,
        "gate/rows_in": gate.rows_in,
        "gate/rows_accepted": gate.rows_accepted,
        "gate/rows_quarantined": gate.rows_quarantined,
        "gate/blocked": float(gate.blocked),
        "validation/failed": len(failed),
    })
    tracking.set_tags(store, run_id, {
        "normlab.data.fingerprint": report.fingerprint,
        "normlab.validation.success": not gate.blocked,
        "normlab.gate.quarantine": gate.quarantine_path or "",
    })
    tracking.log_dict(store, run_id, report.model_dump(), "validation/result.json")
    tracking.log_dict(store, run_id, [row.model_dump() for row in check_table(report)], "validation/checks.json")
    tracking.log_artifact(store, run_id, gate.html_path, "validation")
    if gate.quarantine_path:
        tracking.log_artifact(store, run_id, gate.quarantine_path, "validation/quarantine")


def markdown_summary(gate: GateResult) -> str:
    """A short Markdown account of the gate, for a Prefect artifact."""
    report = gate.report
    status = "**blocked**" if gate.blocked else "passed"
    lines = [
        f"# Data gate: {status}",
        f"batch `{report.fingerprint[:12]}` from `{report.source}`",
        "",
        f"rows in {gate.rows_in} = accepted {gate.rows_accepted} + quarantined {gate.rows_quarantined}",
    ]
    if gate.quarantine_path:
        lines.append(f"\nrejected rows: `{gate.quarantine_path}`")
    return "\n".join(lines)
