"""Alerts: URL sources, secrecy, message content, delivery to a real local receiver."""

from __future__ import annotations

import json
import logging
import socket

import pytest

from normlab import alerts
from normlab.config import flatten, load_config, to_yaml
from normlab.drift import ColumnScore
from normlab.errors import ConfigError
from normlab.monitoring.contracts import DriftSummary, Performance


@pytest.fixture
def receiver(webhook):
    """The shared local webhook (``tests/conftest.py``): (port, received)."""
    return webhook


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_urls_from_config_and_environment_without_masked_or_repeated_ones():
    cfg = load_config(None, ['alerts.urls=["json://a.example/x", "**********"]'])
    env = {alerts.ENV_VAR: "json://b.example/y, json://a.example/x  mailto://u:p@c.example"}
    assert alerts.alert_urls(cfg.alerts, env) == ["json://a.example/x", "json://b.example/y", "mailto://u:p@c.example"]
    assert alerts.alert_urls(load_config(None, []).alerts, {}) == []


def test_config_dumps_never_hold_the_urls():
    secret = "json://hooks.example/T0/B0/supersecret"
    cfg = load_config(None, [f'alerts.urls=["{secret}"]'])
    assert "supersecret" not in json.dumps(flatten(cfg))
    assert "supersecret" not in to_yaml(cfg)
    assert alerts.alert_urls(cfg.alerts, {}) == [secret]


def test_redact_keeps_only_schemes():
    assert alerts.redact("failed: json://h:1/p?token=s and slack://T/B/C") == "failed: json://*** and slack://***"


def test_check_urls_names_the_scheme_not_the_url():
    alerts.check_urls(["json://127.0.0.1:1/x"])
    with pytest.raises(ConfigError) as err:
        alerts.check_urls(["json://ok.example/x", "nosuchservice://token-abc@host"])
    assert "#2" in str(err.value) and "nosuchservice://" in str(err.value)
    assert "token-abc" not in str(err.value)


def _message(**kw):
    drift = DriftSummary(share=0.75, n_drifted=3, n_columns=4, drifted=True, columns=[
        ColumnScore(column="pixel_9", test="ks", score=0.912, p_value=1e-30, drifted=True),
        ColumnScore(column="colour", test="chi2", score=0.41, p_value=2e-5, drifted=True),
    ])
    options = dict(model="normlab-digits", version="3", reference_run_id="r" * 32, fingerprint="f0e1" * 16,
                   source="/landing/b.parquet", level="detected", drift=drift, prediction=None,
                   performance=Performance(accuracy=0.5, f1_macro=0.5, ece=0.1, reference_accuracy=0.95), rows=400,
                   report_html="/w/report.html", monitor_run_id="m" * 32, tracking_uri="sqlite:///w/mlflow.db",
                   retrain=False, config_hint="configs/digits.yaml ")
    return alerts.drift_message(**(options | kw))


def test_message_says_what_where_which_model_and_what_next():
    title, body = _message()
    assert "drift detected" in title and "normlab-digits v3" in title and "3/4 columns" in title
    assert "`pixel_9`: ks score 0.912" in body and "`colour`: chi2 score 0.410" in body
    assert "f0e1f0e1f0e1" in body  # the batch fingerprint
    assert "/w/report.html" in body and "m" * 32 in body
    assert "Accuracy on this labelled batch: 0.500" in body
    assert "normlab run configs/digits.yaml --data" in body
    _, retraining = _message(retrain=True, version=None)
    assert "Retraining" in retraining and "(run rrrrrrrrrrrr)" in retraining


def test_send_delivers_to_a_local_webhook_and_logs_no_url(receiver, caplog):
    port, received = receiver
    url = f"json://127.0.0.1:{port}/hooks/secret-path-42"
    caplog.set_level(logging.DEBUG)
    result = alerts.send([url], "the title", "the **body**")
    assert result == alerts.Delivery(sent=True, targets=1, delivered=1,
                                     services=[alerts.ServiceResult(service="JSON", ok=True)])
    assert result.model_dump(exclude_unset=True) == {"sent": True, "targets": 1, "delivered": 1,
                                                     "services": [{"service": "JSON", "ok": True}]}
    assert len(received) == 1
    assert received[0]["path"] == "/hooks/secret-path-42"
    assert (received[0]["title"], received[0]["message"]) == ("the title", "the **body**")
    assert "secret-path-42" not in caplog.text and str(port) not in caplog.text


def test_send_reports_an_unreachable_target_without_its_url(caplog):
    caplog.set_level(logging.DEBUG)
    port = _free_port()
    result = alerts.send([f"json://127.0.0.1:{port}/secret-path-43"], "t", "b")
    assert result.sent is False and result.delivered == 0
    assert "1 of 1 target(s)" in result.reason
    assert "secret-path-43" not in result.model_dump_json() + caplog.text


def test_send_without_urls_sends_nothing():
    assert alerts.send([], "t", "b").targets == 0
