"""Normalization layers: forward and forward+backward time of every registry norm, as a ratio to LayerNorm.

Each norm comes from `normlab.norms.get_norm_layer`, exactly as the models
build it, on feature vectors ``(N, C)`` (MLPs) and on 8x8 channel maps
``(N, C, 8, 8)`` (CNNs), at two widths and three batch sizes. "Forward" is an
inference call (``torch.inference_mode``); "forward+backward" is a training
call that back-propagates a fixed output gradient into the input and the
layer's parameters. Each is timed eager and ``torch.compile``d (one dynamic-shape
compile per norm, layout and pass, so every shape reuses it), on the CPU and,
when ``torch.cuda.is_available()``, on the GPU too. All norms of one shape and
pass are timed in the same interleaved rounds, so their ratio to LayerNorm
(``layer``: ``nn.LayerNorm`` on vectors, ``nn.GroupNorm(1, C)`` on maps) is
measured under the same conditions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench import Size, fmt, target, time_calls, torch_threads

BASELINE = "layer"
# Where our RMSNorm or DyT may not be slower than LayerNorm: geometric mean of
# the ratio over shapes, per layout, pass and mode.
TARGET_RATIO = 1.0

# norms, {layout: (widths, batches)}, modes, rounds, least seconds per round.
_PLAN: dict[str, dict[str, Any]] = {
    "smoke": {"norms": ("layer", "rms", "dyt"), "grid": {"vectors": ((16,), (4,))},
              "modes": ("eager", "compiled"), "compile_norms": ("layer",), "rounds": 1, "min_seconds": 0.001},
    # Compiling costs seconds per norm, layout and pass: the quick suite compiles the three the targets name.
    "quick": {"norms": None, "grid": {"vectors": ((128, 1024), (8, 64, 512)), "maps": ((16, 64), (8, 64, 256))},
              "modes": ("eager", "compiled"), "compile_norms": ("layer", "rms", "dyt"), "rounds": 5,
              "min_seconds": 0.01},
    "full": {"norms": None, "grid": {"vectors": ((128, 1024), (8, 64, 512)), "maps": ((16, 64), (8, 64, 256))},
             "modes": ("eager", "compiled"), "compile_norms": None, "rounds": 9, "min_seconds": 0.03},
}
MAP_SIDE = 8


def _shape(layout: str, batch: int, width: int) -> tuple[int, ...]:
    return (batch, width, MAP_SIDE, MAP_SIDE) if layout == "maps" else (batch, width)


def _calls(layer, x, grad, *, backward: bool) -> Callable[[], object]:
    """One timed call: an inference forward, or a forward and backward into input and parameters."""
    import torch

    if not backward:
        def forward() -> object:
            with torch.inference_mode():
                return layer(x)
        return forward
    xg = x.detach().clone().requires_grad_(True)

    def train_step() -> object:
        out = layer(xg)
        out.backward(grad)
        # Gradients accumulate in place after the first call, as in a training step without zero_grad.
        return out
    return train_step


def _compile_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _measure_device(device: str, plan: dict[str, Any], names: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[str]]:
    import torch

    from normlab.norms import get_norm_layer

    sync = torch.cuda.synchronize if device == "cuda" else None
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    compile_names = plan["compile_norms"] or names
    compile_failed: str | None = None
    for layout, (widths, batches) in plan["grid"].items():
        for mode in plan["modes"]:
            for backward in (False, True):
                if mode == "compiled":
                    # Each group compiles afresh: code compiled for another pass or layout would be
                    # guarded out, and past dynamo's recompile limit a call silently runs eager.
                    torch._dynamo.reset()
                for width in widths:
                    for batch in batches:
                        gen = torch.Generator().manual_seed(0)
                        x = torch.randn(_shape(layout, batch, width), generator=gen).to(device)
                        grad = torch.randn(x.shape, generator=gen).to(device)
                        candidates: dict[str, Callable[[], object]] = {}
                        for name in names:
                            if mode == "compiled" and (name not in compile_names or compile_failed):
                                continue
                            layer = get_norm_layer(name, width, spatial=layout == "maps").to(device)
                            # Inference runs in eval mode (BatchNorm on running statistics), training in train mode.
                            layer.train(backward)
                            if mode == "compiled":
                                # Dynamic shapes: the first shape compiles, the others reuse that code.
                                layer = torch.compile(layer, dynamic=True)
                            candidates[name] = _calls(layer, x, grad, backward=backward)
                        if not candidates:
                            continue
                        try:
                            timings = time_calls(candidates, rounds=plan["rounds"], min_seconds=plan["min_seconds"],
                                                 sync=sync)
                        except Exception as exc:
                            if mode != "compiled":
                                raise
                            compile_failed = _compile_error(exc)
                            notes.append(f"torch.compile unavailable on {device}: {compile_failed}")
                            continue
                        base = timings.get(BASELINE)
                        for name, timing in timings.items():
                            rows.append({
                                "device": device, "layout": layout, "mode": mode,
                                "pass": "forward+backward" if backward else "forward",
                                "norm": name, "width": width, "batch": batch, "shape": list(x.shape),
                                "seconds": timing.median, "low": timing.low, "high": timing.high,
                                "ratio_to_layer": timing.median / base.median if base is not None else None,
                            })
    return rows, notes


def _geomean(values: list[float]) -> float | None:
    import math

    values = [v for v in values if v is not None and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Geometric mean of each norm's ratio to LayerNorm over the shapes, per device, layout, mode and pass."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        key = (r["device"], r["layout"], r["mode"], r["pass"], r["norm"])
        groups.setdefault(key, []).append(r["ratio_to_layer"])
    return [{"device": k[0], "layout": k[1], "mode": k[2], "pass": k[3], "norm": k[4],
             "ratio_to_layer": _geomean(v), "shapes": len(v)} for k, v in groups.items()]


def run(size: Size = "quick", threads: int | None = None) -> dict[str, Any]:
    """Time every norm at every shape, pass and mode; targets: RMSNorm and DyT not slower than LayerNorm."""
    import torch

    from normlab.norms import NORM_NAMES

    plan = _PLAN[size]
    names = tuple(plan["norms"] or NORM_NAMES)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    # Shape guards may recompile a norm once per shape; the default limit of 8 would end in eager runs.
    with torch_threads(threads) as used, torch._dynamo.config.patch(recompile_limit=64):
        for device in devices:
            device_rows, device_notes = _measure_device(device, plan, names)
            rows += device_rows
            notes += device_notes
    summary = summarize(rows)
    table = []
    for s in summary:
        cells = [r for r in rows if (r["device"], r["layout"], r["mode"], r["pass"], r["norm"])
                 == (s["device"], s["layout"], s["mode"], s["pass"], s["norm"])]
        table.append({
            "device": s["device"], "layout": s["layout"], "mode": s["mode"], "pass": s["pass"], "norm": s["norm"],
            "x layer (geomean)": fmt(s["ratio_to_layer"]),
            "us, smallest shape": fmt(min(cells, key=lambda r: r["seconds"])["seconds"] * 1e6),
            "us, largest shape": fmt(max(cells, key=lambda r: r["seconds"])["seconds"] * 1e6),
        })
    targets = [
        target(f"{s['norm']} vs layer, {s['device']} {s['layout']} {s['mode']} {s['pass']} (geomean ratio)",
               s["ratio_to_layer"], at_most=TARGET_RATIO)
        for s in summary if s["norm"] in ("rms", "dyt")
    ]
    notes.insert(0, f"threads={used}; {plan['rounds']} interleaved rounds per shape, medians; ratio = time / "
                    "LayerNorm's time at the same shape, pass and mode (below 1: faster than LayerNorm).")
    return {"rows": rows, "summary": summary, "table": table, "targets": targets, "notes": notes}
