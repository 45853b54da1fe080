"""Normalization at inference: BatchNorm folding, int8, latency, and test-time adaptation.

- Folding: each Linear/Conv followed by BatchNorm becomes one layer (PyTorch's
  ``fuse_linear_bn_eval``/``fuse_conv_bn_eval``, or ``torch.fx`` fusion outside
  ``nn.Sequential`` blocks) with
  ``W' = W * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``.
  The folded model must reproduce the original's outputs to ``fold_tolerance``;
  the largest difference is measured on real rows and reported.
- int8: dynamic quantization of the Linear layers
  (``torch.ao.quantization.quantize_dynamic``) of the folded model. Where this
  build of PyTorch cannot quantize, the variant is skipped and the reason kept.
- Timing: median and 95th percentile of single-row calls, and rows per second
  at a large batch, with a bounded number of calls so a run stays fast.
- Test-time adaptation (AdaBN; Schneider et al. 2020): a copy of the model
  whose BatchNorm statistics are re-estimated on the shifted data.

Metric keys: wall-clock figures under ``time/infer/<variant>/`` (they vary run
to run: ``p50_ms``, ``p95_ms``, ``rows_per_second``), everything else under
``infer/<variant>/`` (``size_bytes``, ``max_abs_diff``, ``accuracy``,
``accuracy_delta``, ``size_ratio``), with variants ``eager``, ``folded`` and
``int8``.
"""

from __future__ import annotations

import copy
import io
import time
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from normlab.norms import has_batch_stats

_WARMUP = 10
_THROUGHPUT_CALLS = 10


# Batch-1 latency of the eager model, the key sweeps and reports compare norms by.
LATENCY_KEY = "time/infer/eager/p50_ms"


