"""Streaming from memory-mapped splits: the same batches, the same training, the same resumed run as in memory."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from normlab import pipeline, splitting
from normlab.config import validate_config
from normlab.models import build_model
from normlab.stages import train_stage
from normlab.streaming import EpochBatches, MemmapRows, batch_loader, chunks
from normlab.training import make_optimizer, set_seeds, train_model

CPU = torch.device("cpu")


def _reference_batches(n, batch_size, generator, epochs, min_batch):
    """The in-memory loop's index batches, written out as `train_model` drew them before streaming existed."""
    out = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        epoch = []
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < min_batch:
                continue
            epoch.append(idx)
        out.append(epoch)
    return out


def _mapped(tmp_path, x, y):
    """``x`` and ``y`` written as .npy files and mapped back read-only, as `load_prepared` maps them."""
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return np.load(tmp_path / "x.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r")


def _data(n=193, features=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, size=(classes, features))
    y = rng.integers(0, classes, size=n)
    return (centers[y] + rng.normal(0, 1, size=(n, features))).astype(np.float32), y.astype(np.int64)


def _assert_same_batches(got, want):
    assert len(got) == len(want)
    for got_epoch, want_epoch in zip(got, want, strict=True):
        assert len(got_epoch) == len(want_epoch)
        for a, b in zip(got_epoch, want_epoch, strict=True):
            assert torch.equal(a, b)


# 200 rows: batch 199 leaves a singleton (skipped for BatchNorm, kept otherwise); 1 and 7 and 32 do not divide evenly.
@pytest.mark.parametrize(("batch_size", "min_batch"), [(1, 1), (7, 2), (32, 1), (32, 2), (199, 2), (199, 1)])
def test_epoch_batches_are_the_in_memory_loops_batches_and_resume_mid_run(batch_size, min_batch):
    want = _reference_batches(200, batch_size, torch.Generator().manual_seed(3), 4, min_batch)
    generator = torch.Generator().manual_seed(3)
    sampler = EpochBatches(200, batch_size, generator, min_batch=min_batch)
    got = [list(sampler) for _ in range(2)]
    # Resume: a fresh generator given the checkpointed state continues the order.
    resumed = torch.Generator()
    resumed.set_state(generator.get_state())
    sampler = EpochBatches(200, batch_size, resumed, min_batch=min_batch)
    got += [list(sampler) for _ in range(2)]
    _assert_same_batches(got, want)
    assert all(len(epoch) == len(sampler) for epoch in got)


def test_an_iterator_that_is_never_advanced_draws_no_permutation():
    # A DataLoader with workers makes and drops an extra sampler iterator each epoch.
    generator = torch.Generator().manual_seed(0)
    before = generator.get_state()
    iter(EpochBatches(10, 3, generator))
    assert torch.equal(generator.get_state(), before)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_the_loader_yields_the_in_memory_tensors_in_order_and_resumes(tmp_path, num_workers):
    x, y = _data()
    xm, ym = _mapped(tmp_path, x, y)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    want = _reference_batches(len(y), 32, torch.Generator().manual_seed(5), 4, 2)  # 193 = 6 * 32 + 1
    global_rng = torch.get_rng_state()

    def epochs(generator, count):
        sampler = EpochBatches(len(y), 32, generator, min_batch=2)
        loader = batch_loader(MemmapRows(xm, ym), sampler, device=CPU, seed=0, num_workers=num_workers)
        return [list(loader) for _ in range(count)]

    generator = torch.Generator().manual_seed(5)
    got = epochs(generator, 2)
    resumed = torch.Generator()
    resumed.set_state(generator.get_state())
    got += epochs(resumed, 2)
    for got_epoch, want_epoch in zip(got, want, strict=True):
        assert len(got_epoch) == len(want_epoch) == 6
        for (xb, yb), idx in zip(got_epoch, want_epoch, strict=True):
            assert xb.dtype == torch.float32 and yb.dtype == torch.int64
            assert torch.equal(xb, xt[idx]) and torch.equal(yb, yt[idx])
    # The loader's worker seed comes from its own generator: dropout's global RNG is left alone.
    assert torch.equal(torch.get_rng_state(), global_rng)


def test_validation_chunks_are_the_in_memory_slices(tmp_path):
    x, y = _data(n=50)
    xm, ym = _mapped(tmp_path, x, y)
    loader = batch_loader(MemmapRows(xm, ym), chunks(50, 16), device=CPU, seed=0)
    got = list(loader)
    assert [len(yb) for _, yb in got] == [16, 16, 16, 2]
    assert torch.equal(torch.cat([xb for xb, _ in got]), torch.as_tensor(x))
    assert torch.equal(torch.cat([yb for _, yb in got]), torch.as_tensor(y))


def test_a_pickled_dataset_maps_the_file_again_instead_of_copying_it(tmp_path):
    x, y = _data(n=2000, features=64)
    rows = MemmapRows(*_mapped(tmp_path, x, y))
    blob = pickle.dumps(rows)
    assert len(blob) < 2_000  # the data are 512 kB
    again = pickle.loads(blob)
    assert isinstance(again.x, np.memmap) and np.array_equal(again.x, x) and np.array_equal(again.y, y)
    # A view into a map cannot be mapped again from its file: it is pickled with its data.
    part = pickle.loads(pickle.dumps(MemmapRows(rows.x[10:20], rows.y[10:20])))
    assert np.array_equal(part.x, x[10:20])


