"""Which checks act where: the gate's training and monitoring contexts, and the one retry rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from normlab.config import PipelineConfig
from normlab.data.weather import weather_frame
from normlab.errors import ConfigError, DataSourceError, DataValidationError, TrackingError, is_transient
from normlab.gate import MONITOR_DEFAULTS, GateScope, Suite, assess, severity_of


def weather_config(**gate) -> PipelineConfig:
    return PipelineConfig.model_validate({"name": "weather", "data": {"path": "x.csv", "label": "weather"},
                                          "gate": gate})


def test_every_built_in_check_has_a_monitoring_default():
    cfg = PipelineConfig()
    for name in MONITOR_DEFAULTS:
        assert severity_of(cfg.gate, name, "train") == getattr(cfg.gate, name).severity
    # What protects a training set only is reported in monitoring, never blocking.
    for name in ("contamination", "label_noise", "class_balance", "duplicates", "row_count"):
        assert severity_of(cfg.gate, name, "monitor") == "warn"
    for name in ("columns", "rejected_share"):
        assert severity_of(cfg.gate, name, "monitor") == "block"
    assert set(MONITOR_DEFAULTS) == {n for n, f in type(cfg.gate).model_fields.items()
                                     if "monitor_severity" in getattr(f.annotation, "model_fields", {})}


def test_a_context_severity_can_be_set_and_is_never_stricter_than_training_by_default():
    cfg = weather_config(label_noise={"monitor_severity": "block"}, duplicates={"severity": "off"},
                         rejected_share={"severity": "warn"})
    assert severity_of(cfg.gate, "label_noise", "monitor") == "block"
    assert severity_of(cfg.gate, "duplicates", "monitor") == "off"  # off for training: off here too
    assert severity_of(cfg.gate, "rejected_share", "monitor") == "warn"
    with pytest.raises(ValueError, match="context"):
        severity_of(cfg.gate, "columns", "serve")


def test_yaml_off_is_a_monitoring_severity_too():
    cfg = weather_config(contamination={"monitor_severity": False})
    assert cfg.gate.contamination.monitor_severity == "off"


def test_monitoring_keeps_out_of_range_rows_for_the_drift_and_leaves_out_unparseable_ones():
    frame = weather_frame(300, seed=1).astype({"temp_c": object})
    frame.loc[[3, 7], "temp_c"] = "n/a?"  # text in a numeric column: cannot be typed
    frame.loc[[10, 11, 12], "temp_c"] = 80.0  # out of range: a value reason
    suite = Suite.model_validate({"name": "weather", "expectations": [
        {"type": "expect_column_values_to_be_of_type", "kwargs": {"column": "temp_c", "type_": "float"}},
        {"type": "expect_column_values_to_be_between",
         "kwargs": {"column": "temp_c", "min_value": -30, "max_value": 45}, "meta": {"severity": "quarantine"}},
    ]})
    cfg = weather_config()
    trained = assess(frame, GateScope.from_config(cfg), suite, context="train")
    watched = assess(frame, GateScope.from_config(cfg), suite, context="monitor")
    for a in (trained, watched):
        assert not np.isin([3, 7, 10, 11, 12], a.accepted).any()
    # Typed rows: everything but the two unparseable ones, out-of-range rows included, converted to numbers.
    assert watched.typed.tolist() == [i for i in range(300) if i not in (3, 7)]
    typed = watched.typed_frame.iloc[watched.typed]
    assert pd.api.types.is_float_dtype(typed["temp_c"]) and (typed["temp_c"] == 80.0).sum() == 3


def test_label_noise_blocks_a_training_set_but_only_warns_on_production_rows():
    frame = weather_frame(400, seed=2)
    cfg = weather_config(label_noise={"max_share": 0.05})
    train = {c.name: c.outcome for c in assess(frame, GateScope.from_config(cfg), None, context="train").checks}
    watch = {c.name: c.outcome for c in assess(frame, GateScope.from_config(cfg), None, context="monitor",
                                               reference=weather_frame(800, seed=3)).checks}
    assert train["label_noise"] == "blocked"
    assert watch["label_noise"] == "warned"


@pytest.mark.parametrize(("error", "transient"), [
    (TrackingError("store unreachable"), True),
    (ConnectionError("reset by peer"), True),
    (TimeoutError(), True),
    (MlflowException("API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/create failed with exception "
                     "HTTPConnectionPool: Max retries exceeded"), True),
    (DataSourceError("data file 'x.csv' does not exist"), False),
    (ConfigError("train.lr: must be finite"), False),
    (DataValidationError("batch blocked"), False),
    (FileNotFoundError("x.csv"), False),
    (KeyError("eval_frames"), False),
    (RuntimeError("a bug"), False),
])
def test_only_transient_errors_are_retried(error, transient):
    assert is_transient(error) is transient


def test_an_error_caused_by_a_network_error_is_transient():
    import requests

    try:
        try:
            raise requests.exceptions.ConnectionError("no route to host")
        except requests.exceptions.ConnectionError as inner:
            raise RuntimeError("log_metrics failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer)


def test_the_retry_policy_is_defined_once():
    from tests.conftest import REPO

    sources = [p for p in [*(REPO / "tasks").glob("*.py"), *(REPO / "flows").glob("*.py")] if p.name != "policy.py"]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        assert '"retries"' not in text and "retries=" not in text, path
        assert "retry_delay_seconds" not in text and "retry_condition_fn" not in text, path
    from normlab.tasks.policy import TRANSIENT, retry_if_transient

    assert TRANSIENT["retry_condition_fn"] is retry_if_transient
