"""The serving model: raw table rows in, class labels and probabilities out.

`NormlabClassifier` is an MLflow pyfunc that bundles what turns a row of the
training table into a prediction: the feature and label encoders (JSON), the
arguments that rebuild the network (JSON) and its weights (a ``state_dict``
read with ``weights_only=True``). ``mlflow.pyfunc.load_model(uri).predict(frame)``
takes a DataFrame with the raw training columns, categorical text included,
and returns one row per input row: ``label`` (the predicted class, as in the
training data) and ``proba_<class>`` for every class. The same model answers
``mlflow models serve``.

An image model (an image family reading pixel columns) also takes images:
a DataFrame with an ``image`` column of file paths, or an array of shape
(n, H, W) or (n, H, W, C). Files and arrays of another size are read as in
training (`normlab.images.decode`: upright, converted, resized to the model's
(H, W)); an array already at the model's size and channels is used as it is.
Such a model is logged without a column signature, which would refuse them.

The pickled wrapper holds no state and no code: cloudpickle records the class
by reference (``normlab.serving.NormlabClassifier``), and the normlab sources
travel with the model as MLflow ``code_paths`` so it loads where normlab is not
installed.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch

from normlab.data.encoding import FeatureEncoder, LabelEncoder
from normlab.errors import DataSourceError
from normlab.images.decode import pixel_columns, pixel_rows
from normlab.model_spec import ModelSpec

if TYPE_CHECKING:  # the served model imports this module: it needs no tracking code
    from normlab.tracking import TrackingStore

# Artifact keys inside the logged model, and the files they come from in a run folder.
ARTIFACT_FILES: dict[str, str] = {"encoder": "encoder.json", "spec": "model.json", "weights": "model.pt"}
LABEL_COLUMN = "label"
PROBA_PREFIX = "proba_"
# The model's entry point, run by MLflow when it loads the model.
_ENTRY_POINT = """\
from mlflow.models import set_model

from normlab.serving import NormlabClassifier

