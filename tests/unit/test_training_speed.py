"""What the training loop does to stay fast: chunked metric sums, spaced checkpoints, throttled progress."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from normlab import training
from normlab.contracts import Epoch
from normlab.models import build_model
from normlab.training import CHECKPOINT_NAME, make_optimizer, set_seeds, throttled, train_model


def _data(n=200, features=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    x = (rng.normal(0, 3, size=(classes, features))[y] + rng.normal(0, 1, size=(n, features))).astype(np.float32)
    return x, y.astype(np.int64)


def _model_and_optimizer(lr=0.05):
    set_seeds(0)
    model = build_model("mlp", in_features=8, num_classes=3, norm="layer", hidden=(16,))
    return model, make_optimizer(model.parameters(), "sgd", lr=lr, momentum=0.0)


def test_train_loss_and_accuracy_sum_every_batch_across_chunks():
    # 100 batches of 2: more than one chunk of held batches, so a mid-epoch fold happens.
    x, y = _data()
    model, opt = _model_and_optimizer(lr=0.0)  # no update: the epoch's figures are the model's on the set
    result = train_model(model, opt, (x, y), (x[:10], y[:10]), epochs=1, batch_size=2, seed=0)
    with torch.no_grad():
        logits = model.eval()(torch.as_tensor(x))
        loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(y)).item()
        accuracy = (logits.argmax(1).numpy() == y).mean()
    (record,) = result.history
    assert record.train_loss == pytest.approx(loss, rel=1e-5)
    assert record.train_accuracy == pytest.approx(accuracy)


@pytest.mark.parametrize("every", [0.0, 3600.0])
def test_checkpoints_and_their_callback_follow_the_interval(tmp_path, every):
    x, y = _data()
    model, opt = _model_and_optimizer()
    batches: list[list[int]] = []
    saved: list[int] = []

    def on_checkpoint(records):
        batches.append([r.epoch for r in records])
        saved.append(torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["epoch"])

    train_model(model, opt, (x, y), (x, y), epochs=4, batch_size=32, seed=0, checkpoint_dir=tmp_path,
                checkpoint_every_seconds=every, on_checkpoint=on_checkpoint)
    if every == 0.0:
        assert batches == [[1], [2], [3], [4]] and saved == [1, 2, 3, 4]
    else:
        # Nothing in between: only the last epoch, carrying every record, after its checkpoint is on disk.
        assert batches == [[1, 2, 3, 4]] and saved == [4]


def test_spaced_checkpoints_still_resume_to_the_same_result(tmp_path):
    x, y = _data()

    def fit(epochs, folder, every):
        model, opt = _model_and_optimizer()
        return train_model(model, opt, (x, y), (x, y), epochs=epochs, batch_size=32, seed=0,
                           checkpoint_dir=folder, checkpoint_every_seconds=every)

    full = fit(5, tmp_path / "full", 0.0)
    fit(3, tmp_path / "part", 3600.0)
    resumed = fit(5, tmp_path / "part", 3600.0)
    assert resumed.resumed_from_epoch == 3
    assert [(r.train_loss, r.val_accuracy) for r in resumed.history] == [
        (r.train_loss, r.val_accuracy) for r in full.history]


def test_throttled_shows_first_last_and_one_per_interval(monkeypatch):
    clock = iter([0.0, 0.2, 0.5, 1.1, 1.3, 2.4, 2.5])
    monkeypatch.setattr(training.time, "perf_counter", lambda: next(clock))
    shown: list[int] = []
    callback = throttled(lambda r: shown.append(r.epoch), last_epoch=7, seconds=1.0)
    for epoch in range(1, 8):
        callback(Epoch(epoch, 0.0, 0.0, 0.0, 0.0, 0.0))
    assert shown == [1, 4, 6, 7]
