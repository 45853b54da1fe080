"""The benchmark suite runs on tiny sizes and writes its JSON and Markdown; no timing is asserted."""

from __future__ import annotations

import json
import sys
import types

import pytest

from bench import Timing, target, time_calls
from bench.__main__ import BEGIN, END, main, write_readme
from bench.pipeline import epoch_marks_from_log, seconds_per_epoch
from bench.scaling import loglog_slope


def _read(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_smoke_run_writes_results_and_readme_block(tmp_path):
    out, readme = tmp_path / "results.json", tmp_path / "README.md"
    readme.write_text(f"# Benchmarks\n\nhand-written intro\n\n{BEGIN}\nold numbers\n{END}\n\nhand-written outro\n")

    assert main(["--smoke", "--only", "training,inference", "--out", str(out), "--readme", str(readme)]) == 0

    results = _read(out)
    assert list(results["sections"]) == ["training", "inference"]
    for section in results["sections"].values():
        assert section["status"] == "ok", section.get("traceback")
        assert section["rows"] and section["table"] and section["targets"]
        assert section["machine"]["torch"] and section["machine"]["usable_cores"] >= 1
    training = results["sections"]["training"]["rows"]
    assert {r["case"] for r in training} >= {"mlp", "cnn", "mlp + checkpoints", "resnet", "vit"}
    for row in training:
        assert row["ratio"] == pytest.approx(row["normlab_samples_per_second"] / row["baseline_samples_per_second"])
    inference = results["sections"]["inference"]["rows"]
    assert {(r["norm"], r["variant"]) for r in inference if r["family"] == "mlp"} >= {
        ("none", "eager"), ("batch", "eager"), ("batch", "folded"), ("layer", "eager")}
    folded = [r for r in inference if r["variant"] == "folded"]
    assert folded and all(r["max_abs_diff_to_eager"] < 1e-4 for r in folded)
    assert all(t["section"] in ("training", "inference") and "met" in t for t in results["targets"])

    text = readme.read_text(encoding="utf-8")
    assert "hand-written intro" in text and "hand-written outro" in text and "old numbers" not in text
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "### training" in text and "### inference" in text and "| case |" in text


def test_training_smoke_covers_resnet_and_vit_on_every_device(monkeypatch):
    import torch

    from bench import training

    # Only the image families: the digits cases are covered by the suite's smoke run above.
    monkeypatch.setattr(training, "_cases", lambda cases=training._cases: [
        c for c in cases() if c["family"] in ("resnet", "vit")])
    result = training.run("smoke", threads=1)

    rows = {(r["case"], r["device"]): r for r in result["rows"]}
    cuda = torch.cuda.is_available()
    assert set(rows) == {(c, d) for c in ("resnet", "vit") for d in (("cpu", "cuda") if cuda else ("cpu",))}
    for row in rows.values():
        assert row["in_features"] == 3 * 32 * 32 and row["train_rows"] == 128 and row["val_rows"] == 64
        assert row["baseline_samples_per_second"] > 0 and row["normlab_samples_per_second"] > 0
        assert row["ratio"] == pytest.approx(row["normlab_samples_per_second"] / row["baseline_samples_per_second"])
        if row["device"] == "cpu":
            # Same data, init, optimizer and shuffling: the same arithmetic, so the same accuracy.
            assert row["normlab_val_accuracy"] == pytest.approx(row["baseline_val_accuracy"])
    assert rows[("resnet", "cpu")]["norm"] == "batch" and rows[("vit", "cpu")]["norm"] == "layer"
    names = [t["name"] for t in result["targets"]]
    assert "training loop, resnet: samples/s vs plain loop" in names
    assert "training loop, vit (cuda): samples/s vs plain loop" in names
    if not cuda:
        # Said, not silently left out.
        missing = [t for t in result["targets"] if "(cuda)" in t["name"]]
        assert len(missing) == 2 and all(t["value"] is None and t["met"] is None for t in missing)
        assert all(t["why_not"].startswith("cuda: not available") for t in missing)
        assert [r["ratio"] for r in result["table"] if r["device"] == "cuda"] == ["cuda: not available"] * 2
        assert any(n.startswith("cuda: not available") for n in result["notes"])


def test_shapes_arrays_are_standardized_flat_chw():
    from bench.training import shapes_arrays

    data, source = shapes_arrays(40, 10)
    x, y = data["train"]
    assert x.shape == (40, 3 * 32 * 32) and x.dtype.name == "float32" and y.dtype.name == "int64"
    assert data["val"][0].shape == (10, 3 * 32 * 32)
    per_channel = x.reshape(40, 3, -1)
    assert per_channel.mean(axis=(0, 2)) == pytest.approx([0, 0, 0], abs=1e-4)
    assert per_channel.std(axis=(0, 2)) == pytest.approx([1, 1, 1], abs=1e-3)
    assert source


def test_only_keeps_the_other_sections(tmp_path):
    out, readme = tmp_path / "results.json", tmp_path / "README.md"
    out.write_text(json.dumps({"sections": {"pipeline": {
        "status": "ok", "size": "quick", "seconds": 1.0, "rows": [], "table": [], "notes": [],
        "targets": [target("pipeline: fixed overhead", 3.0, at_most=10.0, unit=" s")],
        "machine": {"date": "d", "cpu": "c", "usable_cores": 2, "torch": "t", "torch_threads": 2, "python": "p",
                    "load_average": [0.0], "git_commit": None, "git_dirty": False}}}}))

    assert main(["--smoke", "--only", "training", "--out", str(out), "--readme", str(readme)]) == 0

    results = _read(out)
    assert list(results["sections"]) == ["training", "pipeline"]
    assert [t["section"] for t in results["targets"]].count("pipeline") == 1
    assert "### pipeline" in readme.read_text(encoding="utf-8")


def test_unknown_section_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--only", "trainig"])
    assert exc.value.code == 2
    assert "unknown section 'trainig'" in capsys.readouterr().err


def test_a_failing_section_is_recorded_and_sets_the_exit_code(tmp_path, monkeypatch):
    broken = types.ModuleType("bench.training")

    def run(size, threads=None):
        raise RuntimeError("disk full\nsecond line")

    broken.run = run
    monkeypatch.setitem(sys.modules, "bench.training", broken)
    out = tmp_path / "results.json"
    assert main(["--smoke", "--only", "training", "--out", str(out), "--readme", str(tmp_path / "R.md")]) == 1
    section = _read(out)["sections"]["training"]
    assert section["status"] == "failed" and section["error"] == "RuntimeError: disk full"


def test_scaling_says_not_available_without_numbers(tmp_path, monkeypatch):
    for name in ("gate", "drift", "sweep"):
        monkeypatch.setitem(sys.modules, f"bench.{name}", None)  # as if the file did not exist
    out = tmp_path / "results.json"
    assert main(["--smoke", "--only", "scaling", "--out", str(out), "--readme", str(tmp_path / "R.md")]) == 0
    section = _read(out)["sections"]["scaling"]
    assert section["status"] == "not available"
    assert [r["status"] for r in section["rows"]] == ["not available", "not available", "skipped"]
    assert all(t["value"] is None and t["met"] is None and "does not exist" in t["why_not"]
               for t in section["targets"])
    assert "not available" in (tmp_path / "R.md").read_text(encoding="utf-8")


def test_scaling_fits_the_cost_each_module_reports(tmp_path, monkeypatch):
    calls = []

    def fake(name, cost_key):
        module = types.ModuleType(f"bench.{name}")

        def run(rows):
            calls.append((name, rows))
            return {cost_key: rows * 1e-6, "rows": rows}

        module.run = run
        monkeypatch.setitem(sys.modules, f"bench.{name}", module)

    fake("gate", "gate_s")
    fake("drift", "batch_s")
    out = tmp_path / "results.json"
    assert main(["--smoke", "--only", "scaling", "--out", str(out), "--readme", str(tmp_path / "R.md")]) == 0
    rows = _read(out)["sections"]["scaling"]["rows"]
    assert calls == [("gate", 1000), ("gate", 4000), ("drift", 1000), ("drift", 4000)]
    for row in rows[:2]:
        assert row["status"] == "ok" and row["slope"] == pytest.approx(1.0)
        assert [p["seconds"] for p in row["points"]] == pytest.approx([1e-3, 4e-3])


def test_loglog_slope():
    assert loglog_slope([10, 100, 1000], [1.0, 10.0, 100.0]) == pytest.approx(1.0)
    assert loglog_slope([10, 100], [2.0, 2.0]) == pytest.approx(0.0)
    assert loglog_slope([10], [1.0]) is None


def test_seconds_per_epoch_are_read_from_the_log():
    log = "\n".join((
        "10:42:14.427 | INFO    | Task run 'train-98b' - epoch 1/10  train loss 0.9 | 0.14s",
        "10:42:14.602 | INFO    | Task run 'train-98b' - epoch 2/10  train loss 0.1 | 0.12s",
        "10:42:14.650 | INFO    | Task run 'evaluate-574' - Finished in state Completed()",
        "10:42:15.002 | INFO    | Task run 'train-98b' - epoch 4/10  train loss 0.0 | 0.12s",
    ))
    marks = epoch_marks_from_log(log)
    assert [e for e, _ in marks] == [1, 2, 4]
    assert [t for _, t in marks] == pytest.approx([38534.427, 38534.602, 38535.002])
    assert seconds_per_epoch(marks) == pytest.approx(0.575 / 3)
    assert seconds_per_epoch(marks[:1]) is None
    assert seconds_per_epoch([(3, 10.0), (1, 12.0)]) is None


def test_time_calls_interleaves_every_candidate():
    counts = {"a": 0, "b": 0}

    def bump(name):
        def call():
            counts[name] += 1
        return call

    timings = time_calls({"a": bump("a"), "b": bump("b")}, rounds=3, min_seconds=0.0, warmup=1)
    assert set(timings) == {"a", "b"}
    assert all(isinstance(t, Timing) and len(t.rounds) == 3 and t.low <= t.median <= t.high
               for t in timings.values())
    assert all(n >= 1 + 1 + 3 for n in counts.values())  # warm-up, calibration, rounds


def test_target_records():
    assert target("x", 0.97, at_least=0.95)["met"] is True
    assert target("x", 12.0, at_most=10.0, unit=" s") == {
        "name": "x", "value": 12.0, "target": "<= 10 s", "unit": " s", "met": False, "why_not": None}
    assert target("x", None, at_most=1.0, why_not="missing")["met"] is None
    with pytest.raises(ValueError):
        target("x", 1.0)


def test_write_readme_appends_a_block_when_there_is_none(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nintro\n")
    write_readme(readme, f"{BEGIN}\nnumbers\n{END}")
    write_readme(readme, f"{BEGIN}\nnewer numbers\n{END}")
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n") and "newer numbers" in text and "\nnumbers" not in text


@pytest.mark.slow
def test_norms_smoke_covers_eager_and_compiled():
    from bench.norms import run

    result = run("smoke")
    modes = {(r["mode"], r["norm"]) for r in result["rows"]}
    assert {("eager", "layer"), ("eager", "rms"), ("eager", "dyt")} <= modes
    compiled = [r for r in result["rows"] if r["mode"] == "compiled"]
    assert compiled or any("torch.compile unavailable" in n for n in result["notes"])
    assert all(r["ratio_to_layer"] == pytest.approx(1.0) for r in result["rows"] if r["norm"] == "layer")


@pytest.mark.slow
def test_pipeline_smoke_against_a_real_prefect_server():
    from bench.pipeline import run

    result = run("smoke")
    (row,) = result["rows"]
    assert row["epochs"] == 3 and row["normlab_seconds"] > 0 and row["plain_seconds"] > 0
    assert row["normlab_epoch_seconds"] is not None and row["plain_epoch_seconds"] is not None
    assert {"train", "evaluate", "flow run (all tasks)"} <= set(row["normlab_stage_seconds"])
    assert [t["met"] is not None for t in result["targets"]] == [True, True]
