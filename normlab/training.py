"""A deterministic training loop with per-epoch history and checkpoints.

The loop batches straight from tensors with a seeded permutation (no
DataLoader workers: on small tabular data they cost more than they save) and
records, per epoch, train and validation loss and accuracy plus wall time.
Checkpoints hold everything needed to resume bit-for-bit: model and optimizer
state, the shuffling generator, torch's global RNG and the history so far.

The loop does as little as it can per step and per epoch beyond the arithmetic
a hand-written loop does (``bench/training.py`` holds it to 95% of one's
speed): train loss and accuracy are summed over chunks of batches, not batch
by batch, and checkpoints are written at most every ``checkpoint_every_seconds``
(and after the last epoch) rather than after every epoch of a small model.

Device and precision (``train.device``, ``train.precision``, ``train.compile``;
`normlab.device`): the model and, when they fit, the whole arrays are moved to
the device once; the forward pass and loss run under autocast for bf16 and
fp16, fp16 with a gradient scaler; a compiled model trains through its wrapper
while weights and checkpoints are saved from the module itself (plain
parameter names). Checkpoints hold CPU tensors, so a run checkpointed on one
device resumes on another (``train.device: auto`` resolves per machine): it
continues from the checkpoint's state, with a warning, since the epochs after
it are computed by the other device's kernels and do not repeat an
uninterrupted run bit for bit. A checkpoint resumes only in the precision it
was written in (`ConfigError` otherwise): the epochs it holds, and fp16's
gradient scaler, belong to that precision. The default (cpu, fp32, not compiled)
runs exactly the arithmetic it always did.

Streaming (`normlab.streaming`): training or validation arrays that are
``np.memmap`` (splits over ``data.memory_budget_mb``, memory-mapped by
`normlab.splitting.load_prepared`) are not made tensors: each batch is read
from the file through a DataLoader, in the order the in-memory loop draws (the
same generator, permutation and skipped singleton), and the validation pass
reads consecutive chunks. On the same data a streamed run computes exactly what
an in-memory one does, and resumes from the same checkpoints.
"""

from __future__ import annotations

import os
import random
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from normlab.contracts import Epoch, TrainingResult
from normlab.device import Precision, resolve_device, resolve_precision
from normlab.errors import ConfigError
from normlab.norms import has_batch_stats
from normlab.streaming import EpochBatches, MemmapRows, batch_loader, chunks

CHECKPOINT_NAME = "last.pt"

# Least seconds between two progress lines (see `throttled`).
PROGRESS_EVERY_SECONDS = 1.0

# Batches whose outputs are held before their loss and accuracy are summed: a
# few tensor ops per chunk instead of per step (about 5% of a small model's step
# time), and no host-device sync per step; memory stays bounded by the chunk.
_METRIC_CHUNK = 64

# Share of a CUDA device's free memory the training and validation arrays may
# take to be moved there whole; larger arrays stay on the host, batch by batch.
_DEVICE_DATA_SHARE = 0.5


def set_seeds(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) at once."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def throttled(
    callback: Callable[[Epoch], None], *, last_epoch: int, seconds: float = PROGRESS_EVERY_SECONDS
) -> Callable[[Epoch], None]:
    """``callback`` on the first epoch it sees, on ``last_epoch``, and at most once per ``seconds`` between.

    For progress lines: one costs about a millisecond (console rendering and the
    orchestrator's log API), while a small model's epoch takes tens of
    milliseconds, so a line per epoch would slow its training by several percent.
    """
    shown_at: float | None = None

    def _call(record: Epoch) -> None:
        nonlocal shown_at
        now = time.perf_counter()
        if shown_at is None or record.epoch >= last_epoch or now - shown_at >= seconds:
            shown_at = now
            callback(record)

    return _call


