"""``train.device``, ``train.precision`` and ``train.compile``: resolved once, refused in one line, trained for real."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from normlab import device as device_module
from normlab import pipeline, splitting
from normlab.cli import app
from normlab.config import validate_config
from normlab.device import resolve_device, resolve_precision
from normlab.errors import ConfigError
from normlab.models import build_model
from normlab.stages import train_stage
from normlab.training import CHECKPOINT_NAME, make_optimizer, set_seeds, train_model
from tests.conftest import REPO

CPU = torch.device("cpu")


def _data(n=240, features=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, size=(classes, features))
    y = rng.integers(0, classes, size=n)
    x = (centers[y] + rng.normal(0, 1, size=(n, features))).astype(np.float32)
    return x, y.astype(np.int64)


def _fit(epochs=4, checkpoint_dir=None, norm="batch", **kwargs):
    x, y = _data()
    set_seeds(0)
    model = build_model("mlp", in_features=16, num_classes=3, norm=norm, hidden=(32,))
    opt = make_optimizer(model.parameters(), "sgd", lr=0.05)
    result = train_model(model, opt, (x[:200], y[:200]), (x[200:], y[200:]), epochs=epochs, batch_size=32,
                         seed=0, target_accuracy=0.9, checkpoint_dir=checkpoint_dir, **kwargs)
    return model, result


def _numbers(result):
    return [(r.train_loss, r.train_accuracy, r.val_loss, r.val_accuracy) for r in result.history]


@pytest.fixture
def no_accelerator(monkeypatch):
    """torch sees neither CUDA nor MPS, whatever this machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_is_cuda_when_present_else_cpu(monkeypatch, no_accelerator):
    assert resolve_device("auto") == CPU
    assert resolve_device("cpu") == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("name", ["cuda", "mps"])
def test_a_missing_device_is_one_line(name, no_accelerator):
    with pytest.raises(ConfigError) as caught:
        resolve_device(name)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"train.device is '{name}' but torch sees no ") and message.endswith("use cpu or auto")
    assert torch.__version__ in message


def test_an_unknown_device_or_precision_is_refused():
    with pytest.raises(ConfigError, match="not one of auto, cpu, cuda, mps"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match="not one of fp32, bf16, fp16"):
        resolve_precision("int8", CPU)


def test_precisions_on_the_cpu():
    assert resolve_precision("fp32", CPU).dtype is None
    bf16 = resolve_precision("bf16", CPU)
    assert bf16.dtype is torch.bfloat16 and not bf16.scaled and bf16.scaler(CPU) is None
    # torch 2.4+ autocasts to float16 on the CPU and has a CPU gradient scaler: fp16 runs, scaled.
    fp16 = resolve_precision("fp16", CPU)
    assert fp16.dtype is torch.float16 and fp16.scaled and fp16.scaler(CPU).is_enabled()


def test_a_precision_torch_cannot_autocast_to_is_refused_not_run_in_fp32(monkeypatch):
    monkeypatch.setattr(device_module, "_autocasts", lambda device_type, dtype: False)
    with pytest.raises(ConfigError) as caught:
        resolve_precision("bf16", CPU)
    assert "\n" not in str(caught.value) and "cannot autocast to torch.bfloat16 on cpu" in str(caught.value)
    monkeypatch.setattr(device_module, "_autocasts", lambda device_type, dtype: True)
    monkeypatch.setattr(device_module, "_scales", lambda device_type: False)
    with pytest.raises(ConfigError, match="no gradient scaler on cpu"):
        resolve_precision("fp16", CPU)


