"""The pipeline's stages as plain functions over files (the split stage is `normlab.splitting`).

Each stage takes the config sections it reads, reads what earlier stages
wrote under the run folder and returns a small frozen contract
(`normlab.contracts`: paths, fingerprints, ids, counts, metrics), which is
what a Prefect task passes on. Frames, arrays and models stay on disk. The
stages that log get the flow's `normlab.tracking.TrackingStore`.

Run folder layout (``<workdir>/runs/<run_id>/``)::

    batch.parquet        the batch as loaded (a snapshot; the source may change)
    validation.json      the data gate's report (validation.html: the same, for people)
    accepted.parquet     the rows the gate accepted, when it took rows out or repaired types
    leakage.json         the split audit: evaluation rows whose features sit in training
    prepared.npz         encoded features and labels per split (prepared/<split>/x.npy, y.npy over
                         data.memory_budget_mb: memory-mapped, streamed by training)
    encoder.json         feature and label encoders (saved with the model)
    reference.parquet    raw training rows: the drift reference
    checkpoints/last.pt  the latest epoch, for resuming
    model.pt, model.json final weights and the arguments that rebuild the model
    metrics.json         per-split metrics
    eval_frames/         raw rows of each scored split (slices, champion re-scoring)
    predictions.npz      predicted class per row of each scored split (the promotion gate)
    inference.json       what the folded and int8 variants measured, or why not
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from normlab import tracking
from normlab.config import (
    CheckpointConfig,
    DataConfig,
    EvalConfig,
    ModelConfig,
    PipelineConfig,
    PromotionConfig,
    TrainConfig,
    to_yaml,
)
from normlab.contracts import (
    Batch,
    Decision,
    Evaluation,
    ImageSource,
    Publication,
    Recorded,
    Registration,
    Splits,
    Trained,
    TrainingResult,
)
from normlab.data.fingerprint import fingerprint_frame
from normlab.data.sources import load_builtin, read_table
from normlab.device import resolve_device
from normlab.errors import ConfigError, DataSourceError, DataValidationError, NormlabError
from normlab.evaluation import confusion, evaluate_run
from normlab.gate import GateResult, GateScope, enforce, run_gate
from normlab.images.source import is_image_source, read_images
from normlab.inference import profile_inference
from normlab.model_spec import ModelSpec
from normlab.models import IMAGE_FAMILIES
from normlab.splitting import load_eval_frames, load_prepared, load_split
from normlab.tracking import TrackingStore
from normlab.training import cpu_state_dict, make_optimizer, set_seeds, train_model


def run_dir_for(workdir: Path, run_id: str) -> Path:
    """The run's local folder under the work folder (created)."""
    path = workdir / "runs" / run_id
    path.mkdir(parents=True, exist_ok=True)
    return path


# 1. Load -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceBatch:
    """A batch as read from its source, before the snapshot: its rows, where they came from, their fingerprint.

    For image files the rows are the files found (`normlab.images.scan.Manifest`),
    ``images`` says where, and the fingerprint covers every file's bytes and label.
    """

    frame: pd.DataFrame
    source: str
    fingerprint: str
    images: ImageSource | None = None


def read_batch(data: DataConfig, data_path: str | None = None) -> SourceBatch:
    """The batch: ``data_path``, the configured file or image folder, or the built-in dataset."""
    path = data_path or data.path
    if path and is_image_source(data, path):
        manifest = read_images(data, path)
        images = ImageSource(root=str(manifest.root.resolve()), empty_classes=list(manifest.empty_classes))
        return SourceBatch(manifest.entries, str(Path(path).resolve()), manifest.fingerprint(), images)
    if path:
        frame, source = read_table(path), str(Path(path).resolve())
    else:
        frame, source = load_builtin(data.source or ""), f"builtin:{data.source}"
    return SourceBatch(frame, source, fingerprint_frame(frame))


def batch_fingerprint(data: DataConfig, data_path: str | None = None) -> str:
    """The fingerprint the batch has once loaded (what a reproduction is checked against)."""
    return read_batch(data, data_path).fingerprint


