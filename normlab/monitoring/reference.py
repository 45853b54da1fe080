"""The drift reference: the champion's (else the latest run's) training rows, model and encoders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from normlab import tracking
from normlab.config import DataConfig
from normlab.credentials import redact_uri
from normlab.data.encoding import FeatureEncoder, LabelEncoder
from normlab.errors import NormlabError, TrackingError
from normlab.model_spec import ModelSpec
from normlab.monitoring.contracts import Reference
from normlab.monitoring.ledger import monitor_dir
from normlab.registry import CHAMPION
from normlab.tracking import TrackingStore


class NoReferenceError(NormlabError):
    """No training run with a drift reference exists yet."""

# 4. The drift reference ----------------------------------------------------------------


def resolve_reference(store: TrackingStore, *, experiment: str, model: str, workdir: Path) -> Reference:
    """The drift reference: the training data of the ``champion`` model, else of the latest run.

    Args:
        store: The tracking store; a missing SQLite store is refused before its client is
            opened (opening it would create an empty one).
        experiment: The training runs' experiment (``tracking.experiment``), searched without a champion.
        model: The registered model's name (`normlab.registry.registry_name`).
        workdir: The work folder (`PipelineConfig.workdir_path`): run folders and downloaded references.

    Returns:
        The `Reference`: ``version`` is None without a registry; the model is
        ``model_spec``/``model_weights`` (the run folder) or ``model_uri`` (MLflow).

    Raises:
        NoReferenceError: No champion and no finished run with a reference.
        TrackingError: The store cannot be reached.
    """
    from mlflow.exceptions import MlflowException

    uri = redact_uri(store.uri)
    if store.missing_database() is not None:
        # Opening a missing SQLite store would create an empty one; there is nothing to monitor against.
        raise NoReferenceError(f"no drift reference: no tracking store at {uri}; train a model first with "
                               "`normlab run` (same workdir or tracking.uri)")
    client = store.client
    run_id, version, selected_by = None, None, "latest run"
    try:
        mv = client.get_model_version_by_alias(model, CHAMPION)
        run_id, version, selected_by = mv.run_id, str(mv.version), "champion"
    except MlflowException as exc:
        # No registered model, or no champion alias yet: fall back to the latest run.
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise TrackingError(f"tracking store {uri}: {str(exc).splitlines()[0]}") from None
    if run_id is None:
        run_id = _latest_run_with_reference(client, uri, experiment, model)
    run = client.get_run(run_id)
    paths = _reference_files(store, workdir, run_id)
    return Reference(run_id=run_id, model=model, version=version, selected_by=selected_by,
                     reference_accuracy=run.data.metrics.get("id/test/accuracy"), **paths)


def _latest_run_with_reference(client: Any, uri: str, experiment: str, model: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        runs = client.search_runs(
            [exp.experiment_id], "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"],
            max_results=50,
        )
        for run in runs:
            if any(a.path == "drift/reference.parquet" for a in client.list_artifacts(run.info.run_id, "drift")):
                return run.info.run_id
    raise NoReferenceError(
        f"no drift reference: no champion of '{model}' and no finished run with drift/reference.parquet "
        f"in experiment '{experiment}' at {uri}; train one first with `normlab run`"
    )


def _reference_files(store: TrackingStore, workdir: Path, run_id: str) -> dict[str, str]:
    """Reference, encoder and model files: from the run folder, else downloaded from MLflow."""
    run_dir = workdir / "runs" / run_id
    local = {k: run_dir / f for k, f in (("reference", "reference.parquet"), ("encoder", "encoder.json"),
                                         ("model_spec", "model.json"), ("model_weights", "model.pt"))}
    if all(p.is_file() for p in local.values()):
        return {k: str(p) for k, p in local.items()}
    import mlflow.artifacts

    from normlab.credentials import store_uri

    dest = monitor_dir(workdir) / "references" / run_id
    dest.mkdir(parents=True, exist_ok=True)
    uri = store_uri(store.uri)  # the full URI of a database store with a password
    fetched = {}
    for key, artifact in (("reference", "drift/reference.parquet"), ("encoder", "model_inputs/encoder.json")):
        target = dest / artifact
        if not target.is_file():
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=str(dest),
                                                tracking_uri=uri)
        fetched[key] = str(target)
    return {**fetched, "model_uri": f"runs:/{run_id}/model"}


def load_reference_model(store: TrackingStore, data: DataConfig, reference: Reference):
    """The reference run's model (eval mode), its feature and label encoders, and its label column.

    ``store`` is the tracking store a model logged to MLflow only is loaded from; the label column
    is the reference's own, else ``data.label``.
    """
    encoders = json.loads(Path(reference.encoder).read_text(encoding="utf-8"))
    features, labels = FeatureEncoder.from_dict(encoders["features"]), LabelEncoder.from_dict(encoders["labels"])
    if reference.model_spec:
        from normlab.pipeline import load_weights

        model = load_weights(ModelSpec.read(reference.model_spec), reference.model_weights)
    else:
        import mlflow.pytorch

        with tracking.tracking_uri(store):
            model = mlflow.pytorch.load_model(reference.model_uri, map_location="cpu").eval()
    return model, features, labels, encoders.get("label_column", data.label)


def reference_classes(reference: Reference) -> list[str]:
    """The classes the reference's model predicts (its label encoder), as strings."""
    encoders = json.loads(Path(reference.encoder).read_text(encoding="utf-8"))
    return [str(c) for c in LabelEncoder.from_dict(encoders["labels"]).classes]


def reference_image_mode(reference: Reference) -> str | None:
    """``L`` or ``RGB`` when the reference's model was trained on image files (the mode they were decoded in), else None."""
    encoders = json.loads(Path(reference.encoder).read_text(encoding="utf-8"))
    return encoders.get("image_mode")
