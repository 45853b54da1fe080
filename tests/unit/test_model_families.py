"""The residual CNN and the vision transformer: every norm of the registry, pre and post norm, exact folding."""

from __future__ import annotations

import json
from types import MappingProxyType

import pytest
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from normlab import norms
from normlab.config import load_config
from normlab.errors import ConfigError
from normlab.inference import profile_inference
from normlab.model_spec import ModelSpec
from normlab.models import build_model
from normlab.norms import NORM_FACTORIES, NORM_NAMES
from normlab.resnet import BasicBlock, ResNet
from normlab.vit import EncoderBlock, TokenNorm, ViT

EVERY_NORM = pytest.mark.parametrize("norm", NORM_NAMES)
VIT = {"patch_size": 4, "width": 16, "depth": 2, "heads": 2}


def _image_batch(n: int = 6, shape: tuple[int, int] = (8, 8), seed: int = 0) -> torch.Tensor:
    return torch.randn(n, shape[0] * shape[1], generator=torch.Generator().manual_seed(seed))


@EVERY_NORM
@pytest.mark.parametrize("family, extra", [("resnet", {}), ("vit", {"norm_position": "pre", **VIT}),
                                           ("vit", {"norm_position": "post", **VIT})],
                         ids=["resnet", "vit-pre", "vit-post"])
def test_each_family_trains_and_scores_per_sample_with_every_norm(family, extra, norm):
    model = build_model(family, in_features=64, num_classes=3, norm=norm, image_shape=(8, 8), channels=(8, 16),
                        groups=4, **extra)
    x = _image_batch()
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0, 1, 2]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        # In eval mode a row's logits do not depend on the other rows of its batch, whatever the norm.
        assert torch.allclose(model(x[:2]), model(x)[:2], atol=1e-5)


def test_resnet_layout_strides_and_shortcuts():
    model = ResNet((16, 16), 10, channels=(8, 16, 32), blocks=2, norm="batch")
    stages = list(model.stages)
    assert [len(stage) for stage in stages] == [2, 2, 2]
    assert [stage[0].conv1.stride for stage in stages] == [(1, 1), (2, 2), (2, 2)]
    # A projection shortcut where the shape changes, the identity elsewhere.
    assert isinstance(stages[0][0].shortcut, nn.Identity) and isinstance(stages[1][0].shortcut, nn.Sequential)
    # Every convolution is followed by a norm of the configured kind: 1 stem + 2 per block + 2 projections.
    batchnorms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(batchnorms) == 1 + 2 * 6 + 2
    assert model(torch.randn(3, 256)).shape == (3, 10)


def test_resnet_batchnorm_folds_exactly():
    model = build_model("resnet", in_features=64, num_classes=10, norm="batch", image_shape=(8, 8))
    model.train()
    with torch.no_grad():
        for seed in range(3):  # running statistics away from their initial values
            model(_image_batch(32, seed=seed) * 3 + 1)
    model.eval()
    folded = fuse(model)
    assert not [m for m in folded.modules() if isinstance(m, nn.BatchNorm2d)]
    x = _image_batch(16, seed=9)
    with torch.no_grad():
        assert (folded(x) - model(x)).abs().max().item() < 1e-5
    timing, notes = profile_inference(model, x.numpy(), torch.zeros(16, dtype=torch.long).numpy(), iterations=2,
                                      throughput_batch=16, fold_tolerance=1e-4)
    assert timing["infer/folded/max_abs_diff"] < 1e-4, notes


