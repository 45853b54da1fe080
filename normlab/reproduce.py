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
from typing import Any

from normlab.config import PipelineConfig, read_yaml, validate_config
from normlab.errors import ConfigError, DataSourceError, NormlabError

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


def _get_run(uri: str, run_id: str) -> Any:
    from mlflow.exceptions import MlflowException

    from normlab import tracking

    try:
        return tracking.client_for(uri).get_run(run_id)
    except MlflowException:
        raise RunNotFoundError(f"run {run_id} not found in the tracking store {uri}") from None


def logged_config(uri: str, run_id: str) -> PipelineConfig:
    """The ``config.yaml`` artifact of a run, validated."""
    from mlflow.exceptions import MlflowException

    from normlab import tracking

    with tracking.scratch_dir() as tmp:
        try:
            path = tracking.client_for(uri).download_artifacts(run_id, "config.yaml", tmp)
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


def prepare(uri: str, run_id: str) -> dict[str, Any]:
    """What a rerun of ``run_id`` needs, after checking that its data is unchanged.

    Returns:
        ``config`` (the logged config, logging to ``uri``, promotion off), ``data_path`` (a file,
        or None for a built-in data set), ``fingerprint`` and ``source``.

    Raises:
        RunNotFoundError: Unknown run, or no config or fingerprint was recorded.
        DataSourceError: The data file is gone or its content changed.
    """
    from normlab import pipeline

    run = _get_run(uri, run_id)
    logged = run.data.tags.get(FINGERPRINT_TAG)
    if not logged:
        raise RunNotFoundError(f"run {run_id} has no {FINGERPRINT_TAG} tag: its data was never fingerprinted")
    cfg = logged_config(uri, run_id)
    # The reproduction logs next to the original, and, being a check, registers nothing.
    cfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"uri": uri}),
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
        current = pipeline.batch_fingerprint(cfg, data_path)
        if current == logged:
            return {"config": cfg, "data_path": data_path, "fingerprint": logged, "source": source}
        changed.append((source, current))
    if changed:
        source, current = changed[0]
        raise DataSourceError(f"cannot reproduce run {run_id}: the data at {source} changed since it ran "
                              f"(fingerprint now {current[:12]}, logged {logged[:12]})")
    raise DataSourceError(f"cannot reproduce run {run_id}: its data file {missing[0]} no longer exists")


def metric_histories(uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every metric of a run as (step, value) pairs, one value per step (the last logged)."""
    from normlab import tracking

    client = tracking.client_for(uri)
    out: dict[str, list[tuple[int, float]]] = {}
    for key in _get_run(uri, run_id).data.metrics:
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


def compare(uri: str, original: str, reproduced: str) -> dict[str, Any]:
    """Compare the original run's metrics with the reproduction's, key by key, every logged step.

    Returns:
        ``identical`` (every repeatable metric of the original equal in the
        reproduction, bit for bit or to float64 rounding), ``metrics`` (one row
        per key: ``key``, ``original`` and ``reproduced`` last values, ``match``,
        ``repeatable``), ``differ`` (repeatable keys that differ or are
        missing), ``rounding`` (keys equal only to rounding), ``unrepeatable``
        (wall-clock and registry keys, not compared) and ``extra`` (keys only
        the reproduction logged, e.g. stages a sweep point skips).
    """
    a, b = metric_histories(uri, original), metric_histories(uri, reproduced)
    rows = []
    for key in sorted(a):
        rows.append({
            "key": key,
            "original": a[key][-1][1] if a[key] else None,
            "reproduced": b[key][-1][1] if b.get(key) else None,
            "steps": len(a[key]),
            "match": match(a[key], b.get(key)),
            "repeatable": not key.startswith(UNREPEATABLE_PREFIXES),
        })
    compared = [r for r in rows if r["repeatable"]]
    differ = [r["key"] for r in compared if r["match"] in ("different", "missing")]
    return {
        "original_run_id": original,
        "reproduced_run_id": reproduced,
        "identical": bool(compared) and not differ,
        "differ": differ,
        "rounding": [r["key"] for r in compared if r["match"] == "rounding"],
        "compared": len(compared),
        "unrepeatable": [r["key"] for r in rows if not r["repeatable"]],
        "extra": sorted(set(b) - set(a)),
        "metrics": rows,
    }


def mark_reproduction(uri: str, original: str, reproduced: str, identical: bool) -> None:
    """Tag the new run with the run it reproduces and the outcome."""
    from normlab import tracking

    tracking.set_tags(uri, reproduced, {REPRODUCES_TAG: original,
                                        "normlab.reproduce.identical": str(identical).lower()})


def check_run_id(run_id: str) -> str:
    """A run id as MLflow writes them (32 hex digits), or a one-line error."""
    if len(run_id) != 32 or any(c not in "0123456789abcdef" for c in run_id):
        raise ConfigError(f"run id {run_id!r}: expected the 32 hex digits MLflow shows for a run")
    return run_id
