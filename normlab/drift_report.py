"""normlab's drift verdict inside the Evidently report: one verdict, shown where people look.

The alert is decided by `normlab.drift` on every accepted row and the whole
reference (vectorized KS and chi-square, ``p < alpha`` *and* an effect floor).
The Evidently report is drawn on a bounded seeded sample of rows, so tests
recomputed inside Evidently cannot be the same verdict. Instead the report's
primary content *is* normlab's verdict, carried by two Evidently 0.7 metrics
that take the precomputed result and compute nothing:

* `NormlabDriftedColumns` (a count metric): how many feature columns drifted
  and their share, as normlab decided. Its widget is the verdict table
  ("normlab drift verdict (decides alerts)"): every column with its test,
  effect size, p-value, the two threshold checks and whether it drifted,
  plus the model's outputs. The workspace dashboard plots this share.
* `NormlabColumnVerdict` (by column, one metric per ``stat``): ``drifted``
  (1 or 0, features and ``model.prediction``), ``score`` and ``p_value``, so
  the snapshot JSON holds the whole verdict as numbers.

Both return Evidently's own result types (`CountValue`, `ByLabelValue`), so
the snapshot loads in ``evidently ui`` without normlab installed.

Evidently's own tests follow as a labelled secondary view
(`EvidentlySecondaryView`): the same test family and ``alpha`` (KS for
numbers, chi-square for categories) on the sample, with a p-value only and no
effect floor. They can disagree with the verdict above and never alert.

`report_drifted_columns` reads a saved ``report.html`` or ``report.json``
back and returns the columns it shows as drifted under normlab's verdict;
`add_to_workspace` keeps the snapshots in an Evidently workspace whose
dashboard plots the verdict.

The verdict is a `normlab.drift.DriftVerdict` (built from ``drift.json`` by
`normlab.monitoring.build_report`); this module only reads it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from evidently._pydantic_compat import Field
from evidently.core.container import MetricContainer
from evidently.core.metric_types import (
    ByLabelCalculation,
    ByLabelMetric,
    ByLabelValue,
    CountCalculation,
    CountMetric,
    CountValue,
    MetricId,
)
from evidently.legacy.model.widget import BaseWidgetInfo
from evidently.legacy.renderers.html_widgets import (
    CounterData,
    WidgetSize,
    counter,
    group_widget,
    table_data,
)
from evidently.metrics import DriftedColumnsCount, ValueDrift
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # normlab.drift builds reports with this module: the verdict's type is only named here
    from normlab.drift import DriftVerdict

PREDICTION_COLUMN = "model.prediction"
CONFIDENCE_COLUMN = "model.confidence"

PRIMARY_TITLE = "normlab drift verdict (decides alerts)"
TABLE_TITLE = "normlab verdict per column (every row of the batch against the reference)"
SECONDARY_TITLE = "Secondary view: Evidently's own tests on a sample; not the alert's verdict"
TABLE_HEADER = ("column", "test", "effect size", "p-value", "p < alpha", "effect >= floor", "drifted")
DRIFTED_YES = "yes"

# Metric types as Evidently writes them into the snapshot (and matches dashboard panels by).
COUNT_TYPE = "evidently:metric_v2:NormlabDriftedColumns"
COLUMN_TYPE = "evidently:metric_v2:NormlabColumnVerdict"
STATS = ("drifted", "score", "p_value")
# Evidently's methods closest to normlab's tests (its threshold is a p-value for both).
EVIDENTLY_NUM_METHOD, EVIDENTLY_CAT_METHOD = "ks", "chisquare"


# The verdict ---------------------------------------------------------------------------


def verdict_drifted_columns(verdict: DriftVerdict) -> list[str]:
    """The columns normlab's verdict names as drifted, as the alert does: features, then ``model.prediction``."""
    out = [c.column for c in verdict.columns if c.drifted]
    if verdict.prediction is not None and verdict.prediction.class_.drifted:
        out.append(PREDICTION_COLUMN)
    return out


def check_verdict(verdict: DriftVerdict) -> None:
    """Refuse a verdict whose per-column flags do not give its own ``drifted_columns`` (mixed-up inputs)."""
    named = verdict.drifted_columns
    if list(named) != verdict_drifted_columns(verdict):
        raise ValueError(f"drift verdict names drifted columns {list(named)} but its columns flag "
                         f"{verdict_drifted_columns(verdict)}")


