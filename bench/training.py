"""Training loop: `normlab.training.train_model` against a minimal hand-written PyTorch loop.

Both sides get the same model (built with the same seed), the same data (the
built-in digits, standardized, the default config's split sizes), batch size,
optimizer, shuffling generator and thread count, so they do the same
arithmetic; only the loop around it differs. The hand-written loop shuffles,
steps, and scores the validation split once per epoch (``train_model`` does
that too, and also records train loss and accuracy, wall times and, in the
pipeline, checkpoints). A round times one whole training call of each side
from tensor conversion to the last validation pass; model construction is
outside the timing. In the "checkpoints" case normlab writes checkpoints as the
pipeline does (``checkpoint.every_seconds``) and the plain side saves its
weights once at the end, as a user's script would.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import Size, fmt, target, time_rounds, torch_threads

TARGET_RATIO = 0.95

# (epochs per round, timed rounds, training rows used: None = all).
_PLAN: dict[str, tuple[int, int, int | None]] = {
    "smoke": (1, 1, 128),
    "quick": (5, 7, None),
    "full": (10, 15, None),
}


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


def hand_loop(model, optimizer, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
              *, epochs: int, batch_size: int, seed: int) -> float:
    """The loop a user writes by hand; returns the last validation accuracy."""
    import torch
    from torch.nn import functional as F

    x, y = torch.as_tensor(train[0]), torch.as_tensor(train[1])
    x_val, y_val = torch.as_tensor(val[0]), torch.as_tensor(val[1])
    generator = torch.Generator().manual_seed(seed)
    accuracy = 0.0
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
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
    """What is compared: the default config's model, its CNN variant, and the pipeline's checkpointing."""
    from normlab.config import PipelineConfig

    cfg = PipelineConfig()
    base = {"norm": cfg.model.norm, "batch_size": cfg.train.batch_size, "lr": cfg.train.lr,
            "momentum": cfg.train.momentum, "checkpoint_every_seconds": cfg.checkpoint.every_seconds}
    return [
        {"case": "mlp", "family": "mlp", "checkpoints": False, **base},
        {"case": "cnn", "family": "cnn", "checkpoints": False, **base},
        {"case": "mlp + checkpoints", "family": "mlp", "checkpoints": True, **base},
    ]


def _contestants(case: dict[str, Any], data: dict[str, tuple[np.ndarray, np.ndarray]], *, epochs: int,
                 scratch: Path) -> dict[str, Callable[[], float]]:
    import torch

    from normlab.models import build_model
    from normlab.training import make_optimizer, set_seeds, train_model

    def fresh():
        set_seeds(0)
        model = build_model(case["family"], in_features=64, num_classes=10, norm=case["norm"], image_shape=(8, 8))
        opt = make_optimizer(model.parameters(), "sgd", lr=case["lr"], momentum=case["momentum"])
        return model, opt

    def baseline() -> float:
        model, opt = fresh()
        start = time.perf_counter()
        hand_loop(model, opt, data["train"], data["val"], epochs=epochs, batch_size=case["batch_size"], seed=0)
        if case["checkpoints"]:
            # What a user's script persists: the weights, once, at the end.
            torch.save(model.state_dict(), scratch / "weights.pt")
        return time.perf_counter() - start

    counter = itertools.count()

    def normlab() -> float:
        model, opt = fresh()
        extra: dict[str, Any] = {}
        if case["checkpoints"]:
            # A new folder each round: an existing checkpoint would be resumed from.
            extra = {"checkpoint_dir": scratch / f"ckpt-{next(counter)}",
                     "checkpoint_every_seconds": case["checkpoint_every_seconds"]}
        start = time.perf_counter()
        train_model(model, opt, data["train"], data["val"], epochs=epochs, batch_size=case["batch_size"],
                    seed=0, **extra)
        return time.perf_counter() - start

    return {"baseline": baseline, "normlab": normlab}


def run(size: Size = "quick", threads: int | None = None) -> dict[str, Any]:
    """Samples per second of both loops on each case, and their ratio (target >= 0.95)."""
    epochs, rounds, rows = _PLAN[size]
    data = digits_arrays(rows)
    n_train = len(data["train"][1])
    result_rows: list[dict[str, Any]] = []
    with torch_threads(threads) as used, tempfile.TemporaryDirectory(prefix="normlab-bench-") as tmp:
        for case in _cases():
            timings = time_rounds(_contestants(case, data, epochs=epochs, scratch=Path(tmp)), rounds=rounds)
            base_sps = epochs * n_train / timings["baseline"].median
            ours_sps = epochs * n_train / timings["normlab"].median
            result_rows.append({
                "case": case["case"], "family": case["family"], "norm": case["norm"],
                "batch_size": case["batch_size"], "epochs": epochs, "train_rows": n_train, "threads": used,
                "rounds": rounds, "baseline_seconds": timings["baseline"].median,
                "normlab_seconds": timings["normlab"].median,
                "baseline_samples_per_second": base_sps, "normlab_samples_per_second": ours_sps,
                "ratio": ours_sps / base_sps,
                "baseline_rounds": list(timings["baseline"].rounds), "normlab_rounds": list(timings["normlab"].rounds),
            })
    table = [{
        "case": r["case"], "norm": r["norm"], "batch": r["batch_size"], "threads": r["threads"],
        "plain samples/s": fmt(r["baseline_samples_per_second"], 4),
        "normlab samples/s": fmt(r["normlab_samples_per_second"], 4), "ratio": f"{r['ratio']:.3f}",
    } for r in result_rows]
    targets = [target(f"training loop, {r['case']}: samples/s vs plain loop", r["ratio"], at_least=TARGET_RATIO)
               for r in result_rows]
    note = (f"{epochs} epochs of {n_train} digits rows per round, {rounds} interleaved rounds, medians; "
            "ratio = normlab samples/s / plain-loop samples/s.")
    return {"rows": result_rows, "table": table, "targets": targets, "notes": [note]}
