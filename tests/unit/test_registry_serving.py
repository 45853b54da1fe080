"""The serving model and the registry on a real (SQLite) MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import torch

from normlab import governance_record, registry, tracking
from normlab.config import PromotionConfig
from normlab.contracts import ChampionScore, GateRecord
from normlab.data.encoding import FeatureEncoder, LabelEncoder
from normlab.gate.contracts import CheckRecord, GateReport
from normlab.models import build_model
from normlab.serving import LoadedClassifier, log_serving_model


def _frame(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "city": rng.choice(["oslo", "lima", "pune"], n),
        "rooms": rng.integers(1, 6, n),
        "area": rng.normal(70, 20, n),
        "label": rng.choice(["cheap", "dear"], n),
    })


def _run_folder(path, frame: pd.DataFrame, seed: int = 0):
    """The files the training stage leaves in a run folder: encoders, spec, weights."""
    features = ["city", "rooms", "area"]
    encoder = FeatureEncoder.fit(frame, features)
    labels = LabelEncoder.fit(frame["label"])
    spec = {"family": "mlp", "in_features": encoder.n_outputs, "num_classes": 2, "norm": "batch",
            "image_shape": None, "hidden": [8], "channels": [4], "groups": 2, "dropout": 0.0}
    torch.manual_seed(seed)
    model = build_model(**spec).eval()
    path.mkdir(parents=True, exist_ok=True)
    (path / "encoder.json").write_text(json.dumps({"features": encoder.to_dict(), "labels": labels.to_dict(),
                                                   "label_column": "label"}))
    (path / "model.json").write_text(json.dumps(spec))
    torch.save(model.state_dict(), path / "model.pt")
    return features


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # One store for the module (creating its tables costs seconds); each test registers its own model name.
    return tracking.TrackingStore(f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}")


def _new_run(uri, tmp_path) -> str:
    return tracking.start_run(uri, "test", artifact_location=(tmp_path / "artifacts").as_uri(), run_name=None, tags={})


def _logged_version(uri, tmp_path, frame, name="normlab-test", seed=0):
    run_id = _new_run(uri, tmp_path)
    folder = tmp_path / "runs" / run_id
    features = _run_folder(folder, frame, seed=seed)
    logged = log_serving_model(uri, run_id, run_dir=folder, reference=frame, features=features)
    return run_id, folder, features, registry.register_version(uri, name, run_id, logged["model_id"])


def test_pyfunc_round_trip_on_raw_rows_with_categories(store, tmp_path):
    frame = _frame()
    run_id, folder, features, version = _logged_version(store, tmp_path, frame, name="round-trip")
    # Logging the model leaves the run open for the stages after it.
    assert store.client.get_run(run_id).info.status == "RUNNING"
    assert version.version == "1" and not version.reused

    with tracking.tracking_uri(store):
        loaded = mlflow.pyfunc.load_model(version.source)
    raw = frame[features].head(12)
    out = loaded.predict(raw)
    assert list(out.columns) == ["label", "proba_cheap", "proba_dear"]
    assert set(out["label"]) <= {"cheap", "dear"}
    np.testing.assert_allclose(out[["proba_cheap", "proba_dear"]].sum(axis=1), 1.0)
    direct = LoadedClassifier.from_files(folder / "encoder.json", folder / "model.json", folder / "model.pt")
    pd.testing.assert_frame_equal(out.reset_index(drop=True), direct.predict(raw).reset_index(drop=True))
    # An unseen category encodes as "none of the known ones" instead of failing.
    unseen = raw.assign(city="rome")
    assert len(loaded.predict(unseen)) == 12
    # The signature names the raw columns, so serving validates requests against them.
    inputs = {c.name: c.type.name for c in loaded.metadata.get_input_schema().inputs}
    assert inputs == {"city": "string", "rooms": "long", "area": "double"}
    # No pickled Python: the wrapper comes from a code file, the weights from a state_dict.
    local = mlflow.artifacts.download_artifacts(version.source, tracking_uri=store.uri)
    files = {p.name for p in Path(local).rglob("*")}
    assert "python_model.pkl" not in files and {"serving_model.py", "model.pt", "encoder.json"} <= files


def test_registering_the_same_run_twice_reuses_its_version(store, tmp_path):
    frame = _frame()
    run_id, _, _, first = _logged_version(store, tmp_path, frame, name="twice")
    again = registry.register_version(store, "twice", run_id, first.model_id)
    assert again.version == first.version and again.reused


def _record(version, decision, fingerprint="abc"):
    report = GateReport(
        suite="s", fingerprint=fingerprint, source="test", rows_in=40, rows_accepted=40, rows_quarantined=0,
        success=True, blocked=False, failed=[], checks=[CheckRecord(name="nulls", success=True, outcome="passed")])
    return governance_record.governance_record(
        model=version.model_version(),
        data=governance_record.DataRef(fingerprint=fingerprint, source="test", rows=40),
        validation=report,
        metrics={"id/test/accuracy": 0.9, "id/test/accuracy_ci_low": 0.8, "id/test/accuracy_ci_high": 0.95,
                 "ood/mean/accuracy": 0.5, "time/train_seconds": 1.0},
        decision=decision,
        drift_reference=governance_record.DriftReference(
            artifact_uri=f"runs:/{version.run_id}/drift/reference.parquet"),
        flow_run_id="flow-1",
        promotion=PromotionConfig(),
    )


def _decision(passed: bool, champion=None) -> GateRecord:
    if champion is not None:
        champion = ChampionScore(name="normlab-test", run_id="r0", source="models:/m", **champion)
    return GateRecord(passed=passed, reason=("passed: ok" if passed else "refused: id/test/accuracy 0.8 < 0.9"),
                      checks=[], champion=champion, tolerance=0.0, confidence=0.95, bootstrap_samples=10,
                      decided_at="2026-01-01T00:00:00+00:00")


def test_record_first_then_aliases_and_promotion_by_hand(store, tmp_path):
    frame = _frame()
    _, _, _, v1 = _logged_version(store, tmp_path, frame)
    run2, _, _, v2 = _logged_version(store, tmp_path, frame, seed=1)
    client = store.client

    published = governance_record.publish(store, _record(v1, _decision(True)))
    assert published.aliases == ["challenger", "champion"]
    refused = governance_record.publish(store, _record(v2, _decision(False, champion={"version": "1"})))
    assert refused.aliases == ["challenger"]
    model = client.get_registered_model("normlab-test")
    assert model.aliases == {"champion": 1, "challenger": 2}

    raw = json.loads(Path(client.download_artifacts(run2, "governance/model_version_2.json", str(tmp_path))).read_text())
    record = governance_record.read_record(store, v2.model_version()).to_json()
    assert record == raw  # read back, the record is the file it was written as
    assert list(raw) == ["format", "format_version", "model", "data", "validation", "metrics", "gate", "promotion",
                         "drift_reference", "prefect", "decisions"]
    assert raw["validation"]["suite"] == "s" and raw["validation"]["rows_accepted"] == 40
    assert record["data"]["fingerprint"] == "abc"
    assert record["metrics"]["id/test"] == {"accuracy": 0.9, "accuracy_ci_low": 0.8, "accuracy_ci_high": 0.95}
    assert "time/train_seconds" not in json.dumps(record["metrics"])
    assert record["validation"]["checks"] == {"total": 1, "by_outcome": {"passed": 1}, "not_passed": []}
    assert record["decisions"][0]["previous_champion"] == "1"
    tags = client.get_model_version("normlab-test", "2").tags
    assert tags["normlab.gate.passed"] == "False"
    assert tags["normlab.decision.reason"].startswith("refused: id/test/accuracy")
    assert tags["normlab.governance_record"] == f"runs:/{run2}/governance/model_version_2.json"
    assert tags["normlab.prefect.flow_run_id"] == "flow-1"
    assert tags["normlab.metric.id/test/accuracy"] == "0.9000 [0.8000, 0.9500]"

    result = governance_record.promote(store, "normlab-test", run2, reason="needed for the pilot", by="ana")
    assert result.model_dump() == {"name": "normlab-test", "version": "2", "previous_champion": "1",
                      "record": f"runs:/{run2}/governance/model_version_2.json", "already": False}
    assert client.get_registered_model("normlab-test").aliases["champion"] == 2
    manual = governance_record.read_record(store, v2.model_version()).to_json()["decisions"][-1]
    assert manual["kind"] == "manual" and manual["by"] == "ana" and manual["reason"] == "needed for the pilot"
    assert manual["overrides_gate"] is True and manual["previous_champion"] == "1"
    assert client.get_model_version("normlab-test", "2").tags["normlab.decision.by"] == "ana"
    assert governance_record.promote(store, "normlab-test", run2, reason="again", by="ana").already


def test_promotion_by_hand_refuses_what_it_cannot_do(store, tmp_path):
    frame = _frame()
    _logged_version(store, tmp_path, frame, name="refusals")
    with pytest.raises(governance_record.PromotionError, match="no version of registered model"):
        governance_record.promote(store, "refusals", "0" * 32, reason="why", by="ana")
    with pytest.raises(governance_record.PromotionError, match="reason is empty"):
        governance_record.promote(store, "refusals", "0" * 32, reason="  ", by="ana")
    missing = tracking.TrackingStore(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    with pytest.raises(governance_record.PromotionError, match="no tracking store"):
        governance_record.promote(missing, "normlab-test", "0" * 32, reason="why", by="ana")
    assert not (tmp_path / "elsewhere.db").exists()


def test_champion_predictions_map_onto_this_runs_classes(store, tmp_path):
    frame = _frame()
    _, _, features, version = _logged_version(store, tmp_path, frame, name="mapping")
    classifier = registry.load_classifier(store, version.model_version())
    frames = {"id/test": frame[features].head(10)}
    mapped = registry.predict_indices(classifier, frames, ["cheap", "dear"])["id/test"]
    expected = classifier.predict(frames["id/test"])["label"].map({"cheap": 0, "dear": 1}).to_numpy()
    np.testing.assert_array_equal(mapped, expected)
    # A class the current run does not have can never count as right.
    only_dear = registry.predict_indices(classifier, frames, ["dear"])["id/test"]
    assert set(only_dear) <= {-1, 0}