class VerdictRow(BaseModel):
    """One row of the verdict table: a feature, or one of the model's two outputs (``role``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    column: str
    test: str
    score: float
    p_value: float
    drifted: bool
    role: Literal["feature", "prediction", "confidence"]
    shifted: bool = False  # the confidence only: moved, though it never decides


def _rows(verdict: DriftVerdict) -> list[VerdictRow]:
    """Every row of the verdict: the features, then the model's two outputs."""
    rows = [VerdictRow(**c.model_dump(), role="feature") for c in verdict.columns]
    prediction = verdict.prediction
    if prediction is not None:
        cls, conf = prediction.class_, prediction.confidence
        rows.append(VerdictRow(column=PREDICTION_COLUMN, test=cls.test, score=cls.score, p_value=cls.p_value,
                               drifted=cls.drifted, role="prediction"))
        # The confidence is reported, never decides (see `normlab.drift.prediction_drift`).
        rows.append(VerdictRow(column=CONFIDENCE_COLUMN, test=conf.test, score=conf.score, p_value=conf.p_value,
                               drifted=False, role="confidence", shifted=conf.shifted))
    return rows


def _fmt(x: float, spec: str) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


# Evidently metrics that carry the verdict ------------------------------------------------


class NormlabDriftedColumns(CountMetric):
    """Drifted feature columns (count and share) under normlab's verdict; renders the verdict table."""

    alpha: float
    effect_floor: float
    drift_share: float
    # The precomputed verdict. Private: not a parameter of the metric, so every batch's value
    # falls in the same dashboard series.
    _verdict: DriftVerdict | None = None
    _sample: dict[str, int] | None = None


class NormlabDriftedColumnsCalculation(CountCalculation[NormlabDriftedColumns]):
    def calculate(self, context, current_data, reference_data) -> CountValue:
        verdict = self.metric._verdict
        if verdict is None:
            raise ValueError("NormlabDriftedColumns needs a verdict: build it with drift_report.verdict_metrics")
        features = verdict.columns
        n = sum(1 for c in features if c.drifted)
        result = self.result(n, n / len(features) if features else 0.0)
        result.widget = render_verdict(verdict, self.metric._sample or {})
        return result

    def display_name(self) -> str:
        return "normlab: drifted columns (decides alerts)"


class NormlabColumnVerdict(ByLabelMetric):
    """One number per column from normlab's verdict: ``drifted`` (1/0), ``score`` or ``p_value``."""

    stat: str
    _verdict: DriftVerdict | None = None


class NormlabColumnVerdictCalculation(ByLabelCalculation[NormlabColumnVerdict]):
    def calculate(self, context, current_data, reference_data) -> ByLabelValue:
        verdict = self.metric._verdict
        if verdict is None:
            raise ValueError("NormlabColumnVerdict needs a verdict: build it with drift_report.verdict_metrics")
        stat = self.metric.stat
        values: dict[str, float] = {}
        for row in _rows(verdict):
            if stat == "drifted":
                if row.role != "confidence":  # the confidence never decides
                    values[row.column] = 1.0 if row.drifted else 0.0
            else:
                values[row.column] = float(getattr(row, stat))
        result = self.result(values)
        result.widget = []  # the verdict table (NormlabDriftedColumns) shows these
        return result

    def display_name(self) -> str:
        return f"normlab verdict: {self.metric.stat} per column"

    def label_display_name(self, label) -> str:
        return f"normlab {self.metric.stat} of {label}"


def verdict_metrics(verdict: DriftVerdict, *, sample: dict[str, int] | None = None) -> list:
    """The Evidently metrics that carry ``verdict``: the count (with the table) and one per ``stat``."""
    check_verdict(verdict)
    count = NormlabDriftedColumns(alpha=verdict.alpha, effect_floor=verdict.effect_floor,
                                  drift_share=verdict.drift_share)
    count._verdict, count._sample = verdict, sample or {}
    out: list = [count]
    for stat in STATS:
        metric = NormlabColumnVerdict(stat=stat)
        metric._verdict = verdict
        out.append(metric)
    return out