def adapt_batchnorm(model: nn.Module, x: np.ndarray, *, batch_size: int = 512) -> nn.Module:
    """A copy of ``model`` whose BatchNorm statistics are re-estimated on ``x`` (AdaBN).

    The running statistics are reset and recomputed as the average over
    batches of ``x`` (momentum ``None``), with every other layer in eval mode
    and no parameter changed.

    Raises:
        ValueError: ``x`` has fewer than 2 rows.

    Args:
        model: A trained model; it is not modified.
        x: The shifted rows (features as the model takes them).
        batch_size: Rows per statistics batch.

    Returns:
        The adapted copy, in eval mode.
    """
    if len(x) < 2:
        raise ValueError(f"re-estimating BatchNorm statistics needs at least 2 rows, got {len(x)}")
    adapted = copy.deepcopy(model).eval()
    layers = [m for m in adapted.modules() if isinstance(m, _BatchNorm)]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    xt = torch.as_tensor(x, dtype=torch.float32)
    # Near-equal batches: the average of batch means is then the mean over all rows,
    # and no batch is a single row (which training-mode BatchNorm rejects).
    with torch.no_grad():
        for chunk in torch.tensor_split(xt, -(-len(xt) // batch_size)):
            adapted(chunk)
    for layer in layers:
        layer.eval()
    return adapted


# (layer, BatchNorm) pairs folded in place, as torch.fx.experimental.optimization.fuse pairs them.
_FOLDABLE = ((nn.Conv1d, nn.BatchNorm1d), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d),
             (nn.Linear, nn.BatchNorm1d))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with each BatchNorm folded into the layer before it.

    A Linear/Conv followed by its BatchNorm inside an ``nn.Sequential`` (every
    normlab model) is replaced in place by the fused layer and an
    ``nn.Identity``, so the copy keeps the eager module structure and runs like
    the same model built with norm ``none`` (an fx ``GraphModule`` adds about a
    third to a small model's batch-1 latency; see ``bench/inference.py``). Any
    BatchNorm left over, in other layouts, goes through
    ``torch.fx.experimental.optimization.fuse``.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    folded = copy.deepcopy(model).eval()
    for block in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(block) - 1):
            layer, norm = block[i], block[i + 1]
            if not _folds_into(layer, norm):
                continue
            fold = fuse_linear_bn_eval if isinstance(layer, nn.Linear) else fuse_conv_bn_eval
            block[i], block[i + 1] = fold(layer, norm), nn.Identity()
    if count_batchnorm(folded):
        from torch.fx.experimental.optimization import fuse

        folded = fuse(folded)
    return folded


def _folds_into(layer: nn.Module, norm: nn.Module) -> bool:
    """True when ``norm`` is a BatchNorm with running statistics that folds into ``layer``."""
    return any(isinstance(layer, a) and type(norm) is b for a, b in _FOLDABLE) and bool(norm.track_running_stats)


def count_batchnorm(model: nn.Module) -> int:
    """Number of BatchNorm layers in ``model``."""
    return sum(isinstance(m, _BatchNorm) for m in model.modules())


@torch.inference_mode()
def max_abs_diff(a: nn.Module, b: nn.Module, x: np.ndarray) -> float:
    """Largest absolute difference of the two models' outputs on ``x``."""
    xt = torch.as_tensor(x, dtype=torch.float32)
    return float((a.eval()(xt) - b.eval()(xt)).abs().max())


def quantize_int8(model: nn.Module) -> tuple[nn.Module | None, str | None]:
    """Dynamically quantize the Linear layers to int8.

    Returns:
        The quantized copy and None, or None and why quantization is unavailable here.
    """
    if torch.backends.quantized.engine == "none":
        return None, "this PyTorch build has no quantized engine"
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as exc:
        return None, f"torch.ao.quantization is unavailable ({exc})"
    try:
        with warnings.catch_warnings():
            # Its deprecation notices point at torchao; the fallback here is to skip the variant.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*quantize.* deprecated", category=UserWarning)
            return quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8), None
    except (RuntimeError, NotImplementedError, AssertionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"dynamic quantization failed: {first}"


def size_bytes(model: nn.Module) -> int:
    """Size of the model's serialized ``state_dict``."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


@torch.inference_mode()
def latency_ms(model: nn.Module, rows: torch.Tensor, *, iterations: int) -> tuple[float, float]:
    """Median and 95th percentile of single-row calls, in milliseconds.

    Args:
        model: The model, in eval mode.
        rows: Rows to call it on, one at a time, cycling through them.
        iterations: Timed calls (after a short warm-up).
    """
    for i in range(_WARMUP):
        model(rows[i % len(rows)].unsqueeze(0))
    times = np.empty(iterations)
    for i in range(iterations):
        row = rows[i % len(rows)].unsqueeze(0)
        start = time.perf_counter()
        model(row)
        times[i] = time.perf_counter() - start
    p50, p95 = np.percentile(times * 1000.0, [50, 95])
    return float(p50), float(p95)


@torch.inference_mode()
def rows_per_second(model: nn.Module, batch: torch.Tensor, *, calls: int = _THROUGHPUT_CALLS) -> float:
    """Rows scored per second at ``len(batch)`` rows per call (best of ``calls`` calls)."""
    model(batch)
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        model(batch)
        best = min(best, time.perf_counter() - start)
    return len(batch) / best


@torch.inference_mode()
def _accuracy(model: nn.Module, x: torch.Tensor, y: np.ndarray) -> float:
    return float((model(x).argmax(1).numpy() == y).mean())


def profile_inference(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    iterations: int = 200,
    throughput_batch: int = 256,
    fold_tolerance: float = 1e-5,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Time the eager, folded and int8 variants and check what folding and int8 change.

    The folded variant exists for models with BatchNorm; it is timed only when
    its outputs match the eager model's within ``fold_tolerance``. The int8
    variant quantizes the folded model when there is one (fold first, then
    quantize), else the eager model.

    Args:
        model: The trained model (not modified).
        x: Rows to time on and to check outputs with (the ID test features).
        y: Their labels (for the int8 accuracy change).
        iterations: Timed single-row calls per variant.
        throughput_batch: Rows per call of the throughput measurement.
        fold_tolerance: Largest output difference folding may cause.

    Returns:
        The metrics, and notes: ``folded`` and ``int8`` say what was measured or why not.
    """
    model = copy.deepcopy(model).eval()
    xt = torch.as_tensor(x, dtype=torch.float32)
    repeats = -(-throughput_batch // len(xt))
    batch = xt.repeat(repeats, 1)[:throughput_batch]
    variants: dict[str, nn.Module] = {"eager": model}
    metrics: dict[str, float] = {"infer/eager/size_bytes": float(size_bytes(model))}
    notes: dict[str, Any] = {}
    eager_accuracy = _accuracy(model, xt, y)

    if has_batch_stats(model):
        folded = fold_batchnorm(model)
        diff = max_abs_diff(model, folded, x)
        metrics["infer/folded/max_abs_diff"] = diff
        metrics["infer/folded/batchnorm_layers"] = float(count_batchnorm(folded))
        metrics["infer/folded/size_bytes"] = float(size_bytes(folded))
        if diff <= fold_tolerance:
            variants["folded"] = folded
            notes["folded"] = f"{count_batchnorm(model)} BatchNorm layers folded; max |diff| {diff:.2e}"
        else:
            notes["folded"] = f"not timed: max |diff| {diff:.2e} exceeds the tolerance {fold_tolerance:g}"
    else:
        notes["folded"] = "no BatchNorm to fold"

    quantized, why_not = quantize_int8(variants.get("folded", model))
    if quantized is None:
        notes["int8"] = why_not
    else:
        variants["int8"] = quantized
        accuracy = _accuracy(quantized, xt, y)
        metrics.update({
            "infer/int8/accuracy": accuracy,
            "infer/int8/accuracy_delta": accuracy - eager_accuracy,
            "infer/int8/size_bytes": float(size_bytes(quantized)),
            "infer/int8/size_ratio": size_bytes(quantized) / size_bytes(model),
        })
        notes["int8"] = f"Linear layers quantized from the {'folded' if 'folded' in variants else 'eager'} model"

    for name, variant in variants.items():
        p50, p95 = latency_ms(variant, xt, iterations=iterations)
        metrics[f"time/infer/{name}/p50_ms"] = p50
        metrics[f"time/infer/{name}/p95_ms"] = p95
        metrics[f"time/infer/{name}/rows_per_second"] = rows_per_second(variant, batch)
    return metrics, notes
