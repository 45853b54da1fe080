"""Training loop: `normlab.training.train_model` against a minimal hand-written PyTorch loop.

Both sides get the same model (built with the same seed), the same data (the
built-in digits, standardized, the default config's split sizes), batch size,
optimizer, shuffling generator and thread count, so they do the same
arithmetic; only the loop around it differs. The hand-written loop shuffles,
steps, and scores the validation split once per epoch (``train_model`` does
that too, and also records train loss and accuracy, wall times and, in the
pipeline, checkpoints). Each call is timed from tensor conversion to the last
validation pass; model construction is outside the timing. A round of the
digits cases is several whole training calls of each side, the sides taking
turns call by call (`interleaved_rounds`); a round of the image cases is one. In the "checkpoints" case normlab writes checkpoints as the
pipeline does (``checkpoint.every_seconds``) and the plain side saves its
weights once at the end, as a user's script would.

The ``resnet`` and ``vit`` cases train the image families on generated 32x32
RGB images (`normlab.data.shapes`; seeded random pixels where that module does
not import: the arithmetic, and so the speed, is the same on any pixels). When
``torch.cuda.is_available()`` every case runs on CUDA as well, as separate rows:
``train_model(device="cuda")`` against the hand-written loop moving the model
and data to the GPU, both clocks stopped after ``torch.cuda.synchronize()``.
Without CUDA those rows and targets say ``cuda: not available``.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import Size, Timing, fmt, target, torch_threads

TARGET_RATIO = 0.95

# The digits cases: (epochs per call, calls per side per round, timed rounds, training rows used: None = all).
# A 5-epoch call of the MLP takes about 70 ms, and on a shared 2-core machine the speed changes faster than
# that: with one call per side per round and 7 rounds, the same code gave ratios from 0.55 to 1.43 in
# back-to-back repetitions. Five calls per side per round, the sides taking turns call by call, put each
# slow phase on both sides; with 15 rounds ten repetitions stayed within 0.92-1.00 (about 10 s for the MLP,
# 40 s for the CNN in the quick plan).
_PLAN: dict[str, tuple[int, int, int, int | None]] = {
    "smoke": (1, 1, 1, 128),
    "quick": (5, 5, 15, None),
    "full": (10, 5, 21, None),
}

# The image families: (epochs per round, timed rounds, training rows, validation rows). One epoch
# of 2000 rows takes about 3 s (vit) to 6 s (resnet) per side on one thread of a shared 2-core
# machine, whose load makes single rounds vary by up to 2x: more rounds, not more epochs per
# round, steady the medians. The quick plan (8 rounds with the warm-up) takes about 2.5 minutes.
_IMAGE_PLAN: dict[str, tuple[int, int, int, int]] = {
    "smoke": (1, 1, 128, 64),
    "quick": (1, 7, 2000, 300),
    "full": (1, 15, 2000, 300),
}
IMAGE_SIZE = 32
IMAGE_CHANNELS = 3


def digits_arrays(rows: int | None = None, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The built-in digits, standardized on the training rows, split 70/15/15 like the default config."""
    from normlab.data.sources import load_builtin

    frame = load_builtin("digits")
    x = frame.drop(columns="label").to_numpy(np.float32)
    y = frame["label"].to_numpy(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = n_test = round(0.15 * len(x))
    parts = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    if rows is not None:
        parts = {k: v[:rows] for k, v in parts.items()}
    mean, std = x[parts["train"]].mean(0), x[parts["train"]].std(0)
    std[std == 0] = 1.0
    return {k: ((x[idx] - mean) / std, y[idx]) for k, idx in parts.items()}


def shapes_arrays(train_rows: int, val_rows: int, seed: int = 0) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    """32x32 RGB images, flat in ``(C, H, W)`` order and standardized per channel on the training rows.

    Returns the train and val arrays and where the pixels came from:
    `normlab.data.shapes.generate_shapes` when it imports, else seeded random
    ``uint8`` images with random labels.
    """
    n = train_rows + val_rows
    try:
        from normlab.data.shapes import generate_shapes
    except ImportError:
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, (n, IMAGE_SIZE, IMAGE_SIZE, IMAGE_CHANNELS), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.int64)
        source = "seeded random uint8 images (normlab.data.shapes did not import)"
    else:
        images, labels, _ = generate_shapes(n, size=IMAGE_SIZE, seed=seed)
        source = "normlab.data.shapes.generate_shapes"
    x = images.transpose(0, 3, 1, 2).astype(np.float32)  # HWC -> CHW, the layout the image families read
    mean = x[:train_rows].mean(axis=(0, 2, 3), keepdims=True)
    std = x[:train_rows].std(axis=(0, 2, 3), keepdims=True)
    std[std == 0] = 1.0
    x = ((x - mean) / std).reshape(n, -1)
    return {"train": (x[:train_rows], labels[:train_rows]), "val": (x[train_rows:], labels[train_rows:])}, source


