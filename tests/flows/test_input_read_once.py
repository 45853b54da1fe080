"""A run parses its input file once: the read that finds an interrupted run is the read that trains."""

from __future__ import annotations

import pytest

from normlab import pipeline
from normlab.config import PipelineConfig
from normlab.data.weather import weather_frame
from normlab.flows.training import training_flow

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]


def test_the_input_file_is_parsed_once_per_run(tmp_path, monkeypatch):
    data = tmp_path / "weather.csv"
    weather_frame(400, seed=8).to_csv(data, index=False)
    reads: list[str] = []
    real = pipeline.read_table

    def counting(path):
        reads.append(str(path))
        return real(path)

    monkeypatch.setattr(pipeline, "read_table", counting)
    cfg = PipelineConfig.model_validate({
        "name": "weather", "workdir": str(tmp_path / "work"),
        "data": {"path": str(data), "label": "weather", "expectations": None},
        "train": {"epochs": 1}, "eval": {"bootstrap_samples": 0, "inference": False},
        "gate": {"label_noise": {"max_share": 0.5}}, "promotion": {"enabled": False},
    })
    result = training_flow(cfg)
    assert reads == [str(data)]
    assert result.data.rows == 400
    # The snapshot every later stage read is the file's content, fingerprinted once.
    snapshot = tmp_path / "work" / "runs" / result.run_id / "batch.parquet"
    assert snapshot.is_file()


def test_a_missing_label_column_opens_no_run(tmp_path):
    from mlflow.tracking import MlflowClient

    data = tmp_path / "no-label.csv"
    weather_frame(50, seed=9).drop(columns=["weather"]).to_csv(data, index=False)
    cfg = PipelineConfig.model_validate({
        "name": "weather", "workdir": str(tmp_path / "work"),
        "data": {"path": str(data), "label": "weather", "expectations": None},
    })
    with pytest.raises(Exception, match="label column 'weather' not found"):
        training_flow(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking_uri())
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    assert runs == []