def check_label(data: DataConfig, frame: pd.DataFrame, source: str) -> None:
    """`DataSourceError` when the batch has no label column."""
    if data.label not in frame.columns:
        raise DataSourceError(
            f"{source}: label column {data.label!r} not found; columns: {', '.join(map(str, frame.columns[:20]))}"
        )


def stage_batch(loaded: SourceBatch, run_dir: str | Path) -> Batch:
    """Snapshot a loaded batch into the run folder (``batch.parquet``, what every later stage reads)."""
    snapshot = Path(run_dir) / "batch.parquet"
    loaded.frame.to_parquet(snapshot, index=False)
    return Batch(
        path=str(snapshot),
        source=loaded.source,
        fingerprint=loaded.fingerprint,
        rows=len(loaded.frame),
        columns=[str(c) for c in loaded.frame.columns],
        images=loaded.images,
    )


def load_batch(data: DataConfig, run_dir: str | Path, data_path: str | None = None) -> Batch:
    """Load the batch (a file, an image folder, or the built-in dataset), snapshot and fingerprint it."""
    loaded = read_batch(data, data_path)
    check_label(data, loaded.frame, loaded.source)
    return stage_batch(loaded, run_dir)


def load_snapshot(batch: Batch, run_dir: str | Path) -> Batch:
    """Copy a validated batch (the gate's accepted rows) into another run folder, checking its fingerprint.

    Raises:
        DataValidationError: The file no longer has the validated content.
    """
    frame = pd.read_parquet(batch.path)
    staged = stage_batch(SourceBatch(frame, batch.source, fingerprint_frame(frame), batch.images), run_dir)
    if staged.fingerprint != batch.fingerprint:
        raise DataValidationError(
            f"the validated batch {batch.path!r} changed on disk "
            f"(fingerprint {staged.fingerprint[:12]}, validated {batch.fingerprint[:12]})"
        )
    return staged


# 2. Validate ---------------------------------------------------------------------------


def validate_batch(scope: GateScope, batch: Batch, run_dir: str | Path) -> GateResult:
    """The data gate: run every check, quarantine rejected rows, write the accepted ones.

    Returns `normlab.gate.run_gate`'s `GateResult`; its ``accepted`` `Batch` (as
    `load_batch` returns) is what the later stages read. The report goes to
    ``validation.json``.
    """
    return run_gate(scope, batch, run_dir)


def enforce_validation(gate: GateResult) -> None:
    """Stop the pipeline when the gate blocked the batch (`DataValidationError`, exit code 3)."""
    enforce(gate)


# 3. Split: normlab.splitting.prepare_splits (prepared.npz, encoder.json, reference.parquet, eval_frames/)


# 4. Train ------------------------------------------------------------------------------


def model_spec(model: ModelConfig, prepared: Splits, image_shape: tuple[int, int] | None) -> ModelSpec:
    """What builds the configured model for these splits (``image_shape``: ``data.image_shape``).

    The image families read ``in_features / (H * W)`` channels: rows of C*H*W values in (C, H, W) order.

    Raises:
        ConfigError: An image family's features are not a whole number of H x W channels.
    """
    in_channels = 1
    if model.family in IMAGE_FAMILIES and image_shape:
        pixels = image_shape[0] * image_shape[1]
        in_channels, rest = divmod(prepared.n_features, pixels)
        if rest or not in_channels:
            raise ConfigError(
                f"model.family '{model.family}' reads images of data.image_shape {list(image_shape)}, but the data "
                f"have {prepared.n_features} features, not a multiple of {pixels}; fix data.image_shape or data.features"
            )
    return ModelSpec(
        family=model.family,
        in_features=prepared.n_features,
        num_classes=len(prepared.classes),
        norm=model.norm,
        image_shape=tuple(image_shape) if image_shape else None,
        hidden=tuple(model.hidden),
        channels=tuple(model.channels),
        groups=model.groups,
        dropout=model.dropout,
        blocks=model.blocks,
        patch_size=model.patch_size,
        width=model.width,
        depth=model.depth,
        heads=model.heads,
        mlp_ratio=model.mlp_ratio,
        norm_position=model.norm_position,
        in_channels=in_channels,
    )