def hand_loop(model, optimizer, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
              *, epochs: int, batch_size: int, seed: int, device: str = "cpu") -> float:
    """The loop a user writes by hand; returns the last validation accuracy.

    On ``device`` the model and the whole arrays are moved there once (the
    optimizer's parameters move with the model); the shuffling generator stays
    on the CPU, as in ``train_model``.
    """
    import torch
    from torch.nn import functional as F

    model.to(device)
    x, y = torch.as_tensor(train[0]).to(device), torch.as_tensor(train[1]).to(device)
    x_val, y_val = torch.as_tensor(val[0]).to(device), torch.as_tensor(val[1]).to(device)
    generator = torch.Generator().manual_seed(seed)
    accuracy = 0.0
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator).to(device)
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
    return accuracy


def _cases() -> list[dict[str, Any]]:
    """What is compared: the default config's model, its CNN variant, the pipeline's checkpointing, and the
    ResNet and ViT families on 32x32 RGB images."""
    from normlab.config import PipelineConfig

    cfg = PipelineConfig()
    base = {"batch_size": cfg.train.batch_size, "lr": cfg.train.lr, "momentum": cfg.train.momentum,
            "checkpoint_every_seconds": cfg.checkpoint.every_seconds, "checkpoints": False}
    digits = {"data": "digits", "in_features": 64, "image_shape": (8, 8), "in_channels": 1}
    images = {"data": "shapes", "in_features": IMAGE_CHANNELS * IMAGE_SIZE * IMAGE_SIZE,
              "image_shape": (IMAGE_SIZE, IMAGE_SIZE), "in_channels": IMAGE_CHANNELS}
    return [
        {"case": "mlp", "family": "mlp", "norm": cfg.model.norm, "model": {}, **digits, **base},
        {"case": "cnn", "family": "cnn", "norm": cfg.model.norm, "model": {}, **digits, **base},
        {"case": "mlp + checkpoints", "family": "mlp", "norm": cfg.model.norm, "model": {}, **digits,
         **base, "checkpoints": True},
        {"case": "resnet", "family": "resnet", "norm": "batch", "model": {"channels": (16, 32, 64), "blocks": 1},
         **images, **base},
        {"case": "vit", "family": "vit", "norm": "layer",
         "model": {"patch_size": 4, "width": 64, "depth": 2, "heads": 4}, **images, **base},
    ]


