"""The pipeline stages on files: CSV with a categorical column, OOD domains, encoders."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from normlab import pipeline, splitting
from normlab.config import validate_config
from normlab.errors import ConfigError, DataSourceError
from normlab.stages import train_stage


def _tabular(n=600, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    city = rng.choice(["oslo", "lima", "pune", "kyiv"], size=n)
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n) + (city == "lima")
    label = np.where(x1 + 0.5 * x2 > 0, "yes", "no")
    return pd.DataFrame({"city": city, "x1": x1, "x2": x2, "target": label})


def _cfg(tmp_path, csv, **extra):
    raw = {
        "name": "tab",
        "workdir": str(tmp_path / "work"),
        "data": {"path": str(csv), "label": "target", "expectations": None},
        "splits": {"ood": [
            {"name": "lima", "kind": "column", "column": "city", "values": ["lima"]},
            {"name": "high_x1", "kind": "quantile", "column": "x1", "q": 0.9},
        ]},
        "model": {"norm": "layer", "hidden": [16]},
        "train": {"epochs": 2},
        **extra,
    }
    return validate_config(raw)


def test_csv_with_categorical_and_column_split(tmp_path):
    frame = _tabular()
    csv = tmp_path / "t.csv"
    frame.to_csv(csv, index=False)
    cfg = _cfg(tmp_path, csv)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    batch = pipeline.load_batch(cfg.data, run_dir)
    assert batch.rows == len(frame)
    prepared = splitting.prepare_splits(cfg.data, cfg.splits, cfg.eval, cfg.seed, batch, run_dir)
    splits = splitting.load_prepared(prepared)

    # Held-out domains never reach training.
    ref = pd.read_parquet(prepared.reference)
    assert "lima" not in set(ref["city"])
    assert ref["x1"].max() <= prepared.ood_thresholds["high_x1"]
    assert prepared.counts["ood/lima"] == int((frame["city"] == "lima").sum())
    # The categorical column is one-hot encoded with the categories seen in training.
    enc = json.loads(open(prepared.encoder).read())
    assert prepared.n_features == 2 + 3  # x1, x2, and oslo/pune/kyiv
    assert "no" in json.dumps(enc["labels"]) and "yes" in json.dumps(enc["labels"])
    assert splits["id/train"][0].dtype == np.float32
    assert sum(prepared.counts[k] for k in ("id/train", "id/val", "id/test")) == len(
        frame[(frame["city"] != "lima") & (frame["x1"] <= prepared.ood_thresholds["high_x1"])]
    )

    trained = train_stage(cfg, prepared, run_dir)
    metrics = pipeline.evaluate(cfg.eval, prepared, trained, run_dir, seed=cfg.seed).metrics
    assert {"id/test/accuracy", "ood/lima/accuracy", "ood/high_x1/accuracy", "ood/mean/accuracy"} <= set(metrics)


def test_appending_rows_keeps_old_rows_in_their_split(tmp_path):
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    run_a.mkdir(), run_b.mkdir()
    frame = _tabular(300)
    frame.to_csv(tmp_path / "one.csv", index=False)
    pd.concat([frame, _tabular(100, seed=1)]).to_csv(tmp_path / "two.csv", index=False)
    # Only a column domain: a quantile threshold moves with the batch by design.
    cfg = _cfg(tmp_path, tmp_path / "one.csv")
    cfg.splits.ood = cfg.splits.ood[:1]
    a = splitting.prepare_splits(cfg.data, cfg.splits, cfg.eval, cfg.seed, pipeline.load_batch(cfg.data, run_a),
                                 run_a)
    b = splitting.prepare_splits(cfg.data, cfg.splits, cfg.eval, cfg.seed,
                                 pipeline.load_batch(cfg.data, run_b, str(tmp_path / "two.csv")), run_b)
    ref_a = pd.read_parquet(a.reference)
    ref_b = pd.read_parquet(b.reference)
    merged = ref_a.merge(ref_b, how="left", indicator=True)
    assert (merged["_merge"] == "both").all()


def test_missing_label_column_is_one_line(tmp_path):
    csv = tmp_path / "t.csv"
    _tabular().drop(columns="target").to_csv(csv, index=False)
    cfg = _cfg(tmp_path, csv)
    with pytest.raises(DataSourceError, match="label column 'target' not found"):
        pipeline.load_batch(cfg.data, tmp_path)


def test_ood_split_selecting_nothing_is_refused(tmp_path):
    csv = tmp_path / "t.csv"
    _tabular().to_csv(csv, index=False)
    cfg = _cfg(tmp_path, csv)
    cfg.splits.ood[0].values = ["atlantis"]
    batch = pipeline.load_batch(cfg.data, tmp_path)
    with pytest.raises(ConfigError, match="'lima': selects no rows"):
        splitting.prepare_splits(cfg.data, cfg.splits, cfg.eval, cfg.seed, batch, tmp_path)