def render_verdict(verdict: DriftVerdict, sample: dict[str, int]) -> list[BaseWidgetInfo]:
    """The primary section: the batch verdict as counters and every column in a table."""
    alpha, floor, share_needed = verdict.alpha, verdict.effect_floor, verdict.drift_share
    features = verdict.columns
    n = sum(1 for c in features if c.drifted)
    share = n / len(features) if features else 0.0
    drifted = verdict.drifted
    batch = "no decision (too few rows)" if drifted is None else ("DRIFTED" if drifted else "not drifted")
    prediction = verdict.prediction
    pred_text = "not computed"
    if prediction is not None:
        pred_text = "drifted" if prediction.class_.drifted else "not drifted"
        if not verdict.prediction_decides:
            pred_text += " (monitor.prediction off: does not drift the batch)"
    rows = verdict.rows
    counters = [
        CounterData("batch verdict", batch),
        CounterData(f"drifted feature columns (batch drifts at share >= {share_needed:g})",
                    f"{n} of {len(features)} ({share:.0%})"),
        CounterData("predicted-class distribution", pred_text),
        CounterData("rule", f"a column drifts when p < {alpha:g} and effect size >= {floor:g}"),
    ]
    table_rows = []
    # Features first (drifted ones, then by effect size), then the model's outputs.
    every = _rows(verdict)
    ranked = sorted((r for r in every if r.role == "feature"), key=lambda r: (r.drifted, r.score),
                    reverse=True) + [r for r in every if r.role != "feature"]
    for r in ranked:
        if r.role == "confidence":
            mark = "no (reported only" + (", shifted)" if r.shifted else ")")
        else:
            mark = DRIFTED_YES if r.drifted else "no"
        table_rows.append([r.column, r.test, _fmt(r.score, ".3f"), _fmt(r.p_value, ".3g"),
                           str(bool(r.p_value < alpha)).lower(), str(bool(r.score >= floor)).lower(), mark])
    table = table_data(title=TABLE_TITLE, column_names=list(TABLE_HEADER), data=table_rows, size=WidgetSize.FULL)
    table.pageSize = max(len(table_rows), 5)
    where = f"{rows} batch rows" if rows is not None else "every batch row"
    note = (f"Decided by normlab on {where} against the reference: KS (numbers) or chi-square (categories), "
            f"effect size = KS statistic or total variation distance. This is the verdict the alert uses.")
    if sample:
        note += (f" The panels further down are Evidently's own tests on a sample of {sample.get('current')} batch and "
                 f"{sample.get('reference')} reference rows: a secondary view.")
    return [group_widget(title=PRIMARY_TITLE, widgets=[
        counter(title="", counters=counters, size=WidgetSize.FULL),
        table,
        counter(title="", counters=[CounterData(note, "")], size=WidgetSize.FULL),
    ])]


# Evidently's own tests, as a labelled secondary view -------------------------------------


class EvidentlySecondaryView(MetricContainer):
    """Evidently's drifted-column count and per-column drift panels, grouped under a secondary title."""

    features: list[str]
    drawn: list[str]
    numeric: list[str]
    alpha: float | None = None  # None: Evidently's own default methods and thresholds
    drift_share: float = 0.5
    rows: dict[str, int] = Field(default_factory=dict)

    def generate_metrics(self, context) -> Sequence:
        num, cat = (EVIDENTLY_NUM_METHOD, EVIDENTLY_CAT_METHOD) if self.alpha is not None else (None, None)
        metrics: list = [DriftedColumnsCount(columns=list(self.features), num_method=num, cat_method=cat,
                                             threshold=self.alpha, drift_share=self.drift_share)]
        metrics += [ValueDrift(column=c, method=num if c in self.numeric else cat, threshold=self.alpha)
                    for c in self.drawn]
        return metrics

    def render(self, context, child_widgets: list[tuple[MetricId | None, list[BaseWidgetInfo]]] | None = None
               ) -> list[BaseWidgetInfo]:
        sample = (f"Evidently's own tests on a sample of {self.rows.get('current', '?')} batch and "
                  f"{self.rows.get('reference', '?')} reference rows")
        if self.alpha is None:
            note = f"{sample}, Evidently's default methods and thresholds. No normlab verdict is attached."
        else:
            note = (f"{sample}: KS p-value (numbers) or chi-square p-value (categories) below {self.alpha:g}, "
                    "with no effect floor. A large sample flags tiny shifts the verdict above ignores, a small one "
                    "misses shifts the full batch shows: where they disagree, the verdict above is the one that "
                    "alerts.")
        children = [w for _, widgets in (child_widgets or []) for w in widgets]
        return [group_widget(title=SECONDARY_TITLE,
                             widgets=[counter(title="", counters=[CounterData(note, "")]), *children])]


# Reading a saved report back -------------------------------------------------------------

_DATA_VAR = re.compile(r"var (metric_[0-9a-f]+) = ")