def test_fp32_is_identical_with_and_without_an_explicit_cpu_device():
    m1, r1 = _fit()
    m2, r2 = _fit(device="cpu")
    m3, r3 = _fit(device=CPU, precision="fp32", compile=False)
    assert _numbers(r1) == _numbers(r2) == _numbers(r3)
    for a, b, c in zip(m1.state_dict().values(), m2.state_dict().values(), m3.state_dict().values(), strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_learns_on_the_cpu(precision):
    model, result = _fit(precision=precision)
    losses = [r.train_loss for r in result.history]
    assert losses[-1] < losses[0] / 10
    assert result.history[-1].val_accuracy >= 0.9
    # The weights stay fp32 (autocast casts per op), and the arithmetic really changed.
    assert all(p.dtype == torch.float32 for p in model.parameters())
    _, fp32 = _fit()
    assert _numbers(result) != _numbers(fp32)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_mixed_precision_checkpoint_resumes_to_the_uninterrupted_result(tmp_path, precision):
    _, full = _fit(epochs=4, checkpoint_dir=tmp_path / "full", precision=precision)
    _fit(epochs=2, checkpoint_dir=tmp_path / "part", precision=precision)
    state = torch.load(tmp_path / "part" / CHECKPOINT_NAME, weights_only=True)
    assert ("scaler" in state) == (precision == "fp16")
    assert all(t.device == CPU for t in state["model"].values())
    _, resumed = _fit(epochs=4, checkpoint_dir=tmp_path / "part", precision=precision)
    assert resumed.resumed_from_epoch == 2
    assert _numbers(resumed) == _numbers(full)


@pytest.mark.slow
def test_a_compiled_model_trains_and_saves_plain_parameter_names(tmp_path):
    # Inductor compiles the train and eval graphs: about 30 s on two CPU cores with its cache empty, 10 s warm.
    model, result = _fit(epochs=2, checkpoint_dir=tmp_path, compile=True)
    assert result.history[-1].val_accuracy >= 0.9
    keys = list(model.state_dict())
    checkpoint_keys = list(torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["model"])
    assert keys == checkpoint_keys == list(build_model("mlp", in_features=16, num_classes=3, norm="batch",
                                                       hidden=(32,)).state_dict())
    assert not any("_orig_mod" in k for k in keys)


def _prepared(tmp_path, train):
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=400), rng.normal(size=400)
    csv = tmp_path / "t.csv"
    pd.DataFrame({"x1": x1, "x2": x2, "target": np.where(x1 + x2 > 0, "yes", "no")}).to_csv(csv, index=False)
    cfg = validate_config({"name": "tab", "workdir": str(tmp_path / "work"),
                           "data": {"path": str(csv), "label": "target", "expectations": None},
                           "model": {"norm": "layer", "hidden": [16]}, "train": {"epochs": 3, **train}})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    batch = pipeline.load_batch(cfg.data, run_dir)
    return cfg, splitting.prepare_splits(cfg.data, cfg.splits, cfg.eval, cfg.seed, batch, run_dir), run_dir


def test_the_pipeline_trains_in_bf16_and_saves_cpu_weights_the_later_stages_load(tmp_path):
    cfg, prepared, run_dir = _prepared(tmp_path, {"precision": "bf16", "device": "auto"})
    trained = train_stage(cfg, prepared, run_dir)
    weights = torch.load(trained.model_path, weights_only=True)
    assert all(t.device == CPU and t.dtype == torch.float32 for t in weights.values())
    model = pipeline.load_weights(trained.spec, trained.model_path)
    assert not model.training
    assert trained.result.history[-1].val_accuracy > 0.8


runner = CliRunner()


@pytest.mark.parametrize(("sets", "says"), [
    (["train.device=cuda"], "train.device is 'cuda' but torch sees no CUDA device"),
    (["train.device=mps", "train.precision=bf16"], "train.device is 'mps' but torch sees no MPS device"),
    (["train.device=tpu"], "train.device='tpu': Input should be 'auto', 'cpu', 'cuda' or 'mps'"),
])
def test_run_on_a_device_that_is_not_there_stops_before_any_flow_in_one_line(tmp_path, repo_root, no_accelerator,
                                                                             sets, says):
    args = ["run", str(REPO / "configs" / "digits.yaml"), "--set", f"workdir={tmp_path / 'work'}",
            "--set", "train.epochs=1"]
    for item in sets:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], result.output
    assert not (tmp_path / "work").exists()  # nothing was orchestrated, nothing written