def train(
    model_config: ModelConfig,
    settings: TrainConfig,
    prepared: Splits,
    run_dir: str | Path,
    *,
    seed: int,
    image_shape: tuple[int, int] | None,
    eval_batch_size: int,
    checkpoint: CheckpointConfig,
    on_epoch_end=None,
    on_checkpoint=None,
) -> Trained:
    """Train the configured model; resumes from ``checkpoints/last.pt`` when present.

    ``on_epoch_end`` gets each epoch's record; ``on_checkpoint`` the records since
    the previous checkpoint, at most every ``checkpoint.every_seconds`` (see
    `normlab.training.train_model`). ``eval_batch_size`` (``eval.batch_size``)
    scores the validation split after each epoch. Training runs on
    ``settings.device`` in ``settings.precision`` (`normlab.device`);
    ``model.pt`` holds CPU tensors with plain parameter names either way, and
    the later stages load it on the CPU. Splits written over ``data.memory_budget_mb``
    arrive memory-mapped and stream from disk (`normlab.streaming`).
    """
    run_dir = Path(run_dir)
    device = resolve_device(settings.device)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    splits = load_prepared(prepared)
    spec = model_spec(model_config, prepared, image_shape)
    set_seeds(seed)
    model = spec.build()
    optimizer = make_optimizer(
        model.parameters(), settings.optimizer, lr=settings.lr,
        momentum=settings.momentum, weight_decay=settings.weight_decay,
    )
    # With val_fraction 0 the test split stands in for validation (and says so in the docs).
    val = splits["id/val"] if len(splits.get("id/val", ((), ()))[1]) else splits["id/test"]
    result = train_model(
        model, optimizer, splits["id/train"], val,
        epochs=settings.epochs, batch_size=settings.batch_size, seed=seed,
        target_accuracy=settings.target_accuracy, checkpoint_dir=run_dir / "checkpoints",
        on_epoch_end=on_epoch_end, eval_batch_size=eval_batch_size,
        checkpoint_every_seconds=checkpoint.every_seconds, on_checkpoint=on_checkpoint,
        device=device, precision=settings.precision, compile=settings.compile,
    )
    torch.save(cpu_state_dict(model), run_dir / "model.pt")
    (run_dir / "model.json").write_text(json.dumps(spec.to_json()))
    return Trained(model_path=str(run_dir / "model.pt"), spec=spec,
                   result=TrainingResult.model_validate(result.to_dict()))


def load_weights(spec: ModelSpec, model_path: str | Path) -> torch.nn.Module:
    """The model ``spec`` builds, with the weights in ``model_path``, in eval mode (no code is unpickled)."""
    model = spec.build()
    model.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True))
    return model.eval()


def load_trained(trained: Trained) -> torch.nn.Module:
    """The trained model in eval mode (weights only: no code is unpickled)."""
    return load_weights(trained.spec, trained.model_path)


# 5. Evaluate ---------------------------------------------------------------------------


