"""MLflow logging with explicit run ids.

Everything goes through `MlflowClient` with a run id passed in, never through
the fluent API's thread-local active run, so concurrent tasks cannot log into
each other's runs. The one exception is ``mlflow.pytorch.log_model``, which
needs an active run: it is called inside a scoped ``start_run(run_id=...)``
under a scoped tracking URI.
"""

from __future__ import annotations

import fcntl
import json
import platform
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from normlab.credentials import redact_uri, store_uri
from normlab.errors import TrackingError

# MLflow limits a param value to 6000 characters and a batch to 100 params.
_PARAM_MAX = 6000
_BATCH = 100
_PACKAGES = ("normlab", "torch", "numpy", "pandas", "scikit-learn", "mlflow", "prefect", "great_expectations", "evidently")


# Store URIs this process has opened (their schema is in place); guarded by _OPENED_LOCK.
_OPENED: set[str] = set()
_OPENED_LOCK = threading.Lock()
# How often a write that lost a race to another process is tried again.
_CONFLICT_TRIES = 4


def _open_client(uri: str):
    """An `MlflowClient` on ``uri`` (imported lazily: mlflow is slow to import).

    The first call for a SQLite store opens it under `store_lock` (see `_open_store`).
    """
    from mlflow.tracking import MlflowClient

    if uri not in _OPENED:
        _open_store(uri)
    full = store_uri(uri)
    return MlflowClient(tracking_uri=full, registry_uri=full)


class TrackingStore:
    """One MLflow store: its URI and the one client every call given the store uses.

    Stages take a store, not a URI: the wiring opens it once per run (or sweep,
    or monitoring pass) and every helper reuses its client. It pickles as its
    URI, so a task or a Dask worker in another process opens its own client on
    first use. ``repr`` hides credentials in the URI.
    """

    __slots__ = ("_client", "uri")

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._client = None

    @property
    def client(self):
        """The `MlflowClient` on this store, opened on first use (see `_open_client`)."""
        if self._client is None:
            self._client = _open_client(self.uri)
        return self._client

    @property
    def is_server(self) -> bool:
        """Whether the store is a tracking server (HTTP), not a local database or folder."""
        return self.uri.startswith(("http://", "https://"))

    def missing_database(self) -> Path | None:
        """The SQLite file the URI names, when there is none yet (opening it would create an empty store)."""
        path = sqlite_path(self.uri)
        return path if path is not None and not path.is_file() else None

    def __reduce__(self):
        return (TrackingStore, (self.uri,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrackingStore) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __repr__(self) -> str:
        return f"TrackingStore({redact_uri(self.uri)!r})"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None: another store, or an in-memory one)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


@contextmanager
def store_lock(uri: str):
    """Hold an exclusive lock shared by all processes on a SQLite store (``<db>.lock``); no-op for others."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _open_store(uri: str) -> None:
    """Open the tracking and registry stores of ``uri`` once per process, one process at a time.

    MLflow creates the schema of a fresh SQLite file when a store first opens
    it (``MlflowClient()`` opens the tracking store; tables, then migrations,
    then the default experiment) with no guard across processes: two
    processes opening the same new file at once both run the DDL, and one
    fails with ``table ... already exists`` or ``duplicate column name``.
    Under `store_lock` the first process builds the schema and the others
    find it complete. MLflow caches opened stores, so later clients in this
    process reuse them without the lock.
    """
    from mlflow.tracking import MlflowClient

    if sqlite_path(uri) is None:
        _OPENED.add(uri)
        return
    with _OPENED_LOCK:
        if uri in _OPENED:
            return
        with store_lock(uri):
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # the tracking store
            client.search_registered_models(max_results=1)  # the registry store
        _OPENED.add(uri)


def _lost_race(store: TrackingStore, exc: Exception) -> bool:
    """True when the store refused a write, as it does when another process wrote the same row first.

    A server must have answered (`RestException`): one that cannot be reached
    was retried by MLflow already and is not tried again here.
    """
    from mlflow.exceptions import RestException

    if store.is_server and not isinstance(exc, RestException):
        return False
    return getattr(exc, "error_code", "") in ("BAD_REQUEST", "INTERNAL_ERROR", "RESOURCE_ALREADY_EXISTS",
                                              "TEMPORARILY_UNAVAILABLE")


def retry_lost_race(store: TrackingStore, write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call an idempotent store write, again when it lost a race to another process.

    For a get-or-create (or upsert) that MLflow implements as read, then
    insert: a process that inserts second fails on a unique key although the
    row it wanted is there now. Tried again, the write finds that row.
    """
    from mlflow.exceptions import MlflowException

    for attempt in range(1, _CONFLICT_TRIES):
        try:
            return write(*args, **kwargs)
        except MlflowException as exc:
            if not _lost_race(store, exc):
                raise
            time.sleep(0.1 * attempt)
    return write(*args, **kwargs)  # the last try: its error, if any, is the caller's