def _train(train, val, *, epochs, checkpoint_dir=None):
    set_seeds(0)
    model = build_model("mlp", in_features=12, num_classes=3, norm="batch", hidden=(16,), dropout=0.2)
    opt = make_optimizer(model.parameters(), "sgd", lr=0.05)
    result = train_model(model, opt, train, val, epochs=epochs, batch_size=32, seed=0, eval_batch_size=16,
                         checkpoint_dir=checkpoint_dir)
    return model, result


def _numbers(result):
    return [(r.epoch, r.train_loss, r.train_accuracy, r.val_loss, r.val_accuracy) for r in result.history]


def _same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_training_on_memory_maps_is_bit_identical_to_in_memory_and_resumes(tmp_path):
    # BatchNorm (the trailing singleton of 193 rows in batches of 32 is skipped) and dropout (the global RNG).
    x, y = _data()
    xv, yv = _data(n=41, seed=1)
    (tmp_path / "t").mkdir(), (tmp_path / "v").mkdir()
    train_m, val_m = _mapped(tmp_path / "t", x, y), _mapped(tmp_path / "v", xv, yv)
    memory_model, memory = _train((x, y), (xv, yv), epochs=4)
    streamed_model, streamed = _train(train_m, val_m, epochs=4)
    assert _numbers(streamed) == _numbers(memory)
    assert _same_weights(streamed_model, memory_model)

    _train(train_m, val_m, epochs=2, checkpoint_dir=tmp_path / "ckpt")
    resumed_model, resumed = _train(train_m, val_m, epochs=4, checkpoint_dir=tmp_path / "ckpt")
    assert resumed.resumed_from_epoch == 2
    assert _numbers(resumed) == _numbers(memory)
    assert _same_weights(resumed_model, memory_model)


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """The digits batch prepared twice: under the default budget (prepared.npz) and over a tiny one (prepared/)."""
    runs = {}
    for name, budget in (("memory", 1024), ("streamed", 0.01)):
        root = tmp_path_factory.mktemp(name)
        cfg = validate_config({
            "name": name, "workdir": str(root / "work"), "data": {"memory_budget_mb": budget, "image_shape": [8, 8]},
            "splits": {"ood": [{"name": "noise", "kind": "corruption", "corruption": "gaussian_noise",
                                "severity": [1, 2]}]},
            "train": {"epochs": 2},
        })
        run_dir = root / "run"
        run_dir.mkdir()
        batch = pipeline.load_batch(cfg.data, run_dir)
        runs[name] = (cfg, splitting.prepare_splits(cfg.data, cfg.splits, cfg.eval, cfg.seed, batch, run_dir),
                      run_dir)
    return runs


def test_splits_over_the_budget_are_npy_files_read_back_memory_mapped(digits_runs):
    _, in_memory, memory_dir = digits_runs["memory"]
    _, streamed, streamed_dir = digits_runs["streamed"]
    assert in_memory.path == str(memory_dir / "prepared.npz")
    assert streamed.path == str(streamed_dir / "prepared") and not (streamed_dir / "prepared.npz").exists()
    assert (streamed_dir / "prepared" / "ood" / "noise" / "s2" / "x.npy").is_file()
    want, got = splitting.load_prepared(in_memory), splitting.load_prepared(streamed)
    assert list(got) == list(want) == ["id/test", "id/train", "id/val", "ood/noise/s1", "ood/noise/s2"]
    for key, (x, y) in got.items():
        assert isinstance(x, np.memmap) and isinstance(y, np.memmap) and not x.flags.writeable
        assert x.dtype == want[key][0].dtype and y.dtype == want[key][1].dtype
        assert np.array_equal(x, want[key][0]) and np.array_equal(y, want[key][1])
    assert splitting.load_prepared(streamed.path).keys() == got.keys()


def test_the_pipeline_trains_a_streamed_run_exactly_as_an_in_memory_one(digits_runs):
    trained = {}
    for name, (cfg, prepared, run_dir) in digits_runs.items():
        trained[name] = train_stage(cfg, prepared, run_dir)
    assert _numbers(trained["streamed"].result) == _numbers(trained["memory"].result)
    assert len(trained["streamed"].result.history) == 2
    memory = torch.load(trained["memory"].model_path, weights_only=True)
    streamed = torch.load(trained["streamed"].model_path, weights_only=True)
    assert all(torch.equal(memory[k], streamed[k]) for k in memory)


def test_the_bench_section_runs_and_finds_the_same_history():
    from bench.streaming import run

    result = run("smoke", threads=1)
    row = result["rows"][0]
    assert row["family"] == "mlp" and row["device"] == "cpu" and row["ratio"] > 0
    assert row["identical_history"] and result["table"][0]["same history"] == "yes"
    # Decode + prepare, peak memory: each side in its own process, the chunked one over its budget.
    memory = result["memory"]
    assert [r["ood"] for r in memory] == ["none", "gaussian_noise s1, s3"]
    for r in memory:
        assert not r["in_memory"]["streamed"] and r["chunked"]["streamed"]
        assert r["in_memory"]["rows"] == r["chunked"]["rows"] > 0 and r["ratio"] > 0
    assert len(result["tables"]["decode + prepare, peak memory"]) == 2
