"""Resuming ``checkpoints/last.pt`` in another precision (refused) or on another device (continued, with a warning).

The run is matched by its config hash, which holds ``train.precision`` but
``train.device`` as written: ``auto`` resolves per machine, so a run stopped on
a GPU machine can resume on a CPU one. These tests run on the CPU: bf16 and
fp16 autocast there, and a checkpoint "written on cuda" is a CPU checkpoint
with the device it records (and a CUDA RNG state) set as a GPU machine sets them.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from normlab.errors import ConfigError
from normlab.models import build_model
from normlab.training import CHECKPOINT_NAME, make_optimizer, set_seeds, train_model


def _data(n=240, features=16, classes=3):
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, size=(classes, features))
    y = rng.integers(0, classes, size=n)
    x = (centers[y] + rng.normal(0, 1, size=(n, features))).astype(np.float32)
    return x, y.astype(np.int64)


def _fit(checkpoint_dir, *, epochs, precision="fp32"):
    x, y = _data()
    set_seeds(0)
    model = build_model("mlp", in_features=16, num_classes=3, norm="batch", hidden=(32,))
    opt = make_optimizer(model.parameters(), "sgd", lr=0.05)
    result = train_model(model, opt, (x[:200], y[:200]), (x[200:], y[200:]), epochs=epochs, batch_size=32, seed=0,
                         checkpoint_dir=checkpoint_dir, precision=precision)
    return model, result


def _numbers(result):
    return [(r.train_loss, r.train_accuracy, r.val_loss, r.val_accuracy) for r in result.history]


def _rewrite(path, **changes):
    """Edit a checkpoint's entries in place (None removes one)."""
    state = torch.load(path, weights_only=True)
    for key, value in changes.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    torch.save(state, path)


def test_a_checkpoint_records_its_precision_and_device(tmp_path):
    _fit(tmp_path, epochs=1, precision="bf16")
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert state["precision"] == "bf16" and state["device"] == "cpu"


@pytest.mark.parametrize(("written", "asked"), [("fp32", "bf16"), ("bf16", "fp32"), ("fp16", "fp32"),
                                                ("fp32", "fp16"), ("bf16", "fp16")])
def test_a_checkpoint_resumes_only_in_its_own_precision(tmp_path, written, asked):
    _fit(tmp_path, epochs=2, precision=written)
    before = (tmp_path / CHECKPOINT_NAME).read_bytes()
    with pytest.raises(ConfigError) as caught:
        _fit(tmp_path, epochs=4, precision=asked)
    message = str(caught.value)
    assert "\n" not in message and caught.value.exit_code == 2
    assert f"was written in {written} and cannot resume in {asked}" in message
    assert f"train.precision={written}" in message
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == before  # refused before anything ran or was written
    # In its own precision it resumes, to the uninterrupted result.
    _, resumed = _fit(tmp_path, epochs=4, precision=written)
    _, full = _fit(tmp_path / "full", epochs=4, precision=written)
    assert resumed.resumed_from_epoch == 2 and _numbers(resumed) == _numbers(full)


def test_a_checkpoint_from_before_precision_was_recorded(tmp_path):
    # Only fp16 wrote a scaler: such a checkpoint is fp16's; one without a scaler is not checked.
    _fit(tmp_path / "fp16", epochs=2, precision="fp16")
    _rewrite(tmp_path / "fp16" / CHECKPOINT_NAME, precision=None, device=None)
    with pytest.raises(ConfigError, match="written in fp16 and cannot resume in fp32"):
        _fit(tmp_path / "fp16", epochs=4)
    _fit(tmp_path / "fp32", epochs=2)
    _rewrite(tmp_path / "fp32" / CHECKPOINT_NAME, precision=None, device=None)
    _, resumed = _fit(tmp_path / "fp32", epochs=4)
    assert resumed.resumed_from_epoch == 2


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_checkpoint_written_on_cuda_resumes_on_the_cpu_with_a_warning(tmp_path, precision):
    _, full = _fit(tmp_path / "full", epochs=4, precision=precision)
    _fit(tmp_path / "part", epochs=2, precision=precision)
    # What a GPU machine writes: CPU tensors, its device, its CUDA generator's state (and, for fp16, its scaler).
    _rewrite(tmp_path / "part" / CHECKPOINT_NAME, device="cuda", cuda_rng=torch.zeros(16, dtype=torch.uint8))
    with pytest.warns(RuntimeWarning, match="written on cuda and resumes on cpu: training continues from epoch 2"):
        _, resumed = _fit(tmp_path / "part", epochs=4, precision=precision)
    assert resumed.resumed_from_epoch == 2 and [r.epoch for r in resumed.history] == [1, 2, 3, 4]
    # Everything the checkpoint holds was restored: here its epochs were really CPU ones, so the result is the same.
    assert _numbers(resumed) == _numbers(full)
    assert torch.load(tmp_path / "part" / CHECKPOINT_NAME, weights_only=True)["device"] == "cpu"


def test_resuming_on_the_same_device_says_nothing(tmp_path):
    _fit(tmp_path, epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, resumed = _fit(tmp_path, epochs=3)
    assert resumed.resumed_from_epoch == 2
