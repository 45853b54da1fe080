"""The pipeline's stages as plain functions over files.

Each stage reads what earlier stages wrote under the run folder and returns a
small JSON-able dict (paths, fingerprints, counts, metrics), which is what a
Prefect task passes on. Frames, arrays and models stay on disk.

Run folder layout (``<workdir>/runs/<run_id>/``)::

    batch.parquet        the batch as loaded (a snapshot; the source may change)
    validation.json      the data gate's report
    prepared.npz         encoded features and labels per split
    encoder.json         feature and label encoders (saved with the model)
    reference.parquet    raw training rows: the drift reference
    checkpoints/last.pt  the latest epoch, for resuming
    model.pt, model.json final weights and the arguments that rebuild the model
    metrics.json         per-split metrics
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from normlab.config import PipelineConfig, TimeSplit
from normlab.data.encoding import FeatureEncoder, LabelEncoder
from normlab.data.fingerprint import fingerprint_frame
from normlab.data.shifts import corrupt_images
from normlab.data.sources import load_builtin, read_table
from normlab.data.splits import assign_id_splits, ood_mask_column, ood_mask_quantile, ood_mask_time
from normlab.errors import ConfigError, DataSourceError
from normlab.evaluation import confusion, evaluate_splits
from normlab.governance import load_suite, raise_for_blocking, run_suite
from normlab.models import build_model
from normlab.training import make_optimizer, set_seeds, train_model


def run_dir_for(cfg: PipelineConfig, run_id: str) -> Path:
    """The run's local folder (created)."""
    path = cfg.workdir_path() / "runs" / run_id
    path.mkdir(parents=True, exist_ok=True)
    return path


# 1. Load -------------------------------------------------------------------------------


def load_batch(cfg: PipelineConfig, run_dir: str | Path, data_path: str | None = None) -> dict[str, Any]:
    """Load the batch (a file, or the built-in dataset), snapshot and fingerprint it."""
    path = data_path or cfg.data.path
    if path:
        frame = read_table(path)
        source = str(Path(path).resolve())
    else:
        frame = load_builtin(cfg.data.source or "")
        source = f"builtin:{cfg.data.source}"
    if cfg.data.label not in frame.columns:
        raise DataSourceError(
            f"{source}: label column {cfg.data.label!r} not found; columns: {', '.join(map(str, frame.columns[:20]))}"
        )
    snapshot = Path(run_dir) / "batch.parquet"
    frame.to_parquet(snapshot, index=False)
    return {
        "path": str(snapshot),
        "source": source,
        "fingerprint": fingerprint_frame(frame),
        "rows": int(len(frame)),
        "columns": [str(c) for c in frame.columns],
    }


# 2. Validate ---------------------------------------------------------------------------


