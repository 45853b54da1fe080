"""Inference: batch-1 latency and batch-256 throughput of the CNN and the MLP with each norm.

Models are built exactly as the pipeline builds them for the digits (64
features, 10 classes, default widths), in eval mode, with seeded weights
(training changes the values, not the work). Variants, made with the
project's own `normlab.inference` helpers:

- ``eager``: the model as trained;
- ``folded``: each BatchNorm folded into the Linear/Conv before it
  (`normlab.inference.fold_batchnorm`), for the norms that have one;
- ``int8``: dynamic int8 quantization of the Linear layers
  (`normlab.inference.quantize_int8`), of the folded model where there is one.

The baseline of each family is the same model with norm ``none`` (eager). All
variants of a family are timed in the same interleaved rounds: latency as the
median of single-row calls, throughput as rows per second at 256 rows per call
(median of rounds).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from bench import Size, fmt, target, time_calls, torch_threads

TARGET_RATIO = 1.05
THROUGHPUT_BATCH = 256

# norms, rounds, single-row calls per round, least seconds per throughput round.
_PLAN: dict[str, dict[str, Any]] = {
    "smoke": {"norms": ("none", "batch", "layer"), "rounds": 1, "calls": 5, "min_seconds": 0.001},
    "quick": {"norms": None, "rounds": 7, "calls": 60, "min_seconds": 0.02},
    "full": {"norms": None, "rounds": 15, "calls": 100, "min_seconds": 0.05},
}


def latency_samples(models: dict[str, Callable[[Any], object]], rows, *, rounds: int, calls: int) -> dict[str, list[float]]:
    """Seconds of every single-row call of each model, the models interleaved round by round."""
    import torch

    samples: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    with torch.inference_mode():
        for name in names:  # warm-up: first calls allocate and pick kernels
            for i in range(10):
                models[name](rows[i % len(rows)])
        for r in range(rounds):
            for name in names if r % 2 == 0 else reversed(names):
                model = models[name]
                for i in range(calls):
                    row = rows[(r * calls + i) % len(rows)]
                    start = time.perf_counter()
                    model(row)
                    samples[name].append(time.perf_counter() - start)
    return samples


def _variants(family: str, norm: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The eager, folded and int8 models of one family and norm, and what could not be made."""
    import torch

    from normlab.inference import count_batchnorm, fold_batchnorm, quantize_int8
    from normlab.models import build_model

    torch.manual_seed(0)
    model = build_model(family, in_features=64, num_classes=10, norm=norm, image_shape=(8, 8)).eval()
    variants: dict[str, Any] = {"eager": model}
    notes: dict[str, Any] = {}
    if count_batchnorm(model):
        variants["folded"] = fold_batchnorm(model)
    quantized, why = quantize_int8(variants.get("folded", model))
    if quantized is not None:
        variants["int8"] = quantized
    else:
        notes["int8"] = why
    return variants, notes


def run(size: Size = "quick", threads: int | None = None) -> dict[str, Any]:
    """Latency and throughput of every family, norm and variant; target: folded BN <= 1.05x of norm none."""
    import torch

    from normlab.inference import max_abs_diff
    from normlab.norms import NORM_NAMES

    plan = _PLAN[size]
    norms = tuple(plan["norms"] or NORM_NAMES)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 64, generator=gen)
    single_rows = [x[i:i + 1] for i in range(len(x))]
    batch = x[:THROUGHPUT_BATCH]
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    targets: list[dict[str, Any]] = []
    with torch_threads(threads) as used:
        for family in ("mlp", "cnn"):
            models: dict[str, Any] = {}
            for norm in norms:
                variants, why = _variants(family, norm)
                for variant, model in variants.items():
                    models[f"{norm}/{variant}"] = model
                for variant, reason in why.items():
                    notes.append(f"{family} {norm} {variant}: not measured ({reason})")
            calls = {name: (lambda m=model: m(batch)) for name, model in models.items()}
            with torch.inference_mode():
                throughput = time_calls(calls, rounds=plan["rounds"], min_seconds=plan["min_seconds"])
            latency = latency_samples(models, single_rows, rounds=plan["rounds"], calls=plan["calls"])
            base_p50 = statistics.median(latency["none/eager"])
            base_batch = throughput["none/eager"].median
            for name, model in models.items():
                norm, variant = name.split("/")
                p50 = statistics.median(latency[name])
                row = {
                    "family": family, "norm": norm, "variant": variant, "threads": used,
                    "p50_ms": p50 * 1e3, "rows_per_second": THROUGHPUT_BATCH / throughput[name].median,
                    "latency_ratio_to_none": p50 / base_p50,
                    "batch_time_ratio_to_none": throughput[name].median / base_batch,
                }
                if variant == "folded":
                    row["max_abs_diff_to_eager"] = max_abs_diff(models[f"{norm}/eager"], model, x.numpy())
                rows.append(row)
            folded = next((r for r in rows if r["family"] == family and r["variant"] == "folded"), None)
            if folded is not None:
                targets.append(target(f"{family}: folded BatchNorm batch-1 p50 latency vs norm none",
                                      folded["latency_ratio_to_none"], at_most=TARGET_RATIO))
                targets.append(target(f"{family}: folded BatchNorm batch-{THROUGHPUT_BATCH} time vs norm none",
                                      folded["batch_time_ratio_to_none"], at_most=TARGET_RATIO))
    table = [{
        "model": r["family"], "norm": r["norm"], "variant": r["variant"],
        "p50 ms (batch 1)": fmt(r["p50_ms"]), "x none": f"{r['latency_ratio_to_none']:.2f}",
        f"rows/s (batch {THROUGHPUT_BATCH})": fmt(r["rows_per_second"], 4),
        "time x none": f"{r['batch_time_ratio_to_none']:.2f}",
    } for r in rows]
    notes.insert(0, f"threads={used}; {plan['rounds']} interleaved rounds; latency = median of "
                    f"{plan['rounds'] * plan['calls']} single-row calls; ratios against the same family with "
                    "norm none, eager (below 1: faster).")
    return {"rows": rows, "table": table, "targets": targets, "notes": notes}
