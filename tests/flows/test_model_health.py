"""A model that diverged or saw one class is registered but never becomes champion; extreme values stay finite.

On generated weather data (mixed numeric and text columns), with no
expectation suite, as a careless user would run it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from normlab import governance_record, promotion, registry
from normlab.config import PipelineConfig
from normlab.data.weather import weather_frame
from normlab.flows.training import training_flow
from normlab.tracking import TrackingStore

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]


def config(tmp_path, data, **train) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "name": "weather", "workdir": str(tmp_path / "work"),
        "data": {"path": str(data), "label": "weather", "expectations": None},
        "train": {"epochs": 3, "batch_size": 64, **train},
        "eval": {"bootstrap_samples": 200, "inference": False},
        "promotion": {"bootstrap_samples": 200},
        # The weather label is only partly decided by the readings (about a third of neighbours disagree).
        "gate": {"label_noise": {"max_share": 0.5}},
    })


def champion(cfg: PipelineConfig) -> dict | None:
    return registry.alias_version(TrackingStore(cfg.tracking_uri()), registry.registry_name(cfg), registry.CHAMPION)


def test_a_column_near_the_float64_limit_trains_a_finite_model(tmp_path):
    frame = weather_frame(600, seed=3)
    frame["pressure_hpa"] = frame["pressure_hpa"] / 1100.0 * 1.7e308  # finite, near the float64 limit
    data = tmp_path / "huge.csv"
    frame.to_csv(data, index=False)
    cfg = config(tmp_path, data)
    result = training_flow(cfg)
    metrics = result.metrics
    for key in promotion.HEALTH_METRICS:
        assert math.isfinite(metrics[key]), (key, metrics[key])
    assert result.registry.passed, result.registry.reason
    assert champion(cfg).version == result.registry.version


def test_a_diverged_model_is_registered_but_never_champion(tmp_path):
    data = tmp_path / "weather.csv"
    weather_frame(600, seed=4).to_csv(data, index=False)
    cfg = config(tmp_path, data, lr=1e30, momentum=0.0)  # finite, so allowed; the loss is NaN after one step
    result = training_flow(cfg)
    assert not math.isfinite(result.metrics["train/final_loss"])
    decision = result.registry
    assert not decision.passed
    assert "not finite" in decision.reason and "train/final_loss" in decision.reason
    assert decision.aliases == ["challenger"]
    assert champion(cfg) is None
    version = registry.version_for_run(TrackingStore(cfg.tracking_uri()), registry.registry_name(cfg), result.run_id)
    record = governance_record.read_record(TrackingStore(cfg.tracking_uri()), version).to_json()
    assert "not finite" in record["decisions"][0]["reason"] and record["decisions"][0]["aliases"] == ["challenger"]
    health = [c for c in record["gate"]["checks"] if c["kind"] == "health"]
    assert [c["passed"] for c in health] == [False, True]


def test_a_one_class_label_trains_but_is_never_champion(tmp_path):
    frame = weather_frame(600, seed=5)
    frame["weather"] = "sunny"
    data = tmp_path / "one-class.csv"
    frame.to_csv(data, index=False)
    cfg = config(tmp_path, data)
    result = training_flow(cfg)
    assert result.metrics["train/classes"] == 1.0
    assert np.isclose(result.metrics["id/test/accuracy"], 1.0)  # the trap: a perfect score on one class
    decision = result.registry
    assert not decision.passed
    assert "trained on 1 class(es)" in decision.reason
    assert champion(cfg) is None
