"""Streaming: `normlab.training.train_model` on memory-mapped arrays against the same arrays in memory.

Both sides train the same model (built with the same seed) on the same rows,
batch size, optimizer and thread count; one gets NumPy arrays held in memory
(the fast path: one tensor, batches sliced from it), the other the same arrays
written as ``.npy`` files and memory-mapped (what `normlab.splitting.load_prepared`
returns for splits over ``data.memory_budget_mb``: each batch is read from the
map through a DataLoader, the validation pass in chunks). The data are random
3x32x32 images as rows of 3072 float32 values. A round times one whole
``train_model`` call of each side; model construction is outside the timing.
The files are written just before the rounds, so they sit in the OS page
cache: the ratio measures the cost of reading batches through the map and the
loader, not the disk's throughput.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import Size, fmt, time_rounds, torch_threads

FEATURES = 3 * 32 * 32
CLASSES = 10
BATCH_SIZE = 64

# Per case: (family, training rows, epochs per round); then timed rounds.
_PLAN: dict[str, tuple[list[tuple[str, int, int]], int]] = {
    "smoke": ([("mlp", 512, 1)], 1),
    "quick": ([("mlp", 20_000, 1)], 5),
    "full": ([("mlp", 20_000, 2), ("cnn", 5_000, 1)], 9),
}


def random_images(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` random 3x32x32 images (float32 rows of 3072 values) and random labels of 10 classes."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, FEATURES), dtype=np.float32), rng.integers(0, CLASSES, rows, dtype=np.int64)


def memory_mapped(folder: Path, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` written as .npy files in ``folder`` and mapped back read-only."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    return np.load(folder / "x.npy", mmap_mode="r"), np.load(folder / "y.npy", mmap_mode="r")


def _contestants(family: str, data: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], *, epochs: int,
                 device: str, histories: dict[str, list]) -> dict[str, Callable[[], float]]:
    from normlab.models import build_model
    from normlab.training import make_optimizer, set_seeds, train_model

    def side(name: str) -> Callable[[], float]:
        def call() -> float:
            set_seeds(0)
            extra = {"image_shape": (32, 32), "in_channels": 3} if family == "cnn" else {"hidden": (128,)}
            model = build_model(family, in_features=FEATURES, num_classes=CLASSES, norm="batch", **extra)
            opt = make_optimizer(model.parameters(), "sgd", lr=0.01, momentum=0.9)
            start = time.perf_counter()
            result = train_model(model, opt, data[name]["train"], data[name]["val"], epochs=epochs,
                                 batch_size=BATCH_SIZE, seed=0, device=device)
            seconds = time.perf_counter() - start
            histories[name] = [(r.train_loss, r.train_accuracy, r.val_loss, r.val_accuracy) for r in result.history]
            return seconds

        return call

    return {"in-memory": side("in-memory"), "streaming": side("streaming")}


def run(size: Size = "quick", threads: int | None = None) -> dict[str, Any]:
    """Samples per second of training in memory and streamed from memory maps, and their ratio."""
    import torch

    cases, rounds = _PLAN[size]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    result_rows: list[dict[str, Any]] = []
    with torch_threads(threads) as used, tempfile.TemporaryDirectory(prefix="normlab-bench-stream-") as tmp:
        for family, rows, epochs in cases:
            x, y = random_images(rows + rows // 10)
            train, val = (x[:rows], y[:rows]), (x[rows:], y[rows:])
            data = {"in-memory": {"train": train, "val": val},
                    "streaming": {"train": memory_mapped(Path(tmp) / family / "train", *train),
                                  "val": memory_mapped(Path(tmp) / family / "val", *val)}}
            for device in devices:
                histories: dict[str, list] = {}
                timings = time_rounds(_contestants(family, data, epochs=epochs, device=device, histories=histories),
                                      rounds=rounds)
                memory_sps = epochs * rows / timings["in-memory"].median
                stream_sps = epochs * rows / timings["streaming"].median
                result_rows.append({
                    "family": family, "device": device, "norm": "batch", "batch_size": BATCH_SIZE,
                    "train_rows": rows, "features": FEATURES, "epochs": epochs, "threads": used, "rounds": rounds,
                    "train_mb": round(train[0].nbytes / 2**20, 1),
                    "in_memory_seconds": timings["in-memory"].median,
                    "streaming_seconds": timings["streaming"].median,
                    "in_memory_samples_per_second": memory_sps, "streaming_samples_per_second": stream_sps,
                    "ratio": stream_sps / memory_sps,
                    # The last round of each side: the same numbers when streaming does the same arithmetic.
                    "identical_history": histories["in-memory"] == histories["streaming"],
                    "in_memory_rounds": list(timings["in-memory"].rounds),
                    "streaming_rounds": list(timings["streaming"].rounds),
                })
    table = [{
        "model": r["family"], "device": r["device"], "rows x features": f"{r['train_rows']} x {r['features']}",
        "train MB": r["train_mb"], "batch": r["batch_size"], "threads": r["threads"],
        "in-memory samples/s": fmt(r["in_memory_samples_per_second"], 4),
        "streaming samples/s": fmt(r["streaming_samples_per_second"], 4), "ratio": f"{r['ratio']:.3f}",
        "same history": "yes" if r["identical_history"] else "**no**",
    } for r in result_rows]
    note = (f"{rounds} interleaved rounds of whole train_model calls, medians; ratio = streaming samples/s / "
            "in-memory samples/s (below 1: streaming is slower). The .npy files were just written, so they are "
            "read from the OS page cache, not from the disk.")
    return {"rows": result_rows, "table": table, "targets": [], "notes": [note]}
