"""The study's tests of findings: each verdict follows its interval, on synthetic and on real models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from normlab.config import load_config
from normlab.errors import ConfigError
from normlab.study import (
    ACCURACY_MARGIN,
    FOLD_TOLERANCE,
    bn_adaptation,
    bn_folding,
    bn_small_batch,
    matches_layer,
    study_config,
)
from normlab.sweep_contracts import PointOutcome


def _points(accuracy: dict[tuple[str, int], list[float]]) -> list[PointOutcome]:
    return [PointOutcome(norm=norm, batch_size=batch, seed=seed, status="finished",
                         metrics={"id/test/accuracy": acc})
            for (norm, batch), values in accuracy.items() for seed, acc in enumerate(values)]


FLAT = [0.970, 0.968, 0.972, 0.969, 0.971]


def test_small_batch_finding_holds_when_only_batchnorm_drops():
    points = _points({("batch", 64): FLAT, ("batch", 2): [0.80, 0.78, 0.83, 0.81, 0.79],
                      **{(n, b): FLAT for n in ("group", "layer", "rms") for b in (2, 64)}})
    finding = bn_small_batch(points, 2, 64)
    assert finding.held is True
    batch = finding.measured[0]
    assert batch.n == 5 and batch.low > ACCURACY_MARGIN
    assert all(s.high < ACCURACY_MARGIN for s in finding.measured[1:])
    # As study.json holds it: the finding's fields in order, each statistic with its label first.
    record = finding.record()
    assert list(record) == ["key", "title", "published", "test", "measured", "held", "verdict"]
    assert record["key"] == "bn_small_batch" and record["held"] is True
    assert list(record["measured"][0]) == ["label", "n", "mean", "low", "high"]
    assert record["measured"][0]["label"] == "batch: accuracy drop, batch 64 -> 2"


def test_small_batch_finding_is_not_forced_when_groupnorm_drops_too():
    points = _points({("batch", 64): FLAT, ("batch", 2): [0.80, 0.78, 0.83, 0.81, 0.79],
                      ("group", 64): FLAT, ("group", 2): [0.90, 0.91, 0.89, 0.90, 0.92],
                      **{(n, b): FLAT for n in ("layer", "rms") for b in (2, 64)}})
    finding = bn_small_batch(points, 2, 64)
    assert finding.held is False
    assert "group's drop is not shown to stay below" in finding.verdict


def test_small_batch_finding_not_held_when_batchnorm_does_not_drop():
    points = _points({(n, b): FLAT for n in ("batch", "group", "layer", "rms") for b in (2, 64)})
    finding = bn_small_batch(points, 2, 64)
    assert finding.held is False
    assert "BatchNorm's drop is not shown" in finding.verdict


@pytest.mark.parametrize(("rms", "held", "says"), [
    ([0.971, 0.967, 0.973, 0.968, 0.970], True, "within"),
    ([0.90, 0.91, 0.89, 0.90, 0.91], False, "differ by more than"),
    ([0.99, 0.90, 0.98, 0.91, 0.97], False, "reaches beyond"),
])
def test_equivalence_with_layernorm_follows_the_interval(rms, held, says):
    points = _points({("rms", 64): rms, ("layer", 64): FLAT})
    finding = matches_layer(points, "rms", 64)
    assert finding.held is held
    assert says in finding.verdict


def test_unpaired_seeds_are_not_compared():
    points = _points({("dyt", 64): [0.97]}) + _points({("layer", 64): []})
    finding = matches_layer(points, "dyt", 64)
    assert finding.held is False and finding.verdict == "no paired runs finished."


def test_study_config_grid_and_checks(tmp_path):
    cfg = load_config(None, [f"workdir={tmp_path}"])
    quick = study_config(cfg, quick=True)
    assert quick.sweep.norms == ["batch", "group", "layer", "rms", "dyt"]
    assert quick.sweep.batch_sizes == [2, 64]
    assert quick.sweep.seeds == [0, 1, 2] and quick.train.epochs == 5
    assert study_config(cfg).sweep.seeds == [0, 1, 2, 3, 4]
    assert study_config(cfg).train.epochs == cfg.train.epochs
    assert study_config(cfg, seeds=2, epochs=1).train.epochs == 1
    with pytest.raises(ConfigError, match="at least 2 seeds"):
        study_config(cfg, seeds=1)
    with pytest.raises(ConfigError, match="must be larger"):
        study_config(load_config(None, [f"workdir={tmp_path}", "train.batch_size=2"]))


# Real models: a BatchNorm MLP trained on two Gaussian blobs, saved like a grid point.


def _trained_point(tmp_path, seed: int) -> PointOutcome:
    from normlab.model_spec import ModelSpec

    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(-1, 1, (200, 8)), rng.normal(1, 1, (200, 8))]).astype(np.float32)
    y = np.repeat([0, 1], 200)
    spec = ModelSpec(family="mlp", in_features=8, num_classes=2, norm="batch", image_shape=None,
                     hidden=(16, 16), channels=(4,), groups=4, dropout=0.0)
    torch.manual_seed(seed)
    model = spec.build()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for _ in range(100):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        optimizer.step()
    run_dir = tmp_path / f"run{seed}"
    run_dir.mkdir()
    torch.save(model.state_dict(), run_dir / "model.pt")
    (run_dir / "model.json").write_text(json.dumps(spec.to_json()))
    # The shifted split: features rescaled and moved, as a gain and offset change would.
    np.savez(run_dir / "prepared.npz", **{"id/test/x": x, "id/test/y": y,
                                          "ood/shift/x": (x * 0.2 + 3.0).astype(np.float32), "ood/shift/y": y})
    return PointOutcome(norm="batch", batch_size=64, seed=seed, status="finished", run_dir=str(run_dir))


@pytest.fixture(scope="module")
def trained_points(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study-models")
    # One thread, as the study runs: tiny models gain nothing from more, and lose a lot on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield [_trained_point(tmp, seed) for seed in range(3)]
    finally:
        torch.set_num_threads(threads)


def test_batchnorm_adaptation_recovers_a_shifted_split(trained_points):
    finding = bn_adaptation(trained_points, 64)
    overall = finding.measured[0]
    assert overall.n == 3
    # Shifted by +3 (about 3 standard deviations), the unadapted model predicts one class
    # for nearly all rows; re-estimated statistics undo the shift.
    assert overall.mean > 0.3
    assert finding.held is True
    assert finding.measured[1].label == "ood/shift: accuracy gain"


def test_folding_reproduces_outputs_and_reports_latency_ratios(trained_points):
    finding = bn_folding(trained_points, 64)
    worst, folded, unfolded = finding.measured
    assert worst.n == 3 and worst.mean <= FOLD_TOLERANCE
    assert worst.record() == {"label": "largest |output difference| over seeds", "n": 3, "mean": worst.mean,
                              "low": None, "high": None}
    assert folded.n == unfolded.n == 3 * 5
    assert folded.mean > 0 and unfolded.mean > 0
    # The verdict is the conjunction of its two parts, as measured.
    assert finding.held == (worst.mean <= FOLD_TOLERANCE and folded.high <= 1.10)


def test_batchnorm_findings_without_batchnorm_runs_are_not_held():
    assert bn_adaptation([], 64).held is False
    assert bn_folding([], 64).held is False
