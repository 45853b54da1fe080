"""The evaluation stage on a tabular batch: time and column splits, slices, classes, the gate's inputs."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from normlab import pipeline, splitting
from normlab.config import validate_config
from normlab.errors import ConfigError
from normlab.stages import train_stage


def _batch(n: int = 500) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    city = rng.choice(["oslo", "lima", "pune"], size=n)
    x1 = rng.normal(size=n)
    day = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 120, n), unit="D")
    label = np.where(x1 + 0.3 * (city == "oslo") > 0, "yes", "no")
    return pd.DataFrame({"city": city, "x1": x1, "x2": rng.normal(size=n), "day": day.strftime("%Y-%m-%d"),
                         "target": label})


def _cfg(tmp_path, csv, **extra):
    return validate_config({
        "name": "tab",
        "workdir": str(tmp_path / "work"),
        "data": {"path": str(csv), "label": "target", "expectations": None},
        "splits": {"ood": [
            {"name": "late", "kind": "time", "column": "day", "after": "2024-04-01"},
            {"name": "pune", "kind": "column", "column": "city", "values": ["pune"]},
        ]},
        "model": {"norm": "batch", "hidden": [16]},
        "train": {"epochs": 2},
        "eval": {"slices": ["city"], "bootstrap_samples": 200, "latency_iterations": 10, "throughput_batch": 32},
        **extra,
    })


@pytest.fixture
def prepared_run(tmp_path):
    csv = tmp_path / "batch.csv"
    _batch().to_csv(csv, index=False)
    cfg = _cfg(tmp_path, csv)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    batch = pipeline.load_batch(cfg.data, run_dir)
    return cfg, run_dir, splitting.prepare_splits(cfg.data, cfg.splits, cfg.eval, cfg.seed, batch, run_dir)


def test_tabular_evaluation_has_domains_slices_classes_and_intervals(prepared_run):
    cfg, run_dir, prepared = prepared_run
    assert prepared.populations == {}  # no corrupted copies: each split is its own rows
    frames = splitting.load_eval_frames(prepared)
    assert set(frames) == {"id/test", "ood/late", "ood/pune"}
    assert (pd.to_datetime(frames["ood/late"]["day"]) > "2024-04-01").all()
    assert set(frames["ood/pune"]["city"]) == {"pune"}

    trained = train_stage(cfg, prepared, run_dir)
    evaluation = pipeline.evaluate(cfg.eval, prepared, trained, run_dir, seed=cfg.seed)
    metrics = evaluation.metrics
    for key in ("ood/late/accuracy", "ood/late/accuracy_ci_low", "ood/pune/adapted/accuracy_gain",
                "ood/mean/accuracy_ci_high", "id/test/class/yes/recall", "id/test/class/no/support",
                "infer/folded/max_abs_diff", "time/infer/int8/p50_ms"):
        assert key in metrics, key
    # Pune rows are held out of every ID split, so the ID test slices are the other two cities.
    slices = {k.split("/")[4] for k in metrics if k.startswith("id/test/slice/city/")}
    assert slices == {"oslo", "lima"}
    rows = sum(metrics[f"id/test/slice/city/{c}/rows"] for c in slices)
    assert rows == metrics["id/test/rows"]
    assert evaluation.predictions == str(run_dir / "predictions.npz")
    assert evaluation.inference == str(run_dir / "inference.json")  # eval.inference profiled the variants
    with np.load(evaluation.predictions) as npz:
        assert set(npz.files) == {"id/test", "ood/late", "ood/pune"}
        assert len(npz["ood/late"]) == metrics["ood/late/rows"]


def test_a_slice_column_missing_from_the_data_stops_before_training(tmp_path):
    csv = tmp_path / "batch.csv"
    _batch().to_csv(csv, index=False)
    cfg = _cfg(tmp_path, csv)
    cfg.eval.slices = ["town"]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    batch = pipeline.load_batch(cfg.data, run_dir)
    with pytest.raises(ConfigError, match=re.escape("eval.slices: columns not in the data: town")):
        splitting.prepare_splits(cfg.data, cfg.splits, cfg.eval, cfg.seed, batch, run_dir)
