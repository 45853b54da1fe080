"""Typed hand-offs of sweeps and the study: grid points, their outcomes, intervals, summaries, findings.

`normlab.sweep`, `normlab.intervals` and `normlab.study` return these frozen
models; the Prefect tasks pass them on and the next stage reads their
attributes. Like `normlab.contracts`, they hold only what is small and
JSON-able (ids, paths, numbers, short lists). Where a JSON or CSV document is
written (``sweep_summary.json``, ``study.json``, the CLI's ``--summary``, the
report's CSVs), it is built from them with ``record()``, in the shape it always
had.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from normlab.contract_base import Contract


class _Contract(Contract, BaseModel):  # BaseModel for ruff's sake: see `normlab.contract_base`
    """The base of this module's models: `normlab.contract_base.Contract`."""


class GridPoint(_Contract):
    """One point of a sweep's grid (`normlab.sweep.expand_grid`): a norm, a training batch size, a seed."""

    norm: str
    batch_size: int
    seed: int

    @property
    def name(self) -> str:
        """A short readable name, e.g. ``batch-bs2-s0`` (in the point's run name and its task run's name)."""
        return f"{self.norm}-bs{self.batch_size}-s{self.seed}"


class PointOutcome(GridPoint):
    """What became of a grid point (`normlab.sweep.run_point`, `failed_point`; in grid order: `collect`).

    ``finished``: ``run_id``, ``metrics`` (the keys of a single run), ``curve``
    (per-epoch ``train_loss``, ``val_loss``, ``val_accuracy``) and ``run_dir``;
    ``failed``: the child run's id if it had one, and ``error`` in one line.
    """

    run_id: str | None = None
    status: Literal["finished", "failed"]
    error: str | None = None
    metrics: dict[str, float] = {}
    curve: dict[str, list[float]] = {}
    run_dir: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the point's run finished (only finished points count in the aggregate)."""
        return self.status == "finished"

    def record(self) -> dict[str, Any]:
        """The point as the sweep summary lists it: without the curve, ``error`` and ``run_dir`` only when set."""
        exclude = {"curve"} | {key for key in ("error", "run_dir") if getattr(self, key) is None}
        return self.model_dump(exclude=exclude)


class MeanInterval(_Contract):
    """The mean over seeds and its two-sided Student-t interval (`normlab.intervals.mean_interval`).

    ``n``: the values that counted; ``low`` and ``high`` are None with fewer
    than two, ``mean`` with none.
    """

    n: int
    mean: float | None = None
    low: float | None = None
    high: float | None = None

    def record(self) -> dict[str, float | int | None]:
        """``{"n", "mean", "low", "high"}``, as the summaries hold it."""
        return {"n": self.n, "mean": self.mean, "low": self.low, "high": self.high}


class Measurement(MeanInterval):
    """A statistic a study test measured, with what it is (`normlab.study._stat`): e.g. a paired accuracy drop."""

    label: str

    def record(self) -> dict[str, float | int | str | None]:
        """``{"label", "n", "mean", "low", "high"}``, as ``study.json`` holds it."""
        return {"label": self.label, **super().record()}


class AggregateRow(_Contract):
    """One (norm, batch size) cell of a sweep (`normlab.sweep.aggregate`).

    ``points``: the cell's grid points; ``finished``: those that count;
    ``stats``: each summary metric's mean and interval over their seeds.
    """

    norm: str
    batch_size: int
    points: int
    finished: int
    stats: dict[str, MeanInterval]

    def record(self) -> dict[str, Any]:
        """The row as the summary holds it: the cell, then one ``{"n", "mean", "low", "high"}`` per metric."""
        return {"norm": self.norm, "batch_size": self.batch_size, "points": self.points, "finished": self.finished,
                **{key: stat.record() for key, stat in self.stats.items()}}


class DataSummary(_Contract):
    """The batch a run or every grid point of a sweep trained on (`normlab.contracts.Batch.data_summary`)."""

    fingerprint: str
    rows: int
    source: str


class SweepGrid(_Contract):
    """The grid a sweep ran: ``config.sweep``'s norms, batch sizes, seeds and learning-rate rule."""

    norms: list[str]
    batch_sizes: list[int]
    seeds: list[int]
    lr_scaling: str


class SweepSummary(_Contract):
    """A sweep's summary (`normlab.sweep.summarize`; `normlab.sweep.finish` adds ``report`` and ``output``).

    ``status``: ``partial`` when a grid point failed; ``points``: every grid
    point's outcome, in grid order; ``report``: file name to path of the
    comparison report; ``output``: its folder.
    """

    status: Literal["finished", "partial"]
    parent_run_id: str
    tracking_uri: str
    data: DataSummary
    grid: SweepGrid
    points: list[PointOutcome]
    aggregate: list[AggregateRow]
    report: dict[str, str] | None = None
    output: str | None = None

    def record(self) -> dict[str, Any]:
        """The summary as ``sweep_summary.json`` and ``--summary`` hold it; ``report`` and ``output`` once set."""
        out: dict[str, Any] = {
            "status": self.status,
            "parent_run_id": self.parent_run_id,
            "tracking_uri": self.tracking_uri,
            "data": self.data.model_dump(),
            "grid": self.grid.model_dump(),
            "points": [p.record() for p in self.points],
            "aggregate": [row.record() for row in self.aggregate],
        }
        if self.report is not None:
            out["report"] = dict(self.report)
        if self.output is not None:
            out["output"] = self.output
        return out


class Finding(_Contract):
    """A known finding tested on the study's runs (`normlab.study.bn_small_batch`, `bn_folding`,
    `bn_adaptation`, `matches_layer`; all five: `check_findings`).

    ``measured``: the statistics the test decided on; ``held`` only when its
    intervals say so; ``verdict``: why, in a sentence.
    """

    key: str
    title: str
    published: str
    test: str
    measured: list[Measurement]
    held: bool
    verdict: str

    def record(self) -> dict[str, Any]:
        """The finding as ``study.json`` holds it."""
        return {"key": self.key, "title": self.title, "published": self.published, "test": self.test,
                "measured": [m.record() for m in self.measured], "held": self.held, "verdict": self.verdict}


class StudyResult(_Contract):
    """What the study wrote (`normlab.study.finish`): the findings, how many held, the page, its sweep.

    ``report``: ``markdown``, ``html`` and ``plot`` paths; ``sweep``: the study
    sweep's summary (`normlab.sweep.finish`).
    """

    parent_run_id: str
    tracking_uri: str
    held: int
    findings: list[Finding]
    report: dict[str, str]
    sweep: SweepSummary

    def record(self) -> dict[str, Any]:
        """The result as ``study.json`` and ``--summary`` hold it: the sweep's summary without its points."""
        return {
            "parent_run_id": self.parent_run_id,
            "tracking_uri": self.tracking_uri,
            "held": self.held,
            "findings": [f.record() for f in self.findings],
            "report": dict(self.report),
            "sweep": {k: v for k, v in self.sweep.record().items() if k != "points"},
        }