def report_drifted_columns(path: str | Path) -> list[str]:
    """The columns a saved report shows as drifted under normlab's verdict.

    ``report.html``: the rows marked drifted in the verdict table (read from
    the data the page embeds). ``report.json``: the labels whose
    ``NormlabColumnVerdict(stat=drifted)`` value is 1.

    Raises:
        ValueError: The file holds no normlab verdict.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        return _json_drifted(json.loads(text))
    return _html_drifted(text)


def _json_drifted(data: dict[str, Any]) -> list[str]:
    for metric in data.get("metrics", []):
        config = metric.get("config", {})
        if config.get("type") == COLUMN_TYPE and config.get("stat") == "drifted":
            return [str(col) for col, value in metric["value"].items() if value >= 0.5]
    raise ValueError("the report holds no normlab verdict (no NormlabColumnVerdict(stat=drifted) metric)")


def html_dashboard(text: str) -> dict[str, Any]:
    """The dashboard (widgets) that an Evidently report page embeds."""
    found = _DATA_VAR.search(text)
    if found is None:
        raise ValueError("not an Evidently report page: no embedded dashboard data")
    data, _ = json.JSONDecoder().raw_decode(text, found.end())
    return data


def _walk(widgets: list[dict[str, Any]]):
    for w in widgets:
        yield w
        yield from _walk(w.get("widgets") or [])


def verdict_table(text: str) -> list[dict[str, str]]:
    """The rows of the verdict table in a report page, as ``{header: cell}``."""
    for group in _walk(html_dashboard(text)["widgets"]):
        if group.get("title") != PRIMARY_TITLE:
            continue
        for w in _walk(group.get("widgets") or []):
            if w.get("type") == "table" and w.get("title") == TABLE_TITLE:
                header = w["params"]["header"]
                return [dict(zip(header, row, strict=True)) for row in w["params"]["data"]]
    raise ValueError(f"the report holds no normlab verdict (no {PRIMARY_TITLE!r} table)")


def _html_drifted(text: str) -> list[str]:
    return [row["column"] for row in verdict_table(text) if row["drifted"] == DRIFTED_YES]


# The Evidently workspace -----------------------------------------------------------------

# Dashboard panels: normlab's verdict, never Evidently's own count.
_DASHBOARD = (
    ("Share of drifted columns, normlab verdict (last batch)", "counter", "share"),
    ("Drifted columns, normlab verdict (last batch)", "counter", "count"),
    ("Share of drifted columns per batch, normlab verdict (decides alerts)", "line", "share"),
)


def _dashboard_panels() -> list[Any]:
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import counter_panel, line_plot_panel

    panels = []
    for title, kind, value_type in _DASHBOARD:
        values = [PanelMetric(legend=value_type, metric=COUNT_TYPE, metric_labels={"value_type": value_type})]
        if kind == "counter":
            panels.append(counter_panel(title=title, values=values, size="half", aggregation="last"))
        else:
            panels.append(line_plot_panel(title=title, values=values))
    return panels


def _migrate_dashboard(ws: Any, project_id: Any) -> None:
    """Point panels of an older normlab dashboard that plot Evidently's ``DriftedColumnsCount`` at normlab's verdict."""
    dashboard = ws.get_dashboard(project_id)
    changed = False
    for panel in dashboard.panels:
        hit = False
        for value in panel.values:
            if value.metric == "evidently:metric_v2:DriftedColumnsCount":
                value.metric, hit = COUNT_TYPE, True
        if hit:
            changed = True
            if "normlab verdict" not in panel.title:
                panel.title = f"{panel.title}, normlab verdict"
    if changed:
        ws.save_dashboard(project_id, dashboard)


def add_to_workspace(snapshot: Any, workspace: str | Path, project: str) -> dict[str, str]:
    """Add the snapshot to a local Evidently workspace (``evidently ui --workspace DIR``).

    The project is created on first use with a dashboard that plots the share
    and count of drifted columns under normlab's verdict (the
    ``NormlabDriftedColumns`` metric of each snapshot), the verdict the alerts
    use; a dashboard made by an older normlab that plots Evidently's own
    ``DriftedColumnsCount`` is switched over.
    """
    from evidently.ui.workspace import Workspace

    ws = Workspace(str(workspace))
    found = ws.search_project(project)
    if found:
        target = found[0]
        _migrate_dashboard(ws, target.id)
    else:
        target = ws.create_project(project, description="normlab drift monitoring: one snapshot per batch")
        for panel in _dashboard_panels():
            target.dashboard.add_panel(panel)
    ref = ws.add_run(target.id, snapshot, include_data=False)
    return {"workspace": str(Path(workspace).resolve()), "project_id": str(target.id), "snapshot_id": str(ref.id)}
