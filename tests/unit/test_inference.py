"""Normalization at inference: BatchNorm folding, int8 fallback, timing and AdaBN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from normlab import inference
from normlab.inference import (
    adapt_batchnorm,
    count_batchnorm,
    fold_batchnorm,
    latency_ms,
    max_abs_diff,
    profile_inference,
    quantize_int8,
)
from normlab.models import MODEL_FAMILIES, build_model
from normlab.norms import has_batch_stats


def _bn_model(family: str, *, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    """A BatchNorm model with non-trivial running statistics and affine parameters."""
    torch.manual_seed(seed)
    model = build_model(family, in_features=64, num_classes=10, norm="batch", image_shape=(8, 8),
                        hidden=(32, 16), channels=(8, 16), dropout=dropout)
    model.train()
    with torch.no_grad():
        for _ in range(5):  # real batch statistics, not the initial zeros and ones
            model(torch.randn(64, 64) * 3 + 1)
        for layer in model.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.weight.uniform_(0.5, 2.0)
                layer.bias.normal_()
    return model.eval()


def _rows(n: int = 200, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(1.0, 3.0, size=(n, 64)).astype(np.float32)


# The families whose every BatchNorm directly follows a convolution or a Linear (the ViT's token
# norms follow residual sums); a family added later is covered here or named below.
UNFOLDABLE = ("vit",)


def test_a_vit_keeps_its_token_batchnorms_and_its_outputs():
    model = _bn_model("vit")
    before = count_batchnorm(model)
    folded = fold_batchnorm(model)
    assert count_batchnorm(folded) == before > 0
    assert max_abs_diff(model, folded, _rows()) <= 1e-5


@pytest.mark.parametrize("family", [f for f in MODEL_FAMILIES if f not in UNFOLDABLE])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_folding_is_exact_for_every_family_with_batchnorm(family, dropout):
    model = _bn_model(family, dropout=dropout)
    assert has_batch_stats(model)
    before = count_batchnorm(model)
    folded = fold_batchnorm(model)
    assert count_batchnorm(folded) == 0
    assert count_batchnorm(model) == before >= 2  # the original is left alone
    assert max_abs_diff(model, folded, _rows()) <= 1e-5


def test_profile_reports_every_variant_for_a_batchnorm_model():
    model = _bn_model("mlp")
    x = _rows()
    with torch.no_grad():
        y = model(torch.as_tensor(x)).argmax(1).numpy()
    metrics, notes = profile_inference(model, x, y, iterations=20, throughput_batch=64)
    assert metrics["infer/folded/max_abs_diff"] <= 1e-5
    assert metrics["infer/folded/batchnorm_layers"] == 0
    for variant in ("eager", "folded", "int8"):
        assert metrics[f"time/infer/{variant}/p95_ms"] >= metrics[f"time/infer/{variant}/p50_ms"] > 0
        assert metrics[f"time/infer/{variant}/rows_per_second"] > 0
    # int8 weights: about a quarter of float32, plus scales and the float head bias.
    assert 0.2 < metrics["infer/int8/size_ratio"] < 0.5
    assert metrics["infer/int8/accuracy_delta"] == pytest.approx(metrics["infer/int8/accuracy"] - 1.0)
    assert "folded" in notes["folded"] and "folded" in notes["int8"]


def test_models_without_batchnorm_have_no_folded_variant():
    torch.manual_seed(0)
    model = build_model("mlp", in_features=64, num_classes=10, norm="layer", hidden=(16,)).eval()
    x = _rows(50)
    metrics, notes = profile_inference(model, x, np.zeros(50, dtype=np.int64), iterations=10, throughput_batch=16)
    assert notes["folded"] == "no BatchNorm to fold"
    assert not any("/folded/" in k for k in metrics)
    assert "time/infer/eager/p50_ms" in metrics


def test_folding_beyond_the_tolerance_is_reported_and_not_timed():
    model = _bn_model("mlp")
    metrics, notes = profile_inference(model, _rows(), np.zeros(200, dtype=np.int64), iterations=10,
                                       throughput_batch=16, fold_tolerance=1e-12)
    assert metrics["infer/folded/max_abs_diff"] > 1e-12
    assert "exceeds the tolerance" in notes["folded"]
    assert "time/infer/folded/p50_ms" not in metrics


def test_int8_falls_back_cleanly_when_quantization_fails(monkeypatch):
    import torch.ao.quantization as quantization

    def broken(*args, **kwargs):
        raise RuntimeError("Didn't find engine for operation quantized::linear_prepack NoQEngine")

    monkeypatch.setattr(quantization, "quantize_dynamic", broken)
    model, reason = quantize_int8(_bn_model("mlp"))
    assert model is None and "NoQEngine" in reason
    metrics, notes = profile_inference(_bn_model("mlp"), _rows(20), np.zeros(20, dtype=np.int64), iterations=10,
                                       throughput_batch=8)
    assert "NoQEngine" in notes["int8"]
    assert not any("int8" in k for k in metrics)


def test_latency_is_bounded_by_the_iterations():
    calls = []

    class Counting(nn.Module):
        def forward(self, x):
            calls.append(len(x))
            return x

    p50, p95 = latency_ms(Counting(), torch.zeros(3, 4), iterations=25)
    assert len(calls) == inference._WARMUP + 25 and set(calls) == {1}
    assert 0 < p50 <= p95


def test_adabn_re_estimates_statistics_on_the_shifted_rows_only():
    model = _bn_model("mlp")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shifted = _rows(300, seed=5) + 4.0
    adapted = adapt_batchnorm(model, shifted, batch_size=128)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # the original is untouched
    first_bn = adapted.blocks[0][1]
    with torch.no_grad():
        pre = adapted.blocks[0][0](torch.as_tensor(shifted))
    torch.testing.assert_close(first_bn.running_mean, pre.mean(dim=0), atol=1e-4, rtol=1e-4)
    assert not first_bn.training
    # Weights are not trained, only statistics are replaced.
    torch.testing.assert_close(adapted.blocks[0][0].weight, model.blocks[0][0].weight)
    with pytest.raises(ValueError, match="at least 2 rows"):
        adapt_batchnorm(model, shifted[:1])