def validate_batch(cfg: PipelineConfig, batch: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """Run the configured expectation suite on the batch; the report goes to ``validation.json``."""
    frame = pd.read_parquet(batch["path"])
    if cfg.data.expectations:
        report = run_suite(frame, load_suite(cfg.data.expectations), fingerprint=batch["fingerprint"]).to_dict()
    else:
        report = {"suite": None, "fingerprint": batch["fingerprint"], "rows_in": len(frame),
                  "success": True, "failed": [], "checks": []}
    (Path(run_dir) / "validation.json").write_text(json.dumps(report, indent=1, default=str))
    return report


def enforce_validation(report: dict[str, Any]) -> None:
    """Stop the pipeline when a blocking check failed."""
    from normlab.governance import CheckResult, ValidationReport

    checks = [CheckResult(**c) for c in report["checks"]]
    raise_for_blocking(ValidationReport(report["suite"] or "none", report["fingerprint"], report["rows_in"], checks))


# 3. Split ------------------------------------------------------------------------------


def feature_columns(cfg: PipelineConfig, columns: list[str]) -> list[str]:
    """The configured features, or every column but the label and time-split columns."""
    if cfg.data.features:
        missing = [c for c in cfg.data.features if c not in columns]
        if missing:
            raise ConfigError(f"data.features: columns not in the data: {', '.join(missing)}")
        return list(cfg.data.features)
    excluded = {cfg.data.label} | {s.column for s in cfg.splits.ood if isinstance(s, TimeSplit)}
    return [c for c in columns if c not in excluded]


def prepare_splits(cfg: PipelineConfig, batch: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """Split the batch into ID train/val/test and the OOD splits, and encode them.

    Column, quantile and time OOD rows are held out of the ID splits entirely;
    corruption splits are corrupted copies of the ID test split.
    """
    run_dir = Path(run_dir)
    frame = pd.read_parquet(batch["path"])
    features = feature_columns(cfg, list(frame.columns))
    held_out = np.zeros(len(frame), dtype=bool)
    domain_masks: dict[str, np.ndarray] = {}
    thresholds: dict[str, float] = {}
    for split in cfg.splits.ood:
        if split.kind == "column":
            mask = ood_mask_column(frame, split.column, split.values)
        elif split.kind == "quantile":
            mask, thresholds[split.name] = ood_mask_quantile(frame, split.column, split.q, side=split.side)
        elif split.kind == "time":
            mask = ood_mask_time(frame, split.column, split.after)
        else:
            continue
        if not mask.any():
            raise ConfigError(f"splits.ood '{split.name}': selects no rows of this batch")
        domain_masks[split.name] = mask
        held_out |= mask

    id_frame = frame.loc[~held_out]
    id_split = assign_id_splits(
        id_frame, val_fraction=cfg.splits.val_fraction, test_fraction=cfg.splits.test_fraction, salt=cfg.splits.salt
    )
    parts = {name: id_frame.loc[id_split == name] for name in ("train", "val", "test")}
    for name, part in parts.items():
        if name != "val" and len(part) == 0:
            raise DataSourceError(f"the ID {name} split is empty: the batch has too few rows ({len(id_frame)})")

    labels = LabelEncoder.fit(frame[cfg.data.label])
    encoder = FeatureEncoder.fit(parts["train"], features, scale=cfg.data.scale)
    arrays: dict[str, np.ndarray] = {}

    def add(key: str, part: pd.DataFrame, raw_override: np.ndarray | None = None) -> None:
        if raw_override is not None:
            part = part.copy()
            part[features] = raw_override
        arrays[f"{key}/x"] = encoder.transform(part)
        arrays[f"{key}/y"] = labels.transform(part[cfg.data.label])

    for name, part in parts.items():
        add(f"id/{name}", part)
    for split in cfg.splits.ood:
        if split.kind == "corruption":
            raw = parts["test"][features].to_numpy(dtype=np.float64)
            lo, hi = cfg.data.value_range or (float(np.nanmin(raw)), float(np.nanmax(raw)))
            corrupted = corrupt_images(
                raw, cfg.data.image_shape, split.corruption, split.severity, seed=cfg.seed, value_range=(lo, hi)
            )
            add(f"ood/{split.name}", parts["test"], corrupted)
        else:
            add(f"ood/{split.name}", frame.loc[domain_masks[split.name]])

    np.savez(run_dir / "prepared.npz", **arrays)
    (run_dir / "encoder.json").write_text(
        json.dumps({"features": encoder.to_dict(), "labels": labels.to_dict(), "label_column": cfg.data.label})
    )
    parts["train"].to_parquet(run_dir / "reference.parquet", index=False)
    counts = {key[:-2]: int(len(v)) for key, v in arrays.items() if key.endswith("/y")}
    return {
        "path": str(run_dir / "prepared.npz"),
        "encoder": str(run_dir / "encoder.json"),
        "reference": str(run_dir / "reference.parquet"),
        "features": features,
        "n_features": int(encoder.n_outputs),
        "classes": [str(c) for c in labels.classes],
        "counts": counts,
        "ood_thresholds": thresholds,
    }


def load_prepared(prepared: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Split key (``id/train``, ``ood/noise``...) to (features, labels)."""
    with np.load(prepared["path"]) as npz:
        keys = sorted({k[:-2] for k in npz.files})
        return {k: (npz[f"{k}/x"], npz[f"{k}/y"]) for k in keys}


# 4. Train ------------------------------------------------------------------------------


def model_spec(cfg: PipelineConfig, prepared: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments that rebuild the model with `build_model`."""
    return {
        "family": cfg.model.family,
        "in_features": prepared["n_features"],
        "num_classes": len(prepared["classes"]),
        "norm": cfg.model.norm,
        "image_shape": list(cfg.data.image_shape) if cfg.data.image_shape else None,
        "hidden": list(cfg.model.hidden),
        "channels": list(cfg.model.channels),
        "groups": cfg.model.groups,
        "dropout": cfg.model.dropout,
    }


def build_from_spec(spec: dict[str, Any]) -> torch.nn.Module:
    """Rebuild a model from `model_spec`'s output."""
    spec = dict(spec)
    if spec.get("image_shape") is not None:
        spec["image_shape"] = tuple(spec["image_shape"])
    return build_model(**spec)


def train(cfg: PipelineConfig, prepared: dict[str, Any], run_dir: str | Path, on_epoch_end=None) -> dict[str, Any]:
    """Train the configured model; resumes from ``checkpoints/last.pt`` when present."""
    run_dir = Path(run_dir)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    splits = load_prepared(prepared)
    spec = model_spec(cfg, prepared)
    set_seeds(cfg.seed)
    model = build_from_spec(spec)
    optimizer = make_optimizer(
        model.parameters(), cfg.train.optimizer, lr=cfg.train.lr,
        momentum=cfg.train.momentum, weight_decay=cfg.train.weight_decay,
    )
    # With val_fraction 0 the test split stands in for validation (and says so in the docs).
    val = splits["id/val"] if len(splits.get("id/val", ((), ()))[1]) else splits["id/test"]
    result = train_model(
        model, optimizer, splits["id/train"], val,
        epochs=cfg.train.epochs, batch_size=cfg.train.batch_size, seed=cfg.seed,
        target_accuracy=cfg.train.target_accuracy, checkpoint_dir=run_dir / "checkpoints",
        on_epoch_end=on_epoch_end, eval_batch_size=cfg.eval.batch_size,
    )
    torch.save(model.state_dict(), run_dir / "model.pt")
    (run_dir / "model.json").write_text(json.dumps(spec))
    return {"model_path": str(run_dir / "model.pt"), "spec": spec, "result": result.to_dict()}


def load_trained(trained: dict[str, Any]) -> torch.nn.Module:
    """The trained model in eval mode (weights only: no code is unpickled)."""
    model = build_from_spec(trained["spec"])
    model.load_state_dict(torch.load(trained["model_path"], map_location="cpu", weights_only=True))
    return model.eval()


# 5. Evaluate ---------------------------------------------------------------------------


def evaluate(cfg: PipelineConfig, prepared: dict[str, Any], trained: dict[str, Any], run_dir: str | Path) -> dict[str, float]:
    """Metrics for the ID test split and every OOD split, plus training figures."""
    splits = load_prepared(prepared)
    model = load_trained(trained)
    scored = {k: v for k, v in splits.items() if k == "id/test" or k.startswith("ood/")}
    metrics = evaluate_splits(model, scored, n_classes=len(prepared["classes"]),
                              ece_bins=cfg.eval.ece_bins, batch_size=cfg.eval.batch_size)
    result = trained["result"]
    last = result["history"][-1]
    metrics.update({
        "id/train/accuracy": last["train_accuracy"],
        "id/val/accuracy": last["val_accuracy"],
        "train/reached_target": float(result["epochs_to_target"] is not None),
        "time/train_seconds": result["train_seconds"],
        "time/samples_per_second": result["samples_per_second"],
    })
    # Convergence figures exist only when the target was reached; never faked.
    if result["epochs_to_target"] is not None:
        metrics["train/epochs_to_target"] = float(result["epochs_to_target"])
        metrics["time/seconds_to_target"] = result["seconds_to_target"]
    matrix = confusion(model, *splits["id/test"], n_classes=len(prepared["classes"]))
    np.save(Path(run_dir) / "confusion_id_test.npy", matrix)
    (Path(run_dir) / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


# 6. Record -----------------------------------------------------------------------------


def record_run(
    cfg: PipelineConfig,
    run_id: str,
    batch: dict[str, Any],
    prepared: dict[str, Any],
    trained: dict[str, Any],
    metrics: dict[str, float],
    run_dir: str | Path,
) -> dict[str, Any]:
    """Log metrics, the dataset, the model, plots and files to the run.

    Per-epoch metrics were logged live during training; params, validation and
    tags at the start. Returns the model URI.
    """
    from normlab import plots, tracking
    from normlab.config import to_yaml

    uri, run_dir = cfg.tracking_uri(), Path(run_dir)
    tracking.log_metrics(uri, run_id, metrics)

    frame = pd.read_parquet(batch["path"])
    tracking.log_dataset(
        uri, run_id, frame, name=cfg.name, source=batch["source"], fingerprint=batch["fingerprint"],
        targets=cfg.data.label, context="training",
    )
    tracking.log_artifact(uri, run_id, prepared["reference"], "drift")
    tracking.log_artifact(uri, run_id, prepared["encoder"], "model_inputs")
    tracking.log_text(uri, run_id, to_yaml(cfg), "config.yaml")
    tracking.log_dict(uri, run_id, metrics, "metrics.json")
    tracking.log_dict(uri, run_id, trained["result"], "training/history.json")

    history = trained["result"]["history"]
    title = f"{cfg.model.family} + {cfg.model.norm} norm, batch {cfg.train.batch_size}"
    fig = plots.learning_curves(history, title=title, target=cfg.train.target_accuracy)
    tracking.log_figure(uri, run_id, fig, "plots/learning_curves.png")
    plots.close(fig)
    matrix = np.load(run_dir / "confusion_id_test.npy")
    fig = plots.confusion_matrix_figure(matrix, prepared["classes"], title="ID test confusion matrix")
    tracking.log_figure(uri, run_id, fig, "plots/confusion_id_test.png")
    plots.close(fig)

    model = load_trained(trained)
    with np.load(prepared["path"]) as npz:
        example = npz["id/test/x"][:5]
    model_uri = tracking.log_torch_model(uri, run_id, model, input_example=example,
                                         extra_files=[prepared["encoder"]])
    tracking.set_tags(uri, run_id, {"normlab.model_uri": model_uri})
    return {"model_uri": model_uri}
