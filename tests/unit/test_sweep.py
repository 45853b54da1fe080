"""The sweep library without Prefect: grid, per-point configs, intervals, aggregation, the report."""

from __future__ import annotations

import csv
import math

import pytest

from normlab.config import load_config
from normlab.contracts import Batch, SweepParent
from normlab.errors import ConfigError
from normlab.intervals import mean_interval
from normlab.report import fmt_interval, write_sweep_report
from normlab.sweep import aggregate, collect, expand_grid, parent_metrics, point_config, summarize
from normlab.sweep_contracts import GridPoint, MeanInterval, PointOutcome
from normlab.tracking import TrackingStore


@pytest.fixture
def cfg(tmp_path):
    return load_config(None, [f"workdir={tmp_path}", "sweep.norms=[batch,layer]", "sweep.batch_sizes=[2,64]",
                              "sweep.seeds=[0,1,2]"])


def test_grid_is_the_product_in_a_stable_order(cfg):
    points = expand_grid(cfg.sweep)
    assert len(points) == 2 * 2 * 3
    assert points[0] == GridPoint(norm="batch", batch_size=2, seed=0)
    assert points[-1] == GridPoint(norm="layer", batch_size=64, seed=2)
    assert points[0].model_dump() == {"norm": "batch", "batch_size": 2, "seed": 0}
    assert len({(p.norm, p.batch_size, p.seed) for p in points}) == len(points)
    assert points[0].name == "batch-bs2-s0"


def test_point_config_overrides_norm_batch_seed_and_threads(cfg):
    pcfg = point_config(cfg, GridPoint(norm="layer", batch_size=2, seed=7))
    assert (pcfg.model.norm, pcfg.train.batch_size, pcfg.seed) == ("layer", 2, 7)
    assert pcfg.train.threads == 1
    assert pcfg.train.lr == pytest.approx(cfg.train.lr * 2 / cfg.train.batch_size)
    assert pcfg.tracking.run_name == "digits-layer-bs2-s7"
    # The base config is left alone.
    assert (cfg.model.norm, cfg.train.batch_size, cfg.seed, cfg.train.threads) == ("batch", 64, 0, None)


@pytest.mark.parametrize(("rule", "factor"), [("linear", 8 / 64), ("sqrt", math.sqrt(8 / 64)), ("none", 1.0)])
def test_learning_rate_scaling_rules(tmp_path, rule, factor):
    cfg = load_config(None, [f"workdir={tmp_path}", f"sweep.lr_scaling={rule}", "train.lr=0.1"])
    assert point_config(cfg, GridPoint(norm="batch", batch_size=8, seed=0)).train.lr == pytest.approx(0.1 * factor)


def test_explicit_thread_count_is_kept(tmp_path):
    cfg = load_config(None, [f"workdir={tmp_path}", "train.threads=3"])
    assert point_config(cfg, GridPoint(norm="batch", batch_size=8, seed=0)).train.threads == 3