def evaluate(
    settings: EvalConfig, prepared: Splits, trained: Trained, run_dir: str | Path, *, seed: int
) -> Evaluation:
    """Metrics for the ID test split and every OOD split, plus training figures (`Evaluation`)."""
    run_dir = Path(run_dir)
    splits = load_prepared(prepared)
    model = load_trained(trained)
    scored = {k: v for k, v in splits.items() if k == "id/test" or k.startswith("ood/")}
    frames = load_eval_frames(prepared) if settings.slices else None
    metrics, predictions = evaluate_run(model, scored, classes=prepared.classes, settings=settings, seed=seed,
                                        populations=prepared.populations, frames=frames)
    np.savez(run_dir / "predictions.npz", **predictions)
    inference = None
    if settings.inference:
        timing, notes = profile_inference(
            model, *splits["id/test"], iterations=settings.latency_iterations,
            throughput_batch=settings.throughput_batch, fold_tolerance=settings.fold_tolerance,
        )
        metrics.update(timing)
        inference = run_dir / "inference.json"
        inference.write_text(json.dumps(notes, indent=1))
    result = trained.result
    last = result.history[-1]
    metrics.update({
        "id/train/accuracy": last.train_accuracy,
        "id/val/accuracy": last.val_accuracy,
        "train/final_loss": last.train_loss,
        "train/final_val_loss": last.val_loss,
        "train/reached_target": float(result.epochs_to_target is not None),
        "time/train_seconds": result.train_seconds,
        "time/samples_per_second": result.samples_per_second,
    })
    if "id/train" in splits:
        metrics["train/classes"] = float(len(np.unique(splits["id/train"][1])))
    # Convergence figures exist only when the target was reached; never faked.
    if result.epochs_to_target is not None:
        metrics["train/epochs_to_target"] = float(result.epochs_to_target)
        metrics["time/seconds_to_target"] = result.seconds_to_target
    matrix = confusion(model, *splits["id/test"], n_classes=len(prepared.classes))
    np.save(run_dir / "confusion_id_test.npy", matrix)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return Evaluation(metrics=metrics, predictions=str(run_dir / "predictions.npz"),
                      confusion=str(run_dir / "confusion_id_test.npy"),
                      inference=str(inference) if inference is not None else None)


# 6. Record -----------------------------------------------------------------------------


def record_run(
    cfg: PipelineConfig,
    store: TrackingStore,
    run_id: str,
    batch: Batch,
    prepared: Splits,
    trained: Trained,
    evaluation: Evaluation,
) -> Recorded:
    """Log metrics, the dataset, the model, plots and files to the run.

    Per-epoch metrics were logged live during training (epochs an interrupted
    run stopped before logging are filled in here); params, validation and
    tags at the start. ``cfg`` is the run's config: its redacted copy is
    logged as ``config.yaml`` (what `normlab reproduce` rebuilds the run from).
    Returns the model URI (`Recorded`).
    """
    from normlab import plots

    metrics = evaluation.metrics
    tracking.log_metrics(store, run_id, metrics)
    result = trained.result.model_dump()
    tracking.log_missing_history(store, run_id, result["history"])

    frame = pd.read_parquet(batch.path)
    tracking.log_dataset(
        store, run_id, frame, name=cfg.name, source=batch.source, fingerprint=batch.fingerprint,
        targets=cfg.data.label, context="training",
    )
    tracking.log_artifact(store, run_id, prepared.reference, "drift")
    tracking.log_artifact(store, run_id, prepared.encoder, "model_inputs")
    tracking.log_text(store, run_id, to_yaml(cfg.redacted()), "config.yaml")
    tracking.log_dict(store, run_id, metrics, "metrics.json")
    tracking.log_dict(store, run_id, result, "training/history.json")
    if evaluation.inference is not None:
        tracking.log_artifact(store, run_id, evaluation.inference, "evaluation")

    history = result["history"]
    title = f"{cfg.model.family} + {cfg.model.norm} norm, batch {cfg.train.batch_size}"
    fig = plots.learning_curves(history, title=title, target=cfg.train.target_accuracy)
    tracking.log_figure(store, run_id, fig, "plots/learning_curves.png")
    plots.close(fig)
    matrix = np.load(evaluation.confusion)
    fig = plots.confusion_matrix_figure(matrix, prepared.classes, title="ID test confusion matrix")
    tracking.log_figure(store, run_id, fig, "plots/confusion_id_test.png")
    plots.close(fig)

    model = load_trained(trained)
    example = np.array(load_split(prepared, "id/test")[0][:5])
    model_uri = tracking.log_torch_model(store, run_id, model, input_example=example,
                                         extra_files=[prepared.encoder])
    tracking.set_tags(store, run_id, {"normlab.model_uri": model_uri})
    return Recorded(model_uri=model_uri)