@contextmanager
def tracking_uri(store: TrackingStore):
    """Scope the fluent API's tracking URI to a block."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(store_uri(store.uri)):
        yield


def ensure_experiment(store: TrackingStore, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created when missing."""
    from mlflow.exceptions import MlflowException

    client = store.client
    try:
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        # The kind makes the MLflow UI open the experiment on its model-training views.
        return client.create_experiment(name, artifact_location=artifact_location,
                                        tags={"mlflow.experimentKind": "custom_model_development"})
    except MlflowException as exc:
        # Two processes creating the same experiment at once: the loser reads it back.
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        raise TrackingError(f"tracking store {redact_uri(store.uri)}: {str(exc).splitlines()[0]}") from None


def start_run(
    store: TrackingStore, experiment: str, *, artifact_location: str | None, run_name: str | None, tags: dict[str, str]
) -> str:
    """Create a run and return its id."""
    client = store.client
    exp_id = ensure_experiment(store, experiment, artifact_location)
    run = client.create_run(exp_id, run_name=run_name, tags=tags)
    return run.info.run_id


def end_run(store: TrackingStore, run_id: str, status: str = "FINISHED") -> None:
    """Close a run as FINISHED, FAILED or KILLED."""
    store.client.set_terminated(run_id, status=status)


def log_params(store: TrackingStore, run_id: str, params: dict[str, Any]) -> None:
    """Log params in batches; long values are truncated with a marker."""
    from mlflow.entities import Param

    items = []
    for key, value in params.items():
        text = "" if value is None else (json.dumps(value) if isinstance(value, (list, dict)) else str(value))
        if len(text) > _PARAM_MAX:
            text = text[: _PARAM_MAX - 3] + "..."
        items.append(Param(key, text))
    client = store.client
    for i in range(0, len(items), _BATCH):
        client.log_batch(run_id, params=items[i : i + _BATCH])


def log_metrics(store: TrackingStore, run_id: str, metrics: dict[str, float], *, step: int = 0) -> None:
    """Log a flat metric dict in batches (NaN and None are skipped, not faked)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [
        Metric(key, float(value), now, step)
        for key, value in metrics.items()
        if value is not None and value == value  # NaN != NaN
    ]
    client = store.client
    for i in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[i : i + 1000])


def log_history(store: TrackingStore, run_id: str, history: Iterable[dict[str, Any]]) -> None:
    """Log per-epoch records as step metrics (``train/loss``, ``val/accuracy``...).

    All epochs go in one write (per 1000 values): a store write costs about as
    much as a small model's epoch, so one write per epoch would double its time.
    """
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [
        Metric(key, float(value), now, int(record["epoch"]))
        for record in history
        for key, value in epoch_metrics(record).items()
        if value is not None and value == value  # NaN != NaN
    ]
    client = store.client
    for i in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[i : i + 1000])


def epoch_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The MLflow keys of one epoch record."""
    return {
        "train/loss": record["train_loss"],
        "train/accuracy": record["train_accuracy"],
        "val/loss": record["val_loss"],
        "val/accuracy": record["val_accuracy"],
        "time/epoch_seconds": record["seconds"],
    }


def epoch_logger(store: TrackingStore, run_id: str) -> Callable[[Any], None]:
    """A callback that logs a finished epoch, or a list of them in one write, so curves grow live in the UI.

    Live logging is best effort: once the store refuses or cannot be reached,
    the callback warns and stops trying, training goes on, and
    `log_missing_history` fills in the epochs when the run is recorded (under
    that task's retries). A blip never costs the training done so far.
    """
    from dataclasses import asdict

    from mlflow.exceptions import MlflowException

    stopped = False

    def _log(record: Any) -> None:
        nonlocal stopped
        if stopped:
            return
        records = record if isinstance(record, list) else [record]
        data = [asdict(r) if not isinstance(r, dict) else r for r in records]
        if not data:
            return
        try:
            log_history(store, run_id, data)
        except MlflowException as exc:
            stopped = True
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            warnings.warn(f"live epoch logging stopped at epoch {data[0]['epoch']} (logged again at the end): {first}",
                          RuntimeWarning, stacklevel=2)

    return _log