def make_optimizer(
    params, name: str, *, lr: float, momentum: float = 0.9, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """Build the optimizer named in the config."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; known: sgd, adam, adamw")


class _EpochTotals:
    """Train loss and accuracy of one epoch, summed a chunk of batches at a time."""

    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.correct = 0
        self.seen = 0
        self._losses: list[torch.Tensor] = []
        self._logits: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Hold one batch's mean loss, outputs and labels (detached: no graph is kept)."""
        self._losses.append(loss.detach())
        self._logits.append(logits.detach())
        self._labels.append(labels)
        self.seen += len(labels)
        if len(self._losses) >= _METRIC_CHUNK:
            self.flush()

    def flush(self) -> None:
        """Fold the held batches into the sums."""
        if not self._losses:
            return
        losses = torch.stack(self._losses)
        sizes = torch.tensor([len(y) for y in self._labels], dtype=losses.dtype, device=losses.device)
        self.loss_sum += float((losses * sizes).sum())
        self.correct += int((torch.cat(self._logits).argmax(1) == torch.cat(self._labels)).sum())
        self._losses, self._logits, self._labels = [], [], []


def cpu_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with every tensor on the CPU (CPU tensors, and the dict's metadata, unchanged)."""
    state = module.state_dict()
    for key in list(state):
        state[key] = state[key].cpu()
    return state


def _to_cpu(value):
    """``value`` (an optimizer state: dicts, lists, tuples of tensors and numbers) with every tensor on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _data_device(tensors: list[torch.Tensor], device: torch.device) -> torch.device:
    """Where the arrays live: ``device`` when they fit there (always off CUDA), else the host."""
    if device.type != "cuda":
        return device
    free, _total = torch.cuda.mem_get_info(device)
    return device if sum(t.nbytes for t in tensors) <= free * _DEVICE_DATA_SHARE else torch.device("cpu")


def _tensors(split: tuple[np.ndarray, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``split`` as float32 features and int64 labels, or None when it streams (memory-mapped features)."""
    if isinstance(split[0], np.memmap):
        return None
    return torch.as_tensor(split[0], dtype=torch.float32), torch.as_tensor(split[1], dtype=torch.long)


def _chunks_of(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size]


@torch.no_grad()
def _evaluate_loss(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    n: int,
    *,
    device: torch.device,
    precision: Precision | None = None,
) -> tuple[float, float]:
    """Mean loss and accuracy over the ``n`` rows of ``batches`` (consecutive chunks of the validation split)."""
    model.eval()
    total_loss, correct = 0.0, 0
    for xb, yb in batches:
        if xb.device != device:
            xb, yb = xb.to(device, non_blocking=xb.is_pinned()), yb.to(device, non_blocking=yb.is_pinned())
        if precision is None:
            logits = model(xb)
        else:
            with precision.autocast(device):
                logits = model(xb).float()
        total_loss += nn.functional.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    n = max(n, 1)
    return total_loss / n, correct / n


def train_model(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    target_accuracy: float | None = None,
    checkpoint_dir: str | Path | None = None,
    on_epoch_end: Callable[[Epoch], None] | None = None,
    eval_batch_size: int = 512,
    checkpoint_every_seconds: float = 0.0,
    on_checkpoint: Callable[[list[Epoch]], None] | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    compile: bool = False,
    num_workers: int | None = None,
) -> TrainingResult:
    """Train ``model`` in place and return its history (`normlab.contracts.TrainingResult`).

    Args:
        model: The network; trained in place.
        optimizer: An optimizer over ``model``'s parameters.
        train: Training features (float32) and labels (int64).
        val: Validation features and labels, scored after each epoch.
        epochs: Total epochs (a resumed run continues up to this number).
        batch_size: Mini-batch size.
        seed: Seeds the shuffling generator.
        target_accuracy: Validation accuracy that counts as converged.
        checkpoint_dir: Where ``last.pt`` is written; an existing one there is
            resumed from.
        on_epoch_end: Called with each epoch's record (progress display).
        eval_batch_size: Batch size for the validation pass.
        checkpoint_every_seconds: Least wall time between two checkpoints
            (0: after every epoch); the last epoch is always checkpointed.
        on_checkpoint: Called at each checkpoint with the records of the epochs
            since the previous one, after the checkpoint is written: what it
            records (e.g. metrics in a tracking store) never runs ahead of the
            epoch a resumed run starts from. Called at the same points when
            there is no ``checkpoint_dir``.
        device: Where to train: a `torch.device`, or a ``train.device`` name
            (`normlab.device.resolve_device`). The model stays there afterwards.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast; fp16 with a
            gradient scaler), refused where torch cannot run it
            (`normlab.device.resolve_precision`).
        compile: Train through ``torch.compile(model)``; ``model`` itself keeps
            the weights (its ``state_dict`` has the plain parameter names).
        num_workers: Loader processes of a streamed split (memory-mapped
            arrays); default `normlab.streaming.loader_workers` (0 on the CPU).
    """
    device = resolve_device(device) if isinstance(device, str) else device
    mixed = resolve_precision(precision, device)
    model.to(device)
    # None: the split streams from its memory map instead (`normlab.streaming`).
    train_t, val_t = _tensors(train), _tensors(val)
    data_device = _data_device([t for pair in (train_t, val_t) if pair is not None for t in pair], device)
    train_t, val_t = (None if p is None else (p[0].to(data_device), p[1].to(data_device)) for p in (train_t, val_t))
    n, n_val = len(train[1]), len(val[1])
    # BatchNorm cannot normalise a batch of one sample in training mode; a
    # trailing singleton batch is skipped rather than crashing the epoch.
    min_batch = 2 if has_batch_stats(model) else 1

    # The shuffling generator stays on the CPU: the same order on every device, and a resumable state.
    generator = torch.Generator().manual_seed(seed)
    # A streamed split's batches are read on the host (pinned on CUDA), in the same order.
    streamed = train_t is None
    sampler = EpochBatches(n, batch_size, generator, min_batch=min_batch, device=None if streamed else data_device)
    train_loader = (batch_loader(MemmapRows(*train), sampler, device=device, seed=seed, num_workers=num_workers)
                    if streamed else None)
    val_loader = (batch_loader(MemmapRows(*val), chunks(n_val, eval_batch_size), device=device, seed=seed,
                               num_workers=num_workers) if val_t is None else None)
    on_host = (torch.device("cpu") if streamed else data_device) != device
    pinned = streamed and device.type == "cuda"
    scaler = mixed.scaler(device)
    result = TrainingResult(history=[])
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
    if ckpt_path is not None and ckpt_path.is_file():
        result = _load_checkpoint(ckpt_path, model, optimizer, generator, scaler=scaler, device=device,
                                  precision=mixed.name)
    step_model = torch.compile(model) if compile else model
    autocast_eval = mixed if mixed.dtype is not None else None
    start_epoch = result.resumed_from_epoch
    # The result is frozen: what the epochs add is kept here, and a result made of it when one is saved or returned.
    history = list(result.history)
    epochs_to_target, seconds_to_target = result.epochs_to_target, result.seconds_to_target
    train_seconds_total, samples_per_second = result.train_seconds, result.samples_per_second

    def current() -> TrainingResult:
        return TrainingResult(history=list(history), epochs_to_target=epochs_to_target,
                              seconds_to_target=seconds_to_target, train_seconds=train_seconds_total,
                              samples_per_second=samples_per_second, resumed_from_epoch=start_epoch)

    last_checkpoint = time.perf_counter()
    unsaved: list[Epoch] = []
    for epoch in range(start_epoch + 1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        totals = _EpochTotals()
        batches = train_loader if streamed else ((train_t[0][idx], train_t[1][idx]) for idx in sampler)
        for xb, yb in batches:
            if on_host:
                xb, yb = xb.to(device, non_blocking=pinned), yb.to(device, non_blocking=pinned)
            optimizer.zero_grad(set_to_none=True)
            with mixed.autocast(device):
                logits = step_model(xb)
                loss = nn.functional.cross_entropy(logits, yb)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            totals.add(loss, logits, yb)
        totals.flush()
        seen = totals.seen
        train_seconds = time.perf_counter() - t0
        val_batches = val_loader if val_t is None else _chunks_of(*val_t, eval_batch_size)
        val_loss, val_acc = _evaluate_loss(step_model, val_batches, n_val, device=device, precision=autocast_eval)
        seconds = time.perf_counter() - t0
        record = Epoch(
            epoch=epoch,
            train_loss=totals.loss_sum / max(seen, 1),
            train_accuracy=totals.correct / max(seen, 1),
            val_loss=val_loss,
            val_accuracy=val_acc,
            seconds=seconds,
        )
        history.append(record)
        unsaved.append(record)
        train_seconds_total += train_seconds
        samples_per_second = seen / train_seconds if train_seconds > 0 else 0.0
        if target_accuracy is not None and epochs_to_target is None and val_acc >= target_accuracy:
            epochs_to_target = epoch
            seconds_to_target = sum(r.seconds for r in history)
        if epoch == epochs or time.perf_counter() - last_checkpoint >= checkpoint_every_seconds:
            if ckpt_path is not None:
                _save_checkpoint(ckpt_path, model, optimizer, generator, current(), epoch, scaler=scaler,
                                 device=device, precision=mixed.name)
            if on_checkpoint is not None:
                on_checkpoint(unsaved)
            unsaved = []
            last_checkpoint = time.perf_counter()
        if on_epoch_end is not None:
            on_epoch_end(record)
    total_seen = len(history) * n
    if train_seconds_total > 0 and history:
        samples_per_second = total_seen / train_seconds_total
    return current()


def _save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    result: TrainingResult,
    epoch: int,
    *,
    scaler: torch.amp.GradScaler | None = None,
    device: torch.device | None = None,
    precision: str = "fp32",
) -> None:
    """Write ``last.pt``: CPU tensors only, so that any device can resume from it; and where and how it trained."""
    state = {
        "epoch": epoch,
        "model": cpu_state_dict(model),
        "optimizer": _to_cpu(optimizer.state_dict()),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "result": result.to_dict(),
        "precision": precision,
        "device": device.type if device is not None else "cpu",
    }
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if device is not None and device.type == "cuda":
        # Dropout on CUDA draws from the device's generator.
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: a crash mid-write never leaves a torn checkpoint.
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    *,
    scaler: torch.amp.GradScaler | None = None,
    device: torch.device | None = None,
    precision: str | None = None,
) -> TrainingResult:
    """Restore the model, optimizer, scaler and RNG states; the result so far, resumed from the checkpoint's epoch.

    The weights are copied into ``model`` where it is, and the optimizer's
    state follows its parameters there. Its ``samples_per_second`` starts
    again at 0 (the next epoch sets it).

    Raises:
        ConfigError: The checkpoint was written in another ``precision``
            (nothing is restored then). A checkpoint from before checkpoints
            recorded it counts as fp16 when it holds a scaler, else is not checked.
    """
    # weights_only: a checkpoint is data, never code.
    state = torch.load(path, map_location="cpu", weights_only=True)
    written = state.get("precision", "fp16" if "scaler" in state else None)
    if precision is not None and written is not None and written != precision:
        raise ConfigError(
            f"checkpoint {path} was written in {written} and cannot resume in {precision} (the epochs it holds were "
            f"trained in {written}): resume it with train.precision={written}, or train into an empty checkpoint folder"
        )
    trained_on = state.get("device")
    if device is not None and trained_on is not None and trained_on != device.type:
        warnings.warn(
            f"checkpoint {path} was written on {trained_on} and resumes on {device.type}: training continues from "
            f"epoch {int(state['epoch'])}, but the later epochs do not repeat an uninterrupted run bit for bit",
            RuntimeWarning, stacklevel=3,
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    if device is not None and device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    saved = state["result"]
    return TrainingResult(
        history=[Epoch(**r) for r in saved["history"]],
        epochs_to_target=saved["epochs_to_target"],
        seconds_to_target=saved["seconds_to_target"],
        train_seconds=saved["train_seconds"],
        resumed_from_epoch=int(state["epoch"]),
    )
