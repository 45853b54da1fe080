"""Drift monitoring speed: normlab's decision path against Evidently's DataDriftPreset, and a whole batch.

Run from the repository root::

    python -m bench.drift                  # 10k, 100k and 1M rows x 64 columns
    python -m bench.drift 100000           # one size

For each size, on the same batch and reference (digits-like rows: the 1797
digits resampled with a +-1 pixel jitter, so rows are unique and pass the
gate's duplicate check; 10,000 reference rows):

* ``evidently_s``: ``Report([DataDriftPreset()])`` on every row and column;
* ``scipy_s``: ``scipy.stats.ks_2samp(method="asymp")`` column by column;
* ``decision_s``: `normlab.drift.score_columns` (vectorized KS, the decision path);
* ``batch_s``: one batch end to end through the monitoring library as the
  flow runs it (fingerprint and snapshot, data gate in its monitoring
  context, drift and prediction drift on every typed row, the Evidently
  report with normlab's verdict on ``monitor.report_rows`` sampled rows,
  decision, MLflow run, alerts, commit), with ``stages`` timing each step.

Prefect's own per-task overhead, the one-off imports and the creation of
the MLflow store are not in ``batch_s``; ``evidently_import_s`` is reported
apart. The reference model is
an untrained MLP of the default shape (64-128-128-10): inference costs the
same as a trained one.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RESULTS = Path(__file__).with_name("results_drift.json")
REFERENCE_ROWS = 10_000
SIZES = (10_000, 100_000, 1_000_000)


def digits_like(rows: int, seed: int) -> pd.DataFrame:
    """Digits rows resampled with a +-1 jitter on every pixel (clipped to 0..16), with labels."""
    from normlab.data.sources import load_builtin

    digits = load_builtin("digits")
    rng = np.random.default_rng(seed)
    picked = digits.iloc[rng.integers(0, len(digits), rows)].reset_index(drop=True)
    features = [c for c in picked.columns if c != "label"]
    jitter = rng.integers(-1, 2, (rows, len(features)))
    picked[features] = np.clip(picked[features].to_numpy() + jitter, 0, 16)
    return picked


def _reference(cfg: Any, frame: pd.DataFrame, folder: Path):
    """A reference in the shape `normlab.monitoring.resolve_reference` returns, without a training run."""
    import torch

    from normlab.data.encoding import FeatureEncoder, LabelEncoder
    from normlab.model_spec import ModelSpec

    folder.mkdir(parents=True, exist_ok=True)
    features = [c for c in frame.columns if c != "label"]
    encoder = FeatureEncoder.fit(frame, features, scale=cfg.data.scale)
    labels = LabelEncoder.fit(frame["label"])
    spec = ModelSpec(family="mlp", in_features=encoder.n_outputs, num_classes=labels.n_classes, norm="batch",
                     image_shape=(8, 8), hidden=(128, 128), channels=(16, 32), groups=8, dropout=0.0)
    torch.manual_seed(0)
    torch.save(spec.build().state_dict(), folder / "model.pt")
    (folder / "model.json").write_text(json.dumps(spec.to_json()))
    (folder / "encoder.json").write_text(json.dumps({"features": encoder.to_dict(), "labels": labels.to_dict(),
                                                     "label_column": "label"}))
    frame.to_parquet(folder / "reference.parquet", index=False)
    from normlab.monitoring import Reference

    return Reference(run_id="bench-reference", model="normlab-bench", version=None, selected_by="bench",
                     reference_accuracy=None, reference=str(folder / "reference.parquet"),
                     encoder=str(folder / "encoder.json"), model_spec=str(folder / "model.json"),
                     model_weights=str(folder / "model.pt"))


def _timed(stages: dict[str, float], name: str, call):
    start = time.perf_counter()
    out = call()
    stages[name] = round(time.perf_counter() - start, 3)
    return out


def run(rows: int, *, baseline: bool = True, columns_checked: int = 64) -> dict[str, Any]:
    """Time drift monitoring of one ``rows`` x 64 batch.

    Args:
        rows: Batch rows.
        baseline: Also time Evidently's full ``DataDriftPreset`` (slow on large batches).
        columns_checked: Columns the scipy loop runs on (all 64 by default).

    Returns:
        ``rows``, ``columns``, ``evidently_s`` (None without baseline),
        ``scipy_s``, ``decision_s``, ``batch_s``, ``stages``, ``ratio``
        (evidently / decision), ``level`` and ``share`` of the batch.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    from scipy import stats

    from normlab import drift, monitoring, tracking
    from normlab.config import load_config
    from normlab.gate import GateScope

    started = time.perf_counter()
    import evidently  # noqa: F401 - timed once: a fixed cost per process, not per batch
    evidently_import_s = round(time.perf_counter() - started, 3)

    reference_frame = digits_like(REFERENCE_ROWS, seed=1)
    batch_frame = digits_like(rows, seed=2)
    features = [c for c in batch_frame.columns if c != "label"]
    out: dict[str, Any] = {"rows": rows, "columns": len(features), "reference_rows": REFERENCE_ROWS,
                           "cpus": os.cpu_count(), "evidently_import_s": evidently_import_s}

    with tempfile.TemporaryDirectory(prefix="normlab-bench-drift-") as tmp:
        cfg = load_config(None, [f"workdir={tmp}"])
        reference = _reference(cfg, reference_frame, Path(tmp) / "reference")
        landing = Path(tmp) / "landing" / "batch.parquet"
        landing.parent.mkdir()
        batch_frame.to_parquet(landing, index=False)

        if baseline:
            from evidently import Report
            from evidently.presets import DataDriftPreset

            start = time.perf_counter()
            Report([DataDriftPreset()]).run(batch_frame[features], reference_frame[features])
            out["evidently_s"] = round(time.perf_counter() - start, 3)
        else:
            out["evidently_s"] = None

        start = time.perf_counter()
        for name in features[:columns_checked]:
            stats.ks_2samp(reference_frame[name].to_numpy(), batch_frame[name].to_numpy(), method="asymp")
        out["scipy_s"] = round(time.perf_counter() - start, 3)

        start = time.perf_counter()
        drift.score_columns(reference_frame, batch_frame, features, alpha=cfg.monitor.alpha,
                            effect_floor=cfg.monitor.effect_floor)
        out["decision_s"] = round(time.perf_counter() - start, 3)

        # The store and the monitoring experiment exist in any workdir that has monitored before;
        # creating the SQLite tables (seconds) is a one-off, not a per-batch cost.
        from normlab.registry import registry_name
        from normlab.tracking import TrackingStore

        store, public_uri, workdir = TrackingStore(cfg.tracking_uri()), cfg.redacted().tracking_uri(), cfg.workdir_path()
        scope = GateScope.from_config(cfg)
        experiment = monitoring.monitoring_experiment(cfg.monitor, cfg.tracking)
        tracking.ensure_experiment(store, experiment, cfg.artifact_location())
        stages: dict[str, float] = {}
        start = time.perf_counter()
        batch = _timed(stages, "open", lambda: monitoring.open_batch(workdir, registry_name(cfg), str(landing)))
        gated = _timed(stages, "gate", lambda: monitoring.gate_batch(scope, batch, batch.batch_dir, reference))
        analysis = _timed(stages, "analyze", lambda: monitoring.analyze_batch(
            cfg.monitor, cfg.eval, cfg.data, cfg.seed, store, reference, gated, batch))
        report = _timed(stages, "report", lambda: monitoring.build_report(
            cfg.monitor, monitoring.workspace_dir(cfg.monitor, workdir), reference, batch, analysis))
        decision = _timed(stages, "decide", lambda: monitoring.decide_batch(
            cfg.monitor, cfg.alerts, workdir, batch, reference, analysis, gated))
        run_id = _timed(stages, "mlflow", lambda: monitoring.log_monitoring_run(
            cfg.monitor, batch, gated, reference, analysis, report, decision, store=store, experiment=experiment,
            artifact_location=cfg.artifact_location()))
        alert = _timed(stages, "alert", lambda: monitoring.alert_batch(
            cfg.alerts, public_uri, batch, reference, analysis, report, decision, run_id, retrain=False))
        quality_alert = _timed(stages, "quality_alert", lambda: monitoring.quality_alert_batch(
            cfg.alerts, public_uri, batch, reference, gated, decision, run_id))
        _timed(stages, "commit", lambda: monitoring.finish_batch(
            store, workdir, batch, gated, reference, analysis, report, decision, alert, quality_alert, run_id))
        out["batch_s"] = round(time.perf_counter() - start, 3)
        out["stages"] = stages
        out["rows_accepted"] = gated.rows_accepted
        out["level"], out["share"] = decision.level, analysis.drift.share
        out["report_rows"] = cfg.monitor.report_rows
    out["ratio"] = round(out["evidently_s"] / out["decision_s"], 1) if out["evidently_s"] else None
    return out


def main() -> None:
    """Measure every size (or the sizes given), print the table and the scaling, save the numbers."""
    sizes = [int(a) for a in sys.argv[1:]] or list(SIZES)
    results = [run(n) for n in sizes]
    print(f"{'rows':>9} {'evidently':>10} {'scipy':>7} {'decision':>9} {'ratio':>6} {'batch e2e':>10}  stages")
    for r in results:
        ev = f"{r['evidently_s']:.2f}" if r["evidently_s"] is not None else "-"
        print(f"{r['rows']:>9} {ev:>10} {r['scipy_s']:>7.2f} {r['decision_s']:>9.2f} {r['ratio'] or '-':>6} "
              f"{r['batch_s']:>10.2f}  {r['stages']}")
    if len(results) > 1:
        first, last = results[0], results[-1]
        growth = last["rows"] / first["rows"]
        print(f"rows x{growth:g}: decision x{last['decision_s'] / first['decision_s']:.1f}, "
              f"batch end to end x{last['batch_s'] / first['batch_s']:.1f}")
    RESULTS.write_text(json.dumps({"results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
