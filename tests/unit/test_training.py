"""The training loop: determinism, history, convergence figures, checkpoints and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from normlab.models import build_model
from normlab.training import CHECKPOINT_NAME, make_optimizer, set_seeds, train_model


def _data(n=240, features=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, size=(classes, features))
    y = rng.integers(0, classes, size=n)
    x = (centers[y] + rng.normal(0, 1, size=(n, features))).astype(np.float32)
    return x, y.astype(np.int64)


def _fit(norm="batch", epochs=3, checkpoint_dir=None, seed=0, batch_size=32):
    x, y = _data()
    set_seeds(seed)
    model = build_model("mlp", in_features=16, num_classes=3, norm=norm, hidden=(32,))
    opt = make_optimizer(model.parameters(), "sgd", lr=0.05)
    result = train_model(model, opt, (x[:200], y[:200]), (x[200:], y[200:]), epochs=epochs,
                         batch_size=batch_size, seed=seed, target_accuracy=0.9, checkpoint_dir=checkpoint_dir)
    return model, result


def _numbers(result):
    return [(r.train_loss, r.train_accuracy, r.val_loss, r.val_accuracy) for r in result.history]


@pytest.mark.parametrize("norm", ["batch", "layer", "dyt"])
def test_same_seed_gives_identical_history_and_weights(norm):
    m1, r1 = _fit(norm)
    m2, r2 = _fit(norm)
    assert _numbers(r1) == _numbers(r2)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_other_seed_differs():
    _, r1 = _fit(seed=0)
    _, r2 = _fit(seed=1)
    assert _numbers(r1) != _numbers(r2)


def test_history_and_convergence_are_recorded():
    _, result = _fit(epochs=4)
    assert [r.epoch for r in result.history] == [1, 2, 3, 4]
    assert result.history[-1].val_accuracy >= 0.9
    assert result.epochs_to_target is not None and 1 <= result.epochs_to_target <= 4
    assert result.seconds_to_target > 0 and result.samples_per_second > 0


def test_singleton_last_batch_is_skipped_for_batchnorm():
    # 200 training rows in batches of 199 leave one row: BatchNorm cannot train on it.
    _, result = _fit(batch_size=199, epochs=1)
    assert len(result.history) == 1


def test_resume_from_checkpoint_matches_uninterrupted(tmp_path):
    _, full = _fit(epochs=4, checkpoint_dir=tmp_path / "full")
    _fit(epochs=2, checkpoint_dir=tmp_path / "part")
    assert (tmp_path / "part" / CHECKPOINT_NAME).is_file()
    _model, resumed = _fit(epochs=4, checkpoint_dir=tmp_path / "part")
    assert resumed.resumed_from_epoch == 2
    assert _numbers(resumed) == _numbers(full)


def test_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="known: sgd, adam, adamw"):
        make_optimizer([torch.nn.Parameter(torch.zeros(1))], "lbfgs", lr=0.1)
