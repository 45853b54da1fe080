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

The memory case runs the data gate (which decodes the accepted image files
into ``pixels.parquet``) and the split stage on one folder of generated
32x32 RGB shapes, once under ``data.memory_budget_mb`` (all rows in memory)
and once over a small budget (a chunk at a time), each in a fresh process. It
reports the peak resident memory of that work above the process's resident
memory before it (the scan of the folder and the imports excluded), and
their ratio; with a corruption split the chunked side also holds the ID test
split's features while the corruptions run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import REPO, Size, fmt, time_rounds, torch_threads

FEATURES = 3 * 32 * 32
CLASSES = 10
BATCH_SIZE = 64

# Per case: (family, training rows, epochs per round); then timed rounds.
_PLAN: dict[str, tuple[list[tuple[str, int, int]], int]] = {
    "smoke": ([("mlp", 512, 1)], 1),
    "quick": ([("mlp", 20_000, 1)], 5),
    "full": ([("mlp", 20_000, 2), ("cnn", 5_000, 1)], 9),
}


# Decode + prepare: (images, budget of the chunked side in MiB) per size; the other side has the default budget.
_MEMORY_PLAN: dict[str, tuple[int, float]] = {"smoke": (100, 0.5), "quick": (8000, 32.0), "full": (24_000, 64.0)}
_CORRUPTION = {"name": "noise", "kind": "corruption", "corruption": "gaussian_noise", "severity": [1, 3]}
_WARMUP = 30  # images of the warm-up run in each measuring process
_CHILD = ("import json, sys; from bench.streaming import measure_prepare; "
          "print(json.dumps(measure_prepare(*json.loads(sys.argv[1]))))")


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


def _rss_mib(field: str) -> float | None:
    """``VmRSS`` or ``VmHWM`` (the peak since the last reset) of this process in MiB; None off Linux."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) / 1024 for line in lines if line.startswith(f"{field}:")), None)


def measure_prepare(folder: str, warmup: str, workdir: str, budget_mb: float, corruption: bool) -> dict[str, Any]:
    """In this process: the gate (decoding) and the split stage on an image folder; peak memory above the start.

    The same work first runs on the small ``warmup`` folder (the modules it
    imports and the caches it fills are not the data's), and the folder is
    scanned (``load_batch``); then the peak resident size is reset
    (``/proc/self/clear_refs``) and the gate and ``prepare_splits`` run.
    """
    import gc

    from normlab import pipeline, splitting
    from normlab.config import PipelineConfig
    from normlab.gate import GateScope, run_gate

    def config(path: str, name: str, budget: float) -> PipelineConfig:
        return PipelineConfig.model_validate({
            "name": name, "workdir": str(Path(workdir) / name),
            "data": {"path": path, "image_shape": [32, 32], "scale": "global", "memory_budget_mb": budget},
            "splits": {"ood": [_CORRUPTION] if corruption else []}, "model": {"family": "cnn"},
        })

    def scanned(cfg: PipelineConfig) -> tuple[Path, Any]:
        run_dir = Path(cfg.workdir) / "run"
        run_dir.mkdir(parents=True)
        return run_dir, pipeline.load_batch(cfg.data, run_dir)

    def gate_and_prepare(cfg: PipelineConfig, run_dir: Path, batch: Any) -> tuple[Any, Any]:
        gate = run_gate(GateScope.from_config(cfg), batch, run_dir)
        return gate, splitting.prepare_splits(cfg.data, cfg.splits, cfg.eval, cfg.seed, gate.accepted, run_dir)

    # The warm-up takes the same path: over a budget its few images pass too, or under the default one.
    warm = config(warmup, "warmup", budget_mb if budget_mb >= 1024 else 0.1)
    gate_and_prepare(warm, *scanned(warm))
    cfg = config(folder, "measured", budget_mb)
    run_dir, batch = scanned(cfg)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    start_mib, began = _rss_mib("VmRSS"), time.perf_counter()
    gate, prepared = gate_and_prepare(cfg, run_dir, batch)
    seconds, peak_mib = time.perf_counter() - began, _rss_mib("VmHWM")
    encoded = sum(x.nbytes + y.nbytes for x, y in splitting.load_prepared(prepared).values())
    return {"peak_mib": peak_mib - start_mib, "start_mib": start_mib, "seconds": seconds,
            "streamed": Path(prepared.path).is_dir(), "rows": gate.rows_accepted, "encoded_mib": encoded / 2**20}


def _memory_rows(size: Size) -> list[dict[str, Any]]:
    """Each side of the memory case in a fresh process: (corruption split or not) x (under, over the budget)."""
    from normlab.data.image_folders import write_image_folder
    from normlab.data.shapes import generate_shapes

    images, budget = _MEMORY_PLAN[size]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="normlab-bench-prepare-") as tmp:
        folder, warmup = Path(tmp) / "shapes", Path(tmp) / "warmup"
        pictures, labels, names = generate_shapes(images, size=32, seed=0)
        write_image_folder(folder, pictures, labels, names)
        write_image_folder(warmup, pictures[:_WARMUP], labels[:_WARMUP], names)
        for corruption in (False, True):
            sides = {}
            for name, side_budget in (("in memory", 1024.0), ("chunked", budget)):
                work = Path(tmp) / f"{name}-{corruption}"
                args = json.dumps([str(folder), str(warmup), str(work), side_budget, corruption])
                done = subprocess.run([sys.executable, "-c", _CHILD, args], capture_output=True, text=True, check=True,
                                      cwd=REPO)
                sides[name] = json.loads(done.stdout.strip().splitlines()[-1]) | {"budget_mb": side_budget}
            memory, chunked = sides["in memory"], sides["chunked"]
            rows.append({"images": images, "ood": "gaussian_noise s1, s3" if corruption else "none",
                         "encoded_mib": memory["encoded_mib"], "in_memory": memory, "chunked": chunked,
                         "ratio": chunked["peak_mib"] / memory["peak_mib"]})
    return rows


def run(size: Size = "quick", threads: int | None = None) -> dict[str, Any]:
    """Samples per second of training in memory and streamed from memory maps, and their ratio; decode + prepare memory."""
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
    memory = _memory_rows(size)
    memory_table = [{
        "images (32x32 RGB)": r["images"], "OOD splits": r["ood"], "encoded MiB": f"{r['encoded_mib']:.1f}",
        "in-memory peak MiB": f"{r['in_memory']['peak_mib']:.1f}",
        "chunked budget MiB": r["chunked"]["budget_mb"], "chunked peak MiB": f"{r['chunked']['peak_mib']:.1f}",
        "ratio": f"{r['ratio']:.3f}", "in-memory s": f"{r['in_memory']['seconds']:.1f}",
        "chunked s": f"{r['chunked']['seconds']:.1f}",
    } for r in memory]
    memory_note = ("Decode + prepare: the data gate (decoding into pixels.parquet) and the split stage, each side in a "
                   "fresh process; peak resident memory above the process's memory before that work (VmHWM reset "
                   "through /proc/self/clear_refs), ratio = chunked / in memory. Under the default budget everything "
                   "is in memory; over the small one it is read, encoded and written a chunk at a time.")
    return {"rows": result_rows, "table": table, "memory": memory,
            "tables": {"decode + prepare, peak memory": memory_table}, "targets": [], "notes": [note, memory_note]}