@pytest.mark.parametrize(("override", "message"), [
    ("sweep.seeds=[1,1]", "repeated: 1"),
    ("sweep.batch_sizes=[0]", "sweep.batch_sizes[0]=0"),
    ("sweep.norms=[batchnorm]", "sweep.norms[0]='batchnorm'"),
    ("sweep.norms=[]", "sweep.norms=[]"),
    ("sweep.workers=0", "sweep.workers=0"),
])
def test_bad_sweep_settings_fail_in_one_line(tmp_path, override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"workdir={tmp_path}", override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_mean_interval_is_the_student_t_interval():
    stat = mean_interval([1.0, 2.0, 3.0])
    # t(0.975, 2) = 4.3027; sd = 1; half width = 4.3027 / sqrt(3)
    assert stat.n == 3 and stat.mean == pytest.approx(2.0)
    assert stat.high - stat.mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert stat.mean - stat.low == pytest.approx(stat.high - stat.mean)


def test_mean_interval_without_enough_values_has_no_interval():
    assert mean_interval([0.5]) == MeanInterval(n=1, mean=0.5)
    assert mean_interval([0.5]).record() == {"n": 1, "mean": 0.5, "low": None, "high": None}
    assert mean_interval([None, float("nan")]).record() == {"n": 0, "mean": None, "low": None, "high": None}


def _result(norm, batch_size, seed, acc, status="finished"):
    finished = status == "finished"
    metrics = {"id/test/accuracy": acc, "ood/mean/accuracy": acc / 2, "time/train_seconds": 1.0 + seed,
               "time/infer/eager/p50_ms": 0.05} if finished else {}
    return PointOutcome(norm=norm, batch_size=batch_size, seed=seed, run_id=f"r{norm}{batch_size}{seed}",
                        status=status, metrics=metrics, error=None if finished else "ValueError: x",
                        curve={"val_accuracy": [acc - 0.1, acc]} if finished else {},
                        run_dir=f"/runs/r{norm}{batch_size}{seed}" if finished else None)


def test_aggregate_averages_finished_points_per_cell():
    results = [_result("batch", 2, 0, 0.7), _result("batch", 2, 1, 0.8), _result("batch", 2, 2, 0.0, "failed"),
               _result("layer", 2, 0, 0.96), _result("layer", 2, 1, 0.98)]
    rows = {(r.norm, r.batch_size): r for r in aggregate(results)}
    batch = rows[("batch", 2)]
    assert (batch.points, batch.finished) == (3, 2)
    assert batch.stats["id/test/accuracy"].n == 2
    assert batch.stats["id/test/accuracy"].mean == pytest.approx(0.75)
    assert rows[("layer", 2)].stats["ood/mean/accuracy"].mean == pytest.approx(0.485)
    # In the summary: the cell, then one {n, mean, low, high} per summary metric.
    record = batch.record()
    assert list(record)[:4] == ["norm", "batch_size", "points", "finished"]
    assert record["id/test/accuracy"] == batch.stats["id/test/accuracy"].record()
    assert record["id/test/ece"] == {"n": 0, "mean": None, "low": None, "high": None}


def test_collect_turns_an_exception_into_a_failed_record():
    error = RuntimeError("the data moved\nsecond line")
    error.run_id = "abc"
    points = [GridPoint(norm="batch", batch_size=2, seed=0), GridPoint(norm="layer", batch_size=2, seed=0)]
    done = _result("layer", 2, 0, 0.9)
    records = collect(points, [error, done])
    assert records[0].status == "failed"
    assert records[0].run_id == "abc"
    assert records[0].error == "RuntimeError: the data moved"
    assert records[0].metrics == {}
    assert records[1] is done
    # As the summary lists them: a failed point has its error, a finished one its run folder, neither its curve.
    assert records[0].record() == {"norm": "batch", "batch_size": 2, "seed": 0, "run_id": "abc", "status": "failed",
                                   "error": "RuntimeError: the data moved", "metrics": {}}
    assert list(records[1].record()) == ["norm", "batch_size", "seed", "run_id", "status", "metrics", "run_dir"]


def test_report_files_tables_and_plots(tmp_path, cfg):
    results = [_result(n, b, s, 0.9 - (0.2 if (n, b) == ("batch", 2) else 0) + 0.01 * s)
               for n in ("batch", "layer") for b in (2, 64) for s in (0, 1, 2)]
    results[0] = _result("batch", 2, 0, 0.0, "failed")
    parent = SweepParent(run_id="p" * 32, run_dir=str(tmp_path), points=[])
    batch = Batch(path=str(tmp_path / "batch.parquet"), source="builtin:x", fingerprint="f" * 64, rows=10, columns=[])
    summary = summarize(cfg.sweep, TrackingStore(cfg.tracking_uri()), parent, batch, results)
    assert summary.status == "partial"
    record = summary.record()
    assert list(record) == ["status", "parent_run_id", "tracking_uri", "data", "grid", "points", "aggregate"]
    assert record["data"] == {"fingerprint": "f" * 64, "rows": 10, "source": "builtin:x"}
    assert record["grid"] == {"norms": ["batch", "layer"], "batch_sizes": [2, 64], "seeds": [0, 1, 2],
                              "lr_scaling": cfg.sweep.lr_scaling}
    assert record["points"] == [r.record() for r in results] and "curve" not in record["points"][1]
    assert record["aggregate"] == [row.record() for row in summary.aggregate]
    metrics = parent_metrics(summary)
    assert (metrics["sweep/points"], metrics["sweep/failed"]) == (12.0, 1.0)
    assert metrics["layer/bs64/id/test/accuracy"] == pytest.approx((0.9 + 0.91 + 0.92) / 3)
    files = write_sweep_report(summary, results, tmp_path)
    for key in ("results_csv", "aggregate_csv", "accuracy_plot", "convergence_plot", "time_plot", "markdown", "html"):
        assert files[key].is_file() and files[key].stat().st_size > 0, key
    markdown = files["markdown"].read_text()
    layer_64 = next(r for r in summary.aggregate if (r.norm, r.batch_size) == ("layer", 64))
    assert fmt_interval(layer_64.stats["id/test/accuracy"]) in markdown
    assert "| norm | batch 2 | batch 64 |" in markdown
    assert "11 of 12 grid points finished" in markdown
    assert "ValueError: x" in markdown
    assert "data:image/png;base64," in files["html"].read_text()
    with files["results_csv"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12
    assert {r["status"] for r in rows} == {"finished", "failed"}
    with files["aggregate_csv"].open() as fh:
        cells = list(csv.DictReader(fh))
    assert len(cells) == 4
    batch_2 = next(c for c in cells if (c["norm"], c["batch_size"]) == ("batch", "2"))
    assert float(batch_2["id/test/accuracy:mean"]) == pytest.approx((0.71 + 0.72) / 2)
