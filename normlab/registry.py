"""The MLflow model registry: versions, aliases, and loading a version's classifier.

Every run registers its serving model as a new version of ``model.registry_name``
(default ``normlab-<name>``). A version gets the alias ``challenger``, and
``champion`` when the promotion gate passed (`normlab.promotion`) or a person
promoted it by hand; its governance record is written before any alias moves
(`normlab.governance_record`). Registry stages are never used.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from normlab.config import PipelineConfig
from normlab.contracts import ModelVersion, Registration
from normlab.tracking import TrackingStore, retry_lost_race, tracking_uri

CHAMPION = "champion"
CHALLENGER = "challenger"


def registry_name(cfg: PipelineConfig) -> str:
    """The registered model's name: ``model.registry_name`` or ``normlab-<name>``."""
    return cfg.model.registry_name or f"normlab-{cfg.name}"


def _is_missing(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


# Versions ---------------------------------------------------------------------------------


def register_version(store: TrackingStore, name: str, run_id: str, model_id: str) -> Registration:
    """Register a logged model as a new version of ``name`` (the run's existing version if it has one).

    A retried or resumed run therefore never registers twice.

    Args:
        store: The tracking (and registry) store.
        name: Registered model name (created when missing).
        run_id: The run that logged the model.
        model_id: The logged model's id (``mlflow.pyfunc.log_model``'s ``model_id``).

    Returns:
        The `Registration`: the version, and ``reused`` (True when the run
        already had one).
    """
    from mlflow.exceptions import MlflowException

    client = store.client
    try:
        client.create_registered_model(name, description="Registered by normlab; aliases champion and challenger.")
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
    existing = version_for_run(store, name, run_id)
    if existing is not None:
        return Registration(enabled=True, **existing.model_dump(), reused=True)
    # The store resolves a models:/ source through the global tracking URI; the
    # logged model's own artifact location keeps this explicit.
    source = client.get_logged_model(model_id).artifact_location
    mv = client.create_model_version(name, source=source, run_id=run_id, model_id=model_id)
    version = _describe(mv).model_copy(update={"model_id": model_id})
    return Registration(enabled=True, **version.model_dump(), reused=False)


def _describe(mv: Any) -> ModelVersion:
    return ModelVersion(name=mv.name, version=str(mv.version), run_id=mv.run_id,
                        model_id=getattr(mv, "model_id", None), source=mv.source)


def version_for_run(store: TrackingStore, name: str, run_id: str) -> ModelVersion | None:
    """The version of ``name`` registered from ``run_id`` (the latest if several), or None."""
    from mlflow.exceptions import MlflowException

    try:
        found = store.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException as exc:
        if _is_missing(exc):
            return None
        raise
    if not found:
        return None
    return _describe(max(found, key=lambda mv: int(mv.version)))


def alias_version(store: TrackingStore, name: str, alias: str) -> ModelVersion | None:
    """The version that holds ``alias``, or None (no alias yet, or no registered model)."""
    from mlflow.exceptions import MlflowException

    try:
        return _describe(store.client.get_model_version_by_alias(name, alias))
    except MlflowException as exc:
        if _is_missing(exc):
            return None
        raise


def set_alias(store: TrackingStore, name: str, alias: str, version: str | int) -> None:
    """Point ``alias`` of ``name`` at ``version``.

    MLflow sets an alias by reading it, then inserting or updating its row: two
    processes setting a new alias at once both insert, and one fails on the
    row's primary key. That one sets it again (the last one to set it wins, as
    when they take turns).
    """
    retry_lost_race(store, store.client.set_registered_model_alias, name, alias, str(version))


def load_classifier(store: TrackingStore, version: ModelVersion):
    """The version's serving model, loaded through ``mlflow.pyfunc`` (a `LoadedClassifier`)."""
    import mlflow.pyfunc

    with tracking_uri(store):
        model = mlflow.pyfunc.load_model(version.source)
    return model.unwrap_python_model().classifier


def predict_indices(classifier: Any, frames: dict[str, pd.DataFrame], classes: list[str]) -> dict[str, np.ndarray]:
    """Predicted class indices in this run's class order (-1: a class this run does not have)."""
    index = {str(c): i for i, c in enumerate(classes)}
    out: dict[str, np.ndarray] = {}
    for key, frame in frames.items():
        labels = classifier.predict(frame)["label"]
        out[key] = np.array([index.get(str(v), -1) for v in labels], dtype=np.int64)
    return out