set_model(NormlabClassifier())
"""
# Rows scored per forward pass: bounds memory on large requests.
_CHUNK = 4096
# What the bundled normlab sources import, pinned to this environment's versions.
_REQUIREMENTS = ("torch", "numpy", "pandas", "scipy", "pillow")
# The column of image file paths an image model takes.
IMAGE_INPUT = "image"


class LoadedClassifier:
    """A network with its encoders, scoring raw rows.

    Args:
        encoder: The run's ``encoder.json`` content (features, labels).
        spec: What rebuilds the network (the run's ``model.json``).
        state_dict: The trained weights.
    """

    def __init__(self, encoder: dict[str, Any], spec: ModelSpec, state_dict: dict[str, torch.Tensor]) -> None:
        self.features = FeatureEncoder.from_dict(encoder["features"])
        self.labels = LabelEncoder.from_dict(encoder["labels"])
        self.spec = spec
        self.model = spec.build()
        self.model.load_state_dict(state_dict)
        self.model.eval()

    @property
    def reads_images(self) -> bool:
        """Whether the model reads pixel rows of images (so it takes image files and arrays too)."""
        shape = self.spec.image_shape
        return (self.spec.family != "mlp" and shape is not None
                and list(self.features.features) == pixel_columns(self.spec.in_channels, tuple(shape)))

    def image_rows(self, images: np.ndarray | pd.Series | list) -> pd.DataFrame:
        """Pixel rows, as the model was trained on, of image files (paths) or arrays (n, H, W[, C]).

        Raises:
            DataSourceError: The model does not read images, or an input is not an image it can read.
        """
        if not self.reads_images:
            raise DataSourceError("this model reads table rows, not images; send its feature columns")
        shape = tuple(self.spec.image_shape)
        rows = pixel_rows(images, shape, "L" if self.spec.in_channels == 1 else "RGB")
        return pd.DataFrame(rows, columns=pixel_columns(self.spec.in_channels, shape))

    @classmethod
    def from_files(cls, encoder: str | Path, spec: str | Path, weights: str | Path) -> LoadedClassifier:
        """Load from the three files (weights read as data only, never as code)."""
        return cls(
            json.loads(Path(encoder).read_text(encoding="utf-8")),
            ModelSpec.read(spec),
            torch.load(weights, map_location="cpu", weights_only=True),
        )

    @torch.inference_mode()
    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Class probabilities (float64), one row per input row."""
        x = torch.as_tensor(self.features.transform(frame))
        chunks = [torch.softmax(self.model(x[i : i + _CHUNK]).double(), dim=1) for i in range(0, len(x), _CHUNK)]
        if not chunks:
            return np.zeros((0, self.labels.n_classes))
        return torch.cat(chunks).numpy()

    def predict(self, frame: pd.DataFrame | np.ndarray) -> pd.DataFrame:
        """``label`` and ``proba_<class>`` columns for every row of ``frame`` (an image model: or every image)."""
        if isinstance(frame, np.ndarray):
            frame = self.image_rows(frame)
        elif IMAGE_INPUT in frame.columns and self.reads_images and self.features.features[0] not in frame.columns:
            index = frame.index
            frame = self.image_rows(frame[IMAGE_INPUT]).set_axis(index)
        missing = [c for c in self.features.features if c not in frame.columns]
        if missing:
            raise DataSourceError(
                f"input lacks the model's feature columns {missing[:10]}; send every training column"
            )
        proba = self.predict_proba(frame)
        out = pd.DataFrame({LABEL_COLUMN: self.labels.inverse_transform(proba.argmax(axis=1))}, index=frame.index)
        for i, cls in enumerate(self.labels.classes):
            out[f"{PROBA_PREFIX}{cls}"] = proba[:, i]
        return out


class NormlabClassifier(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper around `LoadedClassifier`; its state comes from the model's artifacts."""

    def load_context(self, context: Any) -> None:
        """Rebuild the classifier from the bundled JSON files and weights."""
        paths = context.artifacts
        self._classifier = LoadedClassifier.from_files(paths["encoder"], paths["spec"], paths["weights"])

    @property
    def classifier(self) -> LoadedClassifier:
        """The loaded network and encoders (scores frames without MLflow's schema enforcement)."""
        return self._classifier

    # Annotated as a DataFrame, the one input hint MLflow's type-hint validation accepts without a warning;
    # it passes an array through unchanged, and an image model takes one.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Predict labels and class probabilities for a DataFrame of raw rows (an image model: or an image array)."""
        if isinstance(model_input, np.ndarray) and model_input.ndim >= 3:
            return self._classifier.predict(model_input)
        return self._classifier.predict(pd.DataFrame(model_input))


def serving_example(frame: pd.DataFrame, features: list[str], rows: int = 5) -> pd.DataFrame:
    """A few raw training rows: the signature is inferred from them, so requests keep the training dtypes."""
    return frame[features].head(rows).reset_index(drop=True)


def log_serving_model(
    store: TrackingStore,
    run_id: str,
    *,
    run_dir: str | Path,
    reference: pd.DataFrame,
    features: list[str],
    name: str = "serving",
) -> dict[str, str]:
    """Log the pyfunc serving model of a run folder to its MLflow run.

    Args:
        store: The tracking store.
        run_id: The run to log into.
        run_dir: Folder holding ``encoder.json``, ``model.json`` and ``model.pt``.
        reference: Raw training rows; a few become the input example.
        features: The raw feature columns, in training order.
        name: Name of the logged model inside the run.

    Returns:
        ``model_uri`` (``models:/<model_id>``), ``model_id`` and ``name``.
    """
    from mlflow.models import infer_signature

    from normlab.tracking import tracking_uri

    run_dir = Path(run_dir)
    artifacts = {key: str(run_dir / file) for key, file in ARTIFACT_FILES.items()}
    example = serving_example(reference, features)
    local = LoadedClassifier.from_files(artifacts["encoder"], artifacts["spec"], artifacts["weights"])
    package = Path(__file__).resolve().parent
    requirements = [f"{pkg}=={metadata.version(pkg).split('+')[0]}" for pkg in _REQUIREMENTS]
    # Models from code: MLflow runs this file to get the wrapper, so nothing is unpickled.
    entry = run_dir / "serving_model.py"
    entry.write_text(_ENTRY_POINT, encoding="utf-8")
    signature = None
    if local.reads_images:
        example = None  # paths, arrays and pixel rows are all inputs: no column signature refuses the first two
    else:
        with warnings.catch_warnings():
            # MLflow hints that integer columns cannot hold NaN: the training dtypes are the contract here.
            warnings.simplefilter("ignore", UserWarning)
            signature = infer_signature(example, local.predict(example))
    with tracking_uri(store), mlflow.start_run(run_id=run_id), _no_signature_notice():
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(entry),
            artifacts=artifacts,
            code_paths=[str(package)],
            signature=signature,
            input_example=example,
            pip_requirements=requirements,
        )
    # Leaving the fluent run context marks the run FINISHED; the pipeline closes it itself.
    store.client.update_run(run_id, status="RUNNING")
    return {"model_uri": info.model_uri, "model_id": info.model_id, "name": name}


class _SignatureNotice(logging.Filter):
    """Drops MLflow's notice that no signature could be inferred: an image model has none on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to infer model signature: Type hint")


@contextmanager
def _no_signature_notice() -> Iterator[None]:
    logger, notice = logging.getLogger("mlflow.pyfunc"), _SignatureNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)