def log_missing_history(store: TrackingStore, run_id: str, history: Iterable[dict[str, Any]]) -> None:
    """Log the epochs the run does not have yet (a resumed run may have stopped before logging one)."""
    logged = {m.step for m in store.client.get_metric_history(run_id, "val/accuracy")}
    log_history(store, run_id, [r for r in history if int(r["epoch"]) not in logged])


def set_tags(store: TrackingStore, run_id: str, tags: dict[str, Any]) -> None:
    """Set run tags (values stringified)."""
    from mlflow.entities import RunTag

    store.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_dict(store: TrackingStore, run_id: str, data: Any, artifact_file: str) -> None:
    """Log a dict as a JSON or YAML artifact."""
    store.client.log_dict(run_id, data, artifact_file)


def log_text(store: TrackingStore, run_id: str, text: str, artifact_file: str) -> None:
    store.client.log_text(run_id, text, artifact_file)


def log_artifact(store: TrackingStore, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    store.client.log_artifact(run_id, str(path), artifact_path)


def log_figure(store: TrackingStore, run_id: str, figure: Any, artifact_file: str) -> None:
    store.client.log_figure(run_id, figure, artifact_file)


def log_dataset(
    store: TrackingStore,
    run_id: str,
    frame: Any,
    *,
    name: str,
    source: str,
    fingerprint: str,
    targets: str | None,
    context: str,
) -> None:
    """Log a frame as an MLflow dataset input whose digest is its fingerprint.

    MLflow stores at most 36 characters of digest; the first 32 hex digits of
    the fingerprint go there and the full one is a run tag.
    """
    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    # A file is recorded by its path; a built-in dataset by the loader that makes it.
    origin = CodeDatasetSource({"normlab.source": source}) if source.startswith("builtin:") else source
    with warnings.catch_warnings():
        # MLflow hints that integer columns cannot hold NaN; the schema is a record here, not a contract.
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(frame, source=origin, targets=targets, name=name, digest=fingerprint[:32])
        entity = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])
    # MLflow keeps one dataset row per experiment, name and digest, inserted by the
    # first run that logs it: two runs logging the same new dataset at once both
    # insert it, and one fails on the unique constraint (datasets.experiment_id,
    # name, digest). Logging an input is idempotent: the loser logs again and finds the row.
    retry_lost_race(store, store.client.log_inputs, run_id, datasets=[entity])


def log_torch_model(
    store: TrackingStore,
    run_id: str,
    model: Any,
    *,
    input_example: Any,
    name: str = "model",
    extra_files: list[str] | None = None,
) -> str:
    """Log a PyTorch model with a signature inferred from ``input_example``.

    Returns:
        The model URI (``runs:/<run_id>/<name>``).
    """
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    model.eval()
    import torch

    with torch.no_grad():
        output = model(torch.as_tensor(input_example)).numpy()
    signature = infer_signature(input_example, output)
    with tracking_uri(store), mlflow.start_run(run_id=run_id):
        mlflow.pytorch.log_model(
            model,
            name=name,
            signature=signature,
            input_example=input_example,
            extra_files=extra_files,
            # torch.export's format: loading it never unpickles code.
            serialization_format="pt2",
            pip_requirements=[f"torch=={metadata.version('torch').split('+')[0]}"],
        )
    # Leaving start_run() ends the run as FINISHED; the flow is not done with it yet.
    store.client.update_run(run_id, status="RUNNING")
    return f"runs:/{run_id}/{name}"


def environment_tags() -> dict[str, str]:
    """Git commit, Python, platform and package versions, as run tags."""
    tags = {
        "normlab.python": platform.python_version(),
        "normlab.platform": platform.platform(),
    }
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["normlab.git_commit"] = commit
        tags["normlab.git_dirty"] = str(git_dirty())
    for pkg in _PACKAGES:
        try:
            tags[f"normlab.version.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return tags


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The current git commit, or None outside a repository."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def git_dirty(cwd: str | Path | None = None) -> bool:
    """True when tracked files have uncommitted changes."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(out.stdout.strip())


def scratch_dir() -> tempfile.TemporaryDirectory:
    """A temporary folder for files that are logged then dropped."""
    return tempfile.TemporaryDirectory(prefix="normlab-")
