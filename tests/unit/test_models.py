"""Unit tests for the model families."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from normlab.models import CNN, MLP, MODEL_FAMILIES, build_model
from normlab.norms import NORM_NAMES, get_norm_layer, has_batch_stats

IMAGE_SHAPE = (8, 8)
IN_FEATURES = 64
NUM_CLASSES = 3
BATCH = 5


def _build(family: str, norm: object, **kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    return build_model(
        family,
        in_features=IN_FEATURES,
        num_classes=NUM_CLASSES,
        norm=norm,
        image_shape=IMAGE_SHAPE,
        hidden=(12, 10),
        channels=(4, 6),
        groups=4,
        **kwargs,
    )


def _inputs(n: int = BATCH) -> torch.Tensor:
    return torch.randn(n, IN_FEATURES, generator=torch.Generator().manual_seed(1))


def test_model_families() -> None:
    assert MODEL_FAMILIES == ("mlp", "cnn", "resnet", "vit")


@pytest.mark.parametrize("norm", NORM_NAMES)
@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_forward_backward(family: str, norm: str) -> None:
    model = _build(family, norm)
    x = _inputs()
    out = model.train()(x)
    assert out.shape == (BATCH, NUM_CLASSES)
    assert torch.isfinite(out).all()
    nn.functional.cross_entropy(out, torch.arange(BATCH) % NUM_CLASSES).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    with torch.no_grad():
        out_eval = model.eval()(x)
    assert out_eval.shape == (BATCH, NUM_CLASSES)
    assert torch.isfinite(out_eval).all()


@pytest.mark.parametrize("norm", NORM_NAMES)
@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_eval_output_is_per_sample(family: str, norm: str) -> None:
    model = _build(family, norm)
    x = _inputs()
    with torch.no_grad():
        model.train()(x)  # moves BatchNorm's running stats off their init
        model.eval()
        torch.testing.assert_close(model(x[:1]), model(x)[:1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm", [n for n in NORM_NAMES if n != "batch"])
@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_train_output_is_per_sample_without_batchnorm(family: str, norm: str) -> None:
    # Every norm but batch computes the same thing at train and test time.
    model = _build(family, norm).train()
    x = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(x[:1]), model(x)[:1], atol=1e-5, rtol=1e-5)


def test_batchnorm_train_output_depends_on_batch() -> None:
    model = _build("mlp", "batch").train()
    x = _inputs()
    with torch.no_grad():
        assert not torch.allclose(model(x[:2])[:1], model(x)[:1], atol=1e-4)


def test_mlp_block_order() -> None:
    model = MLP(IN_FEATURES, NUM_CLASSES, hidden=(8, 8), norm="batch", dropout=0.1)
    assert isinstance(model.head, nn.Linear) and model.head.in_features == 8
    assert len(model.blocks) == 2
    for block in model.blocks:
        assert [type(m) for m in block] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout]


def test_mlp_without_dropout_has_no_dropout_layer() -> None:
    model = MLP(IN_FEATURES, NUM_CLASSES, hidden=(8,), norm="layer")
    assert [type(m) for m in model.blocks[0]] == [nn.Linear, nn.LayerNorm, nn.ReLU]


def test_cnn_structure_on_8x8() -> None:
    model = CNN(IMAGE_SHAPE, NUM_CLASSES, channels=(4, 6, 8), norm="batch")
    kinds = [[type(m) for m in block] for block in model.blocks]
    # 8 -> 4 -> 2, then no more pooling at 2x2.
    assert kinds == [
        [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d],
        [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d],
        [nn.Conv2d, nn.BatchNorm2d, nn.ReLU],
    ]
    conv = model.blocks[0][0]
    assert conv.kernel_size == (3, 3) and conv.padding == (1, 1)
    assert isinstance(model.head, nn.Linear) and model.head.in_features == 8


def test_cnn_multichannel_input() -> None:
    model = build_model("cnn", in_features=3 * 64, num_classes=2, norm="group", image_shape=(8, 8), in_channels=3)
    assert model.blocks[0][0].in_channels == 3
    assert model(torch.randn(2, 3 * 64)).shape == (2, 2)


def test_cnn_rejects_wrong_input_width() -> None:
    model = CNN(IMAGE_SHAPE, NUM_CLASSES, channels=(4,), norm="none")
    with pytest.raises(RuntimeError):
        model(torch.randn(2, IN_FEATURES + 1))


def test_norm_factory_reaches_every_block() -> None:
    model = _build("cnn", lambda c: nn.GroupNorm(2, c))
    norms = [block[1] for block in model.blocks]
    assert all(isinstance(n, nn.GroupNorm) and n.num_groups == 2 for n in norms)


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_groups_is_passed_to_norm(family: str) -> None:
    model = _build(family, "group")
    groupnorms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert groupnorms and all(n.num_groups <= 4 for n in groupnorms)
    assert max(n.num_groups for n in groupnorms) == 4


def test_build_model_returns_family_class() -> None:
    assert isinstance(_build("mlp", "none"), MLP)
    assert isinstance(_build("cnn", "none"), CNN)


def test_build_mlp_ignores_image_shape() -> None:
    model = build_model("mlp", in_features=10, num_classes=2, norm="rms", image_shape=None)
    assert model(torch.randn(3, 10)).shape == (3, 2)


def test_build_unknown_family() -> None:
    with pytest.raises(ValueError, match=r"unknown model family 'densenet'; known: mlp, cnn, resnet, vit"):
        build_model("densenet", in_features=IN_FEATURES, num_classes=2, norm="batch")


def test_build_cnn_needs_image_shape() -> None:
    with pytest.raises(ValueError, match="image_shape"):
        build_model("cnn", in_features=IN_FEATURES, num_classes=2, norm="batch")


def test_build_cnn_checks_in_features() -> None:
    with pytest.raises(ValueError, match="in_features=60"):
        build_model("cnn", in_features=60, num_classes=2, norm="batch", image_shape=(8, 8))


# A ViT's token norms follow residual sums, not a Linear: nothing to fold them into.
@pytest.mark.parametrize("family", [f for f in MODEL_FAMILIES if f != "vit"])
def test_batchnorm_folds_into_preceding_layer(family: str) -> None:
    # Linear/Conv immediately followed by BatchNorm is what fx fusion matches.
    model = _build(family, "batch")
    x = _inputs()
    with torch.no_grad():
        model.train()(x)
        model.eval()
        fused = fuse(model)
        assert has_batch_stats(model) and not has_batch_stats(fused)
        torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm", NORM_NAMES)
@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_models_are_fx_traceable(family: str, norm: str) -> None:
    model = _build(family, norm).eval()
    traced = torch.fx.symbolic_trace(model)
    x = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))


def test_get_norm_layer_is_what_models_use() -> None:
    model = _build("mlp", "instance")
    assert type(model.blocks[0][1]) is type(get_norm_layer("instance", 12, spatial=False))


def test_model_spec_round_trips_through_model_json(tmp_path) -> None:
    import json

    from normlab.model_spec import ModelSpec

    spec = ModelSpec(family="cnn", in_features=64, num_classes=10, norm="group", image_shape=(8, 8),
                     hidden=(128, 128), channels=(16, 32), groups=8, dropout=0.1)
    # model.json: build_model's keyword arguments, lists for sequences (the resnet and vit ones at their defaults).
    assert spec.to_json() == {"family": "cnn", "in_features": 64, "num_classes": 10, "norm": "group",
                              "image_shape": [8, 8], "hidden": [128, 128], "channels": [16, 32], "groups": 8,
                              "dropout": 0.1, "blocks": 2, "patch_size": 4, "width": 64, "depth": 2, "heads": 4,
                              "mlp_ratio": 2, "norm_position": "pre", "in_channels": 1}
    path = tmp_path / "model.json"
    path.write_text(json.dumps(spec.to_json()))
    assert ModelSpec.read(path) == spec
    torch.manual_seed(0)
    built = spec.build()
    torch.manual_seed(0)
    direct = build_model("cnn", in_features=64, num_classes=10, norm="group", image_shape=(8, 8),
                         channels=(16, 32), groups=8, dropout=0.1)
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), direct.state_dict().values(),
                                                 strict=True))


def test_model_spec_refuses_missing_and_unknown_keys() -> None:
    from normlab.model_spec import ModelSpec

    good = ModelSpec(family="mlp", in_features=4, num_classes=2, norm="layer", image_shape=None, hidden=(8,),
                     channels=(4,), groups=2, dropout=0.0).to_json()
    with pytest.raises(ValueError, match=r"missing keys \['dropout'\], unknown keys \[\]"):
        ModelSpec.from_json({k: v for k, v in good.items() if k != "dropout"})
    with pytest.raises(ValueError, match=r"unknown keys \[.layers.\]"):
        ModelSpec.from_json({**good, "layers": 3})
