"""Reproduce without Prefect: reading a run back, refusing changed data, comparing metric by metric."""

from __future__ import annotations

import itertools
import re

import pandas as pd
import pytest

from normlab import tracking
from normlab.config import load_config, to_yaml
from normlab.data.fingerprint import fingerprint_frame
from normlab.errors import ConfigError, DataSourceError
from normlab.reproduce import RunNotFoundError, check_run_id, compare, match, prepare


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tracking.TrackingStore:
    folder = tmp_path_factory.mktemp("reproduce-store")
    store = tracking.TrackingStore(f"sqlite:///{folder / 'mlflow.db'}")
    tracking.ensure_experiment(store, "normlab", (folder / "artifacts").as_uri())
    return store


def _run(uri: tracking.TrackingStore, metrics: dict[str, list[tuple[int, float]]] | None = None) -> str:
    run_id = tracking.start_run(uri, "normlab", artifact_location=None, run_name=None, tags={})
    for key, history in (metrics or {}).items():
        for step, value in history:
            tracking.log_metrics(uri, run_id, {key: value}, step=step)
    return run_id


_BATCHES = itertools.count()


def _logged_file_run(uri: tracking.TrackingStore, tmp_path) -> tuple[str, object]:
    """A run trained on a CSV file, recorded the way `record_run` and the data gate record it.

    Each batch has its own content: MLflow keeps one dataset per name and digest in an
    experiment, so equal contents would share the first run's recorded path.
    """
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [float(next(_BATCHES))] * 4, "label": [0, 1, 0, 1]})
    csv = tmp_path / "batch.csv"
    frame.to_csv(csv, index=False)
    fingerprint = fingerprint_frame(pd.read_csv(csv))
    cfg = load_config(None, [f"workdir={tmp_path / 'work'}", f"data.path={csv}", "splits.ood=[]"])
    run_id = _run(uri)
    tracking.set_tags(uri, run_id, {"normlab.data.fingerprint": fingerprint})
    tracking.log_text(uri, run_id, to_yaml(cfg), "config.yaml")
    tracking.log_dataset(uri, run_id, frame, name="t", source=str(csv), fingerprint=fingerprint,
                         targets="label", context="training")
    return run_id, csv


def test_prepare_reads_config_and_data_back(store, tmp_path):
    run_id, csv = _logged_file_run(store, tmp_path)
    plan = prepare(store, run_id)
    assert plan.data_path == str(csv)
    assert plan.config.data.path == str(csv)
    assert plan.config.tracking_uri() == store.uri
    # A reproduction is a check: it never registers a model or moves an alias.
    assert plan.config.promotion.enabled is False


def test_prepare_refuses_changed_data(store, tmp_path):
    run_id, csv = _logged_file_run(store, tmp_path)
    csv.write_text(csv.read_text().replace("3.0", "3.5"))
    with pytest.raises(DataSourceError) as err:
        prepare(store, run_id)
    message = str(err.value)
    assert f"cannot reproduce run {run_id}: the data at {csv} changed since it ran" in message
    assert "fingerprint now" in message and "\n" not in message


def test_prepare_refuses_missing_data(store, tmp_path):
    run_id, csv = _logged_file_run(store, tmp_path)
    csv.unlink()
    with pytest.raises(DataSourceError, match="no longer exists"):
        prepare(store, run_id)


def test_unknown_run_and_run_without_config(store):
    with pytest.raises(RunNotFoundError, match="not found in the tracking store"):
        prepare(store, "0" * 32)
    bare = _run(store)
    with pytest.raises(RunNotFoundError, match=re.escape("no normlab.data.fingerprint tag")):
        prepare(store, bare)
    tracking.set_tags(store, bare, {"normlab.data.fingerprint": "f" * 64})
    with pytest.raises(RunNotFoundError, match=re.escape("no config.yaml artifact")):
        prepare(store, bare)


def test_run_id_must_look_like_one():
    assert check_run_id("a" * 32) == "a" * 32
    with pytest.raises(ConfigError, match="32 hex digits"):
        check_run_id("not-a-run")


def test_compare_metric_by_metric(store):
    base = {"id/test/accuracy": [(0, 0.9)], "val/accuracy": [(1, 0.5), (2, 0.7)], "id/test/nll": [(0, 0.3)],
            "time/train_seconds": [(0, 1.0)], "gate/passed": [(0, 1.0)], "ood/mean/accuracy": [(0, 0.4)]}
    original = _run(store, base)
    same = _run(store, {**base, "time/train_seconds": [(0, 2.0)], "gate/passed": [(0, 0.0)],
                        "id/test/nll": [(0, 0.30000000000000004)], "data/rows": [(0, 10.0)]})
    result = compare(store, original, same)
    assert result.identical is True
    assert result.compared == 4
    assert result.differ == []
    assert result.rounding == ["id/test/nll"]  # one ulp apart
    assert result.unrepeatable == ["gate/passed", "time/train_seconds"]
    assert result.extra == ["data/rows"]

    changed = _run(store, {**base, "val/accuracy": [(1, 0.5), (2, 0.71)]})
    del_key = {k: v for k, v in base.items() if k != "ood/mean/accuracy"}
    missing = _run(store, del_key)
    assert compare(store, original, changed).differ == ["val/accuracy"]
    result = compare(store, original, missing)
    assert result.identical is False
    assert {r.key: r.match for r in result.metrics}["ood/mean/accuracy"] == "missing"


@pytest.mark.parametrize(("a", "b", "expected"), [
    ([(0, 1.0), (1, 2.0)], [(0, 1.0), (1, 2.0)], "identical"),
    ([(0, 1.0)], [(0, 1.0 + 1e-15)], "rounding"),
    ([(0, 1.0)], [(0, 1.0 + 1e-9)], "different"),
    ([(0, 1.0)], [(1, 1.0)], "different"),
    ([(0, 1.0)], [(0, 1.0), (1, 1.0)], "different"),
    ([(0, float("nan"))], [(0, float("nan"))], "identical"),
    ([(0, 1.0)], None, "missing"),
])
def test_match_kinds(a, b, expected):
    assert match(a, b) == expected