def _contestants(case: dict[str, Any], data: dict[str, tuple[np.ndarray, np.ndarray]], *, epochs: int,
                 scratch: Path, device: str = "cpu",
                 accuracies: dict[str, float] | None = None) -> dict[str, Callable[[], float]]:
    """The two timed calls of ``case`` on ``device``; each returns its own seconds.

    ``accuracies`` (when given) receives each side's last validation accuracy:
    the same arithmetic gives the same number on both sides.
    """
    import torch

    from normlab.models import build_model
    from normlab.training import make_optimizer, set_seeds, train_model

    seen = accuracies if accuracies is not None else {}
    # CUDA calls return before their kernels finish: wait for them before each clock is read.
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def fresh():
        set_seeds(0)
        model = build_model(case["family"], in_features=case["in_features"], num_classes=10, norm=case["norm"],
                            image_shape=case["image_shape"], in_channels=case["in_channels"], **case["model"])
        opt = make_optimizer(model.parameters(), "sgd", lr=case["lr"], momentum=case["momentum"])
        return model, opt

    def baseline() -> float:
        model, opt = fresh()
        sync()
        start = time.perf_counter()
        seen["baseline"] = hand_loop(model, opt, data["train"], data["val"], epochs=epochs,
                                     batch_size=case["batch_size"], seed=0, device=device)
        if case["checkpoints"]:
            # What a user's script persists: the weights, once, at the end.
            torch.save(model.state_dict(), scratch / "weights.pt")
        sync()
        return time.perf_counter() - start

    counter = itertools.count()

    def normlab() -> float:
        model, opt = fresh()
        extra: dict[str, Any] = {}
        if case["checkpoints"]:
            # A new folder each round: an existing checkpoint would be resumed from.
            extra = {"checkpoint_dir": scratch / f"ckpt-{next(counter)}",
                     "checkpoint_every_seconds": case["checkpoint_every_seconds"]}
        if device != "cpu":
            extra["device"] = device
        sync()
        start = time.perf_counter()
        result = train_model(model, opt, data["train"], data["val"], epochs=epochs, batch_size=case["batch_size"],
                             seed=0, **extra)
        sync()
        seconds = time.perf_counter() - start
        seen["normlab"] = result.history[-1].val_accuracy
        return seconds

    return {"baseline": baseline, "normlab": normlab}