# 7. Register, gate, publish ------------------------------------------------------------


def register_model(
    promotion: PromotionConfig, store: TrackingStore, name: str, run_id: str, prepared: Splits, run_dir: str | Path
) -> Registration:
    """Log the serving model (raw rows in, labels out) and register it as a new version of ``name``.

    A run that already has a version (a retried or resumed run) keeps it.
    Returns ``Registration(enabled=False)`` when ``promotion.enabled`` is off.
    """
    from normlab import registry, serving

    if not promotion.enabled:
        return Registration(enabled=False)
    existing = registry.version_for_run(store, name, run_id)
    if existing is not None:
        return Registration(enabled=True, **existing.model_dump(), reused=True)
    logged = serving.log_serving_model(store, run_id, run_dir=run_dir, reference=pd.read_parquet(prepared.reference),
                                       features=prepared.features)
    return registry.register_version(store, name, run_id, logged["model_id"])


def gate_model(
    promotion: PromotionConfig,
    store: TrackingStore,
    prepared: Splits,
    registered: Registration,
    evaluation: Evaluation,
    run_dir: str | Path,
    *,
    seed: int,
) -> Decision:
    """The promotion gate: thresholds, then the champion re-scored on this run's splits.

    A champion that cannot be re-scored (its inputs are not in this data, its
    files are gone) makes the gate refuse, with that reason. The decision is
    also written to ``gate.json``.
    """
    from mlflow.exceptions import MlflowException

    from normlab import registry
    from normlab.promotion import decide

    if not registered.enabled:
        return Decision(enabled=False)
    labels = {k: y for k, (_, y) in load_prepared(prepared).items() if k in prepared.eval_frames}
    with np.load(evaluation.predictions) as npz:
        challenger = {k: npz[k] for k in npz.files}
    champion = registry.alias_version(store, registered.name, registry.CHAMPION)
    champion_predictions, error = None, None
    if champion is not None:
        try:
            classifier = registry.load_classifier(store, champion)
            champion_predictions = registry.predict_indices(classifier, load_eval_frames(prepared), prepared.classes)
        except (NormlabError, MlflowException, OSError, ValueError, KeyError) as exc:
            error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    decision = decide(
        promotion, evaluation.metrics, labels, challenger, n_classes=len(prepared.classes), seed=seed,
        champion=champion, champion_predictions=champion_predictions, champion_error=error,
        populations=prepared.populations,
    )
    (Path(run_dir) / "gate.json").write_text(json.dumps(decision.to_json(), indent=1))
    return Decision(enabled=True, **dict(decision))


def publish_decision(
    promotion: PromotionConfig,
    store: TrackingStore,
    run_id: str,
    accepted: Batch,
    validation: GateResult,
    prepared: Splits,
    metrics: dict[str, float],
    registered: Registration,
    decision: Decision,
    flow_run_id: str | None,
) -> Publication:
    """Write the version's governance record, then move its aliases (challenger; champion on a pass)."""
    from normlab.governance_record import DataRef, DriftReference, governance_record, publish

    if not registered.enabled:
        return Publication(enabled=False)
    model = registered.model_version()
    record = governance_record(
        model=model,
        data=DataRef(fingerprint=accepted.fingerprint, source=accepted.source, rows=accepted.rows),
        validation=validation.report,
        metrics=metrics,
        decision=decision.record(),
        drift_reference=DriftReference(artifact_uri=f"runs:/{run_id}/drift/reference.parquet",
                                       local_path=prepared.reference),
        flow_run_id=flow_run_id,
        promotion=promotion,
    )
    published = publish(store, record)
    tracking.set_tags(store, run_id, {"normlab.registry.name": model.name, "normlab.registry.version": model.version,
                                    "normlab.gate.passed": decision.passed,
                                    "normlab.gate.reason": decision.reason[:4000]})
    tracking.log_metrics(store, run_id, {"gate/passed": float(decision.passed)})
    return published