def test_vit_pre_and_post_norm_place_their_norms():
    pre = ViT((8, 8), 10, norm="layer", norm_position="pre", **VIT)
    post = ViT((8, 8), 10, norm="layer", norm_position="post", **VIT)
    # Two norms a block; pre-norm adds one before pooling, as the residual stream is never normalized.
    assert sum(isinstance(m, TokenNorm) for m in pre.modules()) == 2 * VIT["depth"] + 1
    assert sum(isinstance(m, TokenNorm) for m in post.modules()) == 2 * VIT["depth"]
    block_pre, block_post = pre.blocks[0], post.blocks[0]
    assert isinstance(block_pre, EncoderBlock) and block_pre.pre and not block_post.pre
    # Post-norm: each block's output is normalized (LayerNorm: mean 0 per token); pre-norm's is not.
    x = pre.embed(torch.randn(4, 1, 8, 8)).flatten(2).transpose(1, 2)
    with torch.no_grad():
        assert block_post(x).mean(dim=-1).abs().max() < 1e-5
        assert block_pre(x).mean(dim=-1).abs().max() > 1e-3


def test_vit_tokens_and_shape_errors():
    model = ViT((8, 8), 10, patch_size=2, width=16, heads=4)
    assert model.position.shape == (1, 16, 16)  # (8 / 2) ** 2 tokens
    with pytest.raises(ValueError, match="not divisible into 3x3 patches"):
        ViT((8, 8), 10, patch_size=3)
    with pytest.raises(ValueError, match="width 10 is not divisible by heads 4"):
        ViT((8, 8), 10, width=10, heads=4)


def _counting(calls: list[int]):
    def factory(num_features: int, *, spatial: bool, eps: float, groups: int) -> nn.Module:
        calls.append(num_features)
        return nn.Identity()
    return factory


@pytest.mark.parametrize("family", ["resnet", "vit"])
def test_every_norm_of_a_family_comes_from_the_registry(family, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(norms, "NORM_FACTORIES", MappingProxyType({**NORM_FACTORIES, "counted": _counting(calls)}))
    model = build_model(family, in_features=64, num_classes=3, norm="counted", image_shape=(8, 8), **VIT)
    plain = build_model(family, in_features=64, num_classes=3, norm="none", image_shape=(8, 8), **VIT)
    # The registry's factory built every norm: the model has no norm module of its own choosing.
    assert calls and not [m for m in model.modules() if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm))]
    norms_of_plain = sum(isinstance(m, nn.Identity) for m in plain.modules())
    assert sum(isinstance(m, nn.Identity) for m in model.modules()) == norms_of_plain
    if family == "resnet":
        assert isinstance(model.stages[0][0], BasicBlock)


def test_model_spec_rebuilds_the_new_families_and_reads_specs_from_before_them(tmp_path):
    spec = ModelSpec(family="vit", in_features=64, num_classes=10, norm="rms", image_shape=(8, 8), hidden=(128,),
                     channels=(16, 32), groups=8, dropout=0.0, patch_size=2, width=32, depth=1, heads=4,
                     mlp_ratio=3, norm_position="post")
    path = tmp_path / "model.json"
    path.write_text(json.dumps(spec.to_json()))
    assert ModelSpec.read(path) == spec
    model = spec.build()
    assert isinstance(model, ViT) and not model.blocks[0].pre and model.blocks[0].mlp[0].out_features == 96
    # A model.json written before resnet and vit existed has none of their keys: it loads with the defaults.
    old = {k: v for k, v in spec.to_json().items()
           if k not in ("blocks", "patch_size", "width", "depth", "heads", "mlp_ratio", "norm_position")}
    assert ModelSpec.from_json({**old, "family": "mlp"}).norm_position == "pre"


def test_config_refuses_what_the_families_cannot_build(tmp_path):
    base = [f"workdir={tmp_path}"]
    assert load_config(None, [*base, "model.family=resnet"]).model.blocks == 2
    with pytest.raises(ConfigError, match=r"model.patch_size 3 does not divide data.image_shape \[8, 8\]"):
        load_config(None, [*base, "model.family=vit", "model.patch_size=3"])
    with pytest.raises(ConfigError, match=r"model\.width 30 is not divisible by model\.heads 4"):
        load_config(None, [*base, "model.family=vit", "model.width=30"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(None, [*base, "model.norm_place=pre"])
    with pytest.raises(ConfigError, match="norm_position"):
        load_config(None, [*base, "model.norm_position=middle"])