def interleaved_rounds(candidates: dict[str, Callable[[], float]], *, rounds: int, calls: int = 1,
                       warmup: int = 1) -> dict[str, Timing]:
    """`bench.time_rounds` with ``calls`` self-timed calls of each candidate per round, summed.

    The candidates take turns call by call (A B, B A, A B, ...), so a slow phase
    of a shared machine shorter than a round falls on every candidate of that
    round alike instead of on whichever ran then. ``calls=1`` is `bench.time_rounds`.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    names = list(candidates)
    times: dict[str, list[float]] = {name: [] for name in names}
    turn = 0
    for _ in range(rounds):
        spent = dict.fromkeys(names, 0.0)
        for _ in range(calls):
            for name in names if turn % 2 == 0 else reversed(names):
                spent[name] += float(candidates[name]())
            turn += 1
        for name in names:
            times[name].append(spent[name])
    return {name: Timing(tuple(values)) for name, values in times.items()}


def cuda_unavailable_reason() -> str | None:
    """None when torch sees a CUDA device; else why not, starting with 'cuda: not available'."""
    import torch

    if torch.cuda.is_available():
        return None
    built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
    return f"cuda: not available (torch {torch.__version__}, {built}, no CUDA device seen)"


def _target_name(case: str, device: str) -> str:
    where = case if device == "cpu" else f"{case} ({device})"
    return f"training loop, {where}: samples/s vs plain loop"


def run(size: Size = "quick", threads: int | None = None) -> dict[str, Any]:
    """Samples per second of both loops on each case and device, and their ratio (target >= 0.95)."""
    epochs, calls, rounds, rows = _PLAN[size]
    img_epochs, img_rounds, img_train, img_val = _IMAGE_PLAN[size]
    shapes, shapes_source = shapes_arrays(img_train, img_val)
    datasets = {"digits": (digits_arrays(rows), epochs, calls, rounds),
                "shapes": (shapes, img_epochs, 1, img_rounds)}
    no_cuda = cuda_unavailable_reason()
    devices = ["cpu"] if no_cuda else ["cpu", "cuda"]
    result_rows: list[dict[str, Any]] = []
    with torch_threads(threads) as used, tempfile.TemporaryDirectory(prefix="normlab-bench-") as tmp:
        for device in devices:
            for case in _cases():
                data, n_epochs, n_calls, n_rounds = datasets[case["data"]]
                n_train = len(data["train"][1])
                accuracies: dict[str, float] = {}
                contestants = _contestants(case, data, epochs=n_epochs, scratch=Path(tmp), device=device,
                                           accuracies=accuracies)
                timings = interleaved_rounds(contestants, rounds=n_rounds, calls=n_calls)
                # A round is n_calls whole training calls of n_epochs each.
                base_sps = n_calls * n_epochs * n_train / timings["baseline"].median
                ours_sps = n_calls * n_epochs * n_train / timings["normlab"].median
                result_rows.append({
                    "case": case["case"], "device": device, "family": case["family"], "norm": case["norm"],
                    "model": {k: list(v) if isinstance(v, tuple) else v for k, v in case["model"].items()},
                    "data": case["data"], "in_features": case["in_features"],
                    "batch_size": case["batch_size"], "epochs": n_epochs, "calls_per_round": n_calls,
                    "train_rows": n_train,
                    "val_rows": len(data["val"][1]), "threads": used, "rounds": n_rounds,
                    "baseline_seconds": timings["baseline"].median, "normlab_seconds": timings["normlab"].median,
                    "baseline_samples_per_second": base_sps, "normlab_samples_per_second": ours_sps,
                    "ratio": ours_sps / base_sps,
                    "baseline_val_accuracy": accuracies["baseline"], "normlab_val_accuracy": accuracies["normlab"],
                    "baseline_rounds": list(timings["baseline"].rounds),
                    "normlab_rounds": list(timings["normlab"].rounds),
                })
    table = [{
        "case": r["case"], "device": r["device"], "norm": r["norm"], "batch": r["batch_size"], "threads": r["threads"],
        "plain samples/s": fmt(r["baseline_samples_per_second"], 4),
        "normlab samples/s": fmt(r["normlab_samples_per_second"], 4), "ratio": f"{r['ratio']:.3f}",
    } for r in result_rows]
    targets = [target(_target_name(r["case"], r["device"]), r["ratio"], at_least=TARGET_RATIO) for r in result_rows]
    cases = [c["case"] for c in _cases()]
    if no_cuda:
        # Said, not left out: a reader must not take missing cuda rows for a forgotten case.
        table += [{"case": case, "device": "cuda", "norm": "", "batch": "", "threads": "", "plain samples/s": "-",
                   "normlab samples/s": "-", "ratio": "cuda: not available"} for case in cases]
        targets += [target(_target_name(case, "cuda"), None, at_least=TARGET_RATIO, why_not=no_cuda)
                    for case in cases]
    n_digits = len(datasets["digits"][0]["train"][1])
    notes = [
        f"mlp, cnn: per round, {calls} training calls of {epochs} epochs of {n_digits} digits rows on each side, "
        f"the sides taking turns call by call; {rounds} rounds, medians; "
        "ratio = normlab samples/s / plain-loop samples/s.",
        f"resnet (channels 16, 32, 64; 1 block per stage; BatchNorm), vit (patch 4, width 64, depth 2, 4 heads, "
        f"LayerNorm, pre-norm): {img_epochs} epoch(s) of {img_train} 32x32 RGB images ({shapes_source}) per round, "
        f"{img_val} validation rows, {img_rounds} interleaved rounds, medians.",
        no_cuda or "cuda: every case also ran on the GPU (model and data moved there once; clocks read after "
                   "torch.cuda.synchronize()).",
    ]
    return {"rows": result_rows, "table": table, "targets": targets, "notes": notes,
            "cuda": "not available" if no_cuda else "measured"}
