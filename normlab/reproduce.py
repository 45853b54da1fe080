"""Reproduce a logged run: its logged config, its data (checked by fingerprint), metric by metric.

A run records everything a rerun needs: ``config.yaml`` (the resolved config),
the dataset input (where the batch came from) and the tag
``normlab.data.fingerprint`` (what it contained). `prepare` reads them back and
refuses when the data no longer has that fingerprint, since a rerun on other
data reproduces nothing. `compare` then checks every metric of the two runs,
whole history included. Wall-clock figures (keys under ``time/``) cannot repeat
exactly and are listed apart.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from normlab import tracking
from normlab.config import PipelineConfig, read_yaml, validate_config
from normlab.contract_base import Contract
from normlab.credentials import redact_uri
from normlab.errors import ConfigError, DataSourceError, NormlabError
from normlab.tracking import TrackingStore

FINGERPRINT_TAG = "normlab.data.fingerprint"
REPRODUCES_TAG = "normlab.reproduces"
# Not results of the run's computation, so not expected to repeat: wall-clock figures
# (``time/...``), and the promotion decision, which depends on the registry's champion
# at the time (a reproduction is a check: it never registers a model or moves an alias).
UNREPEATABLE_PREFIXES: tuple[str, ...] = ("time/", "gate/passed")
# Relative difference left by summing the same float64 numbers in another order
# (a few ulp; 1e-12 is far above that and far below any change of result).
ROUNDING_RTOL = 1e-12


class RunNotFoundError(NormlabError):
    """The run id is not in the tracking store, or the run lacks what a rerun needs."""


class _Contract(Contract, BaseModel):
    pass


class Plan(_Contract):
    """What a rerun needs (`prepare`): the logged config, and the data it ran on, unchanged."""

    config: PipelineConfig  # the logged config, logging to the same store, promotion off
    data_path: str | None  # a file, or None for a built-in data set
    fingerprint: str
    source: str


class MetricRow(_Contract):
    """One metric of the original run, against the reproduction (last logged values)."""

    key: str
    original: float | None
    reproduced: float | None
    steps: int
    match: Literal["identical", "rounding", "different", "missing"]
    repeatable: bool


class Comparison(_Contract):
    """The two runs compared key by key, every logged step (`compare`); the summary file is this, as JSON."""

    original_run_id: str
    reproduced_run_id: str
    identical: bool  # every repeatable metric equal, bit for bit or to float64 rounding
    differ: list[str]  # repeatable keys that differ or are missing
    rounding: list[str]  # keys equal only to rounding
    compared: int
    unrepeatable: list[str]  # wall-clock and registry keys, not compared
    extra: list[str]  # keys only the reproduction logged (e.g. stages a sweep point skips)
    metrics: list[MetricRow]


def _get_run(store: TrackingStore, run_id: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return store.client.get_run(run_id)
    except MlflowException:
        raise RunNotFoundError(f"run {run_id} not found in the tracking store {redact_uri(store.uri)}") from None


def logged_config(store: TrackingStore, run_id: str) -> PipelineConfig:
    """The ``config.yaml`` artifact of a run, validated."""
    from mlflow.exceptions import MlflowException

    with tracking.scratch_dir() as tmp:
        try:
            path = store.client.download_artifacts(run_id, "config.yaml", tmp)
        except (MlflowException, OSError):
            raise RunNotFoundError(f"run {run_id} has no config.yaml artifact: it did not finish recording, "
                                   "so there is nothing to rerun") from None
        return validate_config(read_yaml(path), source=f"run {run_id} config.yaml")


def logged_source(run: Any) -> str | None:
    """Where the run's training batch came from: a file path, ``builtin:<name>``, or None if not recorded."""
    for dataset_input in run.inputs.dataset_inputs if run.inputs else []:
        contexts = {t.value for t in dataset_input.tags if t.key == "mlflow.data.context"}
        if contexts and "training" not in contexts:
            continue
        source = json.loads(dataset_input.dataset.source or "{}")
        if "uri" in source:
            return str(source["uri"])
        if "normlab.source" in source.get("tags", {}):
            return str(source["tags"]["normlab.source"])
    return None


def prepare(store: TrackingStore, run_id: str) -> Plan:
    """What a rerun of ``run_id`` needs, after checking that its data is unchanged.

    Returns:
        The `Plan`: the logged config (logging to ``store``, promotion off), the data file
        (None for a built-in data set), its fingerprint and source.

    Raises:
        RunNotFoundError: Unknown run, or no config or fingerprint was recorded.
        DataSourceError: The data file is gone or its content changed.
    """
    from normlab import pipeline

    run = _get_run(store, run_id)
    logged = run.data.tags.get(FINGERPRINT_TAG)
    if not logged:
        raise RunNotFoundError(f"run {run_id} has no {FINGERPRINT_TAG} tag: its data was never fingerprinted")
    cfg = logged_config(store, run_id)
    # The reproduction logs next to the original, and, being a check, registers nothing.
    cfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"uri": store.uri}),
                                 "promotion": cfg.promotion.model_copy(update={"enabled": False})})
    # The recorded source first (a `--data` file, a sweep's validated snapshot), then the config's.
    # MLflow keeps one dataset per name and digest in an experiment, so the recorded path can be
    # another file with the same content; the content, checked below, is what counts.
    configured = str(Path(cfg.data.path).resolve()) if cfg.data.path else f"builtin:{cfg.data.source}"
    candidates = list(dict.fromkeys(s for s in (logged_source(run), configured) if s))
    changed, missing = [], []
    for source in candidates:
        data_path = None if source.startswith("builtin:") else source
        if data_path is not None and not Path(data_path).is_file():
            missing.append(source)
            continue
        current = pipeline.batch_fingerprint(cfg.data, data_path)
        if current == logged:
            return Plan(config=cfg, data_path=data_path, fingerprint=logged, source=source)
        changed.append((source, current))
    if changed:
        source, current = changed[0]
        raise DataSourceError(f"cannot reproduce run {run_id}: the data at {source} changed since it ran "
                              f"(fingerprint now {current[:12]}, logged {logged[:12]})")
    raise DataSourceError(f"cannot reproduce run {run_id}: its data file {missing[0]} no longer exists")


def metric_histories(store: TrackingStore, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every metric of a run as (step, value) pairs, one value per step (the last logged)."""
    client = store.client
    out: dict[str, list[tuple[int, float]]] = {}
    for key in _get_run(store, run_id).data.metrics:
        by_step: dict[int, tuple[int, float]] = {}
        for m in client.get_metric_history(run_id, key):
            # A resumed run can log a step twice; the later value is the run's.
            if m.step not in by_step or m.timestamp >= by_step[m.step][0]:
                by_step[m.step] = (m.timestamp, m.value)
        out[key] = sorted((step, value) for step, (_, value) in by_step.items())
    return out


def match(a: list[tuple[int, float]], b: list[tuple[int, float]] | None) -> str:
    """How two metric histories compare: ``identical`` (bit for bit), ``rounding``, ``different`` or ``missing``.

    ``rounding``: every value within `ROUNDING_RTOL` of the other, the trace of
    float64 sums taken in another order (numpy's pairwise sums follow memory
    alignment), never of another computation.
    """
    if b is None:
        return "missing"
    if len(a) != len(b) or any(sa != sb for (sa, _), (sb, _) in zip(a, b, strict=True)):
        return "different"
    pairs = [(va, vb) for (_, va), (_, vb) in zip(a, b, strict=True)]
    if all(va == vb or (math.isnan(va) and math.isnan(vb)) for va, vb in pairs):
        return "identical"
    if all(math.isclose(va, vb, rel_tol=ROUNDING_RTOL, abs_tol=0.0) for va, vb in pairs):
        return "rounding"
    return "different"


def compare(store: TrackingStore, original: str, reproduced: str) -> Comparison:
    """Compare the original run's metrics with the reproduction's, key by key, every logged step (`Comparison`)."""
    a, b = metric_histories(store, original), metric_histories(store, reproduced)
    rows = [
        MetricRow(
            key=key,
            original=a[key][-1][1] if a[key] else None,
            reproduced=b[key][-1][1] if b.get(key) else None,
            steps=len(a[key]),
            match=match(a[key], b.get(key)),
            repeatable=not key.startswith(UNREPEATABLE_PREFIXES),
        )
        for key in sorted(a)
    ]
    compared = [r for r in rows if r.repeatable]
    differ = [r.key for r in compared if r.match in ("different", "missing")]
    return Comparison(
        original_run_id=original,
        reproduced_run_id=reproduced,
        identical=bool(compared) and not differ,
        differ=differ,
        rounding=[r.key for r in compared if r.match == "rounding"],
        compared=len(compared),
        unrepeatable=[r.key for r in rows if not r.repeatable],
        extra=sorted(set(b) - set(a)),
        metrics=rows,
    )


def mark_reproduction(store: TrackingStore, original: str, reproduced: str, identical: bool) -> None:
    """Tag the new run with the run it reproduces and the outcome."""
    tracking.set_tags(store, reproduced, {REPRODUCES_TAG: original,
                                        "normlab.reproduce.identical": str(identical).lower()})


def check_run_id(run_id: str) -> str:
    """A run id as MLflow writes them (32 hex digits), or a one-line error."""
    if len(run_id) != 32 or any(c not in "0123456789abcdef" for c in run_id):
        raise ConfigError(f"run id {run_id!r}: expected the 32 hex digits MLflow shows for a run")
    return run_id
