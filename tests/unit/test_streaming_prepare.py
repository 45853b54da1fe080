"""Decoding and the split stage a chunk at a time (over ``data.memory_budget_mb``): the same files as in memory."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from normlab import prepare_stream, splitting
from normlab.config import PipelineConfig
from normlab.data import chunked_fit
from normlab.data.chunked_fit import FeatureFit, LabelFit, PairwiseSums, encode
from normlab.data.encoding import FeatureEncoder, LabelEncoder
from normlab.data.fingerprint import FrameDigest, fingerprint_frame
from normlab.data.image_folders import write_image_folder
from normlab.data.parquet_chunks import ParquetChunks
from normlab.errors import ConfigError, DataSourceError
from normlab.gate import GateScope, run_gate
from normlab.images import decode
from normlab.images.scan import scan_folder
from normlab.pipeline import load_batch

READ = pd.read_parquet  # unguarded, for the comparisons
TINY_MB = 0.002  # a few rows a chunk for these batches: every chunked path runs with many chunks
CORRUPTION = {"name": "noise", "kind": "corruption", "corruption": "gaussian_noise", "severity": [1, 3]}


def _config(root, data, ood, budget):
    return PipelineConfig.model_validate({
        "name": "s", "workdir": str(root / "work"), "data": {**data, "memory_budget_mb": budget},
        "splits": {"ood": ood}, "model": {"family": "mlp"},
    })


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """60 random 8x8 RGB images in three class folders."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("images") / "folder"
    images = rng.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8)
    write_image_folder(root, images, rng.integers(0, 3, 60), ["cat", "dog", "owl"])
    return root


@pytest.fixture(scope="module")
def mixed_table(tmp_path_factory):
    """240 rows: ints, floats with gaps, a boolean with gaps, text with gaps, dates and a text label."""
    rng = np.random.default_rng(1)
    n = 240
    frame = pd.DataFrame({
        "count": rng.integers(0, 50, n),
        "size": np.where(rng.random(n) < 0.1, np.nan, rng.normal(10, 3, n)),
        "flag": pd.array(np.where(rng.random(n) < 0.1, None, rng.random(n) < 0.5), dtype=object),
        "colour": np.where(rng.random(n) < 0.1, None, rng.choice(["red", "green", "blue", "grey"], n)),
        "day": pd.date_range("2024-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
        "label": rng.choice(["a", "b", "c"], n),
    })
    table = pa.Table.from_pandas(frame, preserve_index=False)
    # An integer column with one gap (pyarrow keeps it int64): float64 read whole, int64 in a chunk without the gap.
    count = pa.array([None if i == 5 else int(v) for i, v in enumerate(frame["count"])], type=pa.int64())
    path = tmp_path_factory.mktemp("table") / "table.parquet"
    pq.write_table(table.set_column(0, "count", count), path)
    return path


def _gate(cfg, run_dir):
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_gate(GateScope.from_config(cfg), load_batch(cfg.data, run_dir), run_dir)


def _prepare(cfg, batch, run_dir):
    return splitting.prepare_splits(cfg.data, cfg.splits, cfg.eval, cfg.seed, batch, run_dir)


def _assert_same_splits(got, want, got_dir, want_dir):
    """Arrays, labels, encoders, reference rows, eval frames and the `Splits` record: all equal."""
    assert got.path == str(got_dir / "prepared") and want.path == str(want_dir / "prepared.npz")
    mine, theirs = splitting.load_prepared(got), splitting.load_prepared(want)
    assert list(mine) == list(theirs)
    for key, (x, y) in theirs.items():
        assert mine[key][0].dtype == x.dtype and mine[key][1].dtype == y.dtype, key
        assert np.array_equal(mine[key][0], x) and np.array_equal(mine[key][1], y), key
    assert json.loads((got_dir / "encoder.json").read_text()) == json.loads((want_dir / "encoder.json").read_text())
    pd.testing.assert_frame_equal(READ(got.reference), READ(want.reference))
    assert list(got.eval_frames) == list(want.eval_frames)
    for key in want.eval_frames:
        pd.testing.assert_frame_equal(READ(got.eval_frames[key]), READ(want.eval_frames[key]))
    record = {k: v for k, v in got.model_dump().items() if k not in ("path", "encoder", "reference", "eval_frames")}
    assert record == {k: v for k, v in want.model_dump().items() if k in record}


def _guard(monkeypatch):
    """From now on, fail when a batch file is read whole; ``seen["largest"]``: the most rows encoded at once."""
    seen = {"largest": 0}
    encode, read_table, read_file = prepare_stream.encode, pq.read_table, pq.ParquetFile.read

    def narrow(read):
        def guarded(*args, columns=None, **kwargs):
            if columns is None:
                raise AssertionError("a Parquet file was read whole")
            return read(*args, columns=columns, **kwargs)
        return guarded

    def counted(encoder, frame):
        seen["largest"] = max(seen["largest"], len(frame))
        return encode(encoder, frame)

    monkeypatch.setattr(pd, "read_parquet", narrow(READ))
    monkeypatch.setattr(pq, "read_table", narrow(read_table))
    monkeypatch.setattr(pq.ParquetFile, "read", narrow(read_file))
    monkeypatch.setattr(prepare_stream, "encode", counted)
    return seen


@pytest.mark.parametrize("scale", ["global", True])
def test_an_image_folder_over_the_budget_decodes_and_splits_in_chunks_to_the_same_files(image_folder, tmp_path,
                                                                                      monkeypatch, scale):
    data = {"path": str(image_folder), "image_shape": [8, 8], "scale": scale}
    ood = [CORRUPTION, {"name": "owls", "kind": "column", "column": "label", "values": ["owl"]}]
    want_dir, got_dir = tmp_path / "memory", tmp_path / "chunked"
    want_cfg, got_cfg = _config(tmp_path, data, ood, 1024), _config(tmp_path, data, ood, TINY_MB)
    want_gate = _gate(want_cfg, want_dir)
    want = _prepare(want_cfg, want_gate.accepted, want_dir)
    decoded_at_once: list[int] = []
    decode_images = decode.decode_images

    def counted(paths, *args):
        decoded_at_once.append(len(paths))
        return decode_images(paths, *args)

    monkeypatch.setattr(decode, "decode_images", counted)
    got_gate = _gate(got_cfg, got_dir)
    # pixels.parquet: the same frame and fingerprint, decoded and written as row groups of a few rows.
    chunks = [n for n in decoded_at_once if n]
    assert max(chunks) < 10 and sum(chunks) == want_gate.rows_accepted
    assert pq.ParquetFile(got_gate.accepted.path).metadata.num_row_groups > 1
    pd.testing.assert_frame_equal(READ(got_gate.accepted.path), READ(want_gate.accepted.path))
    assert got_gate.accepted.model_dump(exclude={"path"}) == want_gate.accepted.model_dump(exclude={"path"})
    assert got_gate.accepted.fingerprint == fingerprint_frame(READ(want_gate.accepted.path))
    assert (got_gate.rows_in, got_gate.rows_accepted) == (want_gate.rows_in, want_gate.rows_accepted)
    # ...and what decoding every file at once gives (all 60 files are accepted, in the scan's order).
    monkeypatch.undo()
    whole, _ = decode.pixel_frame(scan_folder(image_folder).entries, image_folder, label="label", image_shape=(8, 8),
                                  mode=None)
    pd.testing.assert_frame_equal(READ(got_gate.accepted.path), whole)
    assert got_gate.accepted.fingerprint == fingerprint_frame(whole)
    assert pq.read_schema(got_gate.accepted.path).remove_metadata() == pa.Schema.from_pandas(
        whole, preserve_index=False).remove_metadata()

    seen = _guard(monkeypatch)
    got = _prepare(got_cfg, got_gate.accepted, got_dir)
    assert 0 < seen["largest"] < 10
    monkeypatch.undo()
    _assert_same_splits(got, want, got_dir, want_dir)
    assert got.populations == {"ood/noise/s1": "id/test", "ood/noise/s3": "id/test"}


@pytest.mark.parametrize("snapshot", [True, False], ids=["batch-snapshot", "pyarrow-file"])
def test_a_mixed_table_over_the_budget_splits_in_chunks_to_the_same_files(mixed_table, tmp_path, monkeypatch,
                                                                           snapshot):
    data = {"path": str(mixed_table), "label": "label"}
    ood = [{"name": "grey", "kind": "column", "column": "colour", "values": ["grey"]},
           {"name": "large", "kind": "quantile", "column": "size", "q": 0.9},
           {"name": "late", "kind": "time", "column": "day", "after": "2024-07-20"}]
    want_dir, got_dir = tmp_path / "memory", tmp_path / "chunked"
    want_dir.mkdir(), got_dir.mkdir()
    want_cfg, got_cfg = _config(tmp_path, data, ood, 1024), _config(tmp_path, data, ood, TINY_MB)
    want_cfg.eval.slices = got_cfg.eval.slices = ["colour"]
    batch = load_batch(want_cfg.data, want_dir)
    if not snapshot:  # the file itself, as pyarrow wrote it: "count" is int64 with a gap, not float64
        batch = batch.model_copy(update={"path": str(mixed_table)})
    want = _prepare(want_cfg, batch, want_dir)
    seen = _guard(monkeypatch)
    got = _prepare(got_cfg, batch, got_dir)
    assert 0 < seen["largest"] < 10
    monkeypatch.undo()
    _assert_same_splits(got, want, got_dir, want_dir)
    assert set(got.ood_thresholds) == {"large"}


@pytest.mark.parametrize("budget", [1024, TINY_MB])
def test_bad_input_is_the_same_one_clear_error_over_the_budget(mixed_table, tmp_path, budget):
    batch = load_batch(_config(tmp_path, {"path": str(mixed_table)}, [], 1024).data, tmp_path)

    def prepare(ood, **data):
        cfg = _config(tmp_path, {"path": str(mixed_table), **data}, ood, budget)
        return _prepare(cfg, batch, tmp_path / "run")

    with pytest.raises(ConfigError, match=r"OOD column 'shade' is not in the data; available columns: count, size"):
        prepare([{"name": "x", "kind": "column", "column": "shade", "values": ["a"]}])
    with pytest.raises(ConfigError, match="'x': selects no rows of this batch"):
        prepare([{"name": "x", "kind": "column", "column": "colour", "values": ["purple"]}])
    with pytest.raises(ConfigError, match=r"data\.features: columns not in the data: shade"):
        prepare([], features=["count", "shade"])
    with pytest.raises(DataSourceError, match=r"the ID train split is empty: the batch has too few rows \(0\)"):
        prepare([{"name": "x", "kind": "time", "column": "day", "after": "2023-12-01"}])
    dated = tmp_path / "dated.parquet"
    READ(mixed_table).assign(day=lambda f: pd.to_datetime(f["day"])).to_parquet(dated, index=False)
    cfg = _config(tmp_path, {"path": str(dated)}, [], budget)
    (tmp_path / "dated").mkdir()
    with pytest.raises(ConfigError, match="feature 'day' has dtype datetime64"):
        _prepare(cfg, load_batch(cfg.data, tmp_path / "dated"), tmp_path / "dated")


# The pieces: each equal to its all-at-once counterpart ------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 7, 128, 129, 1000, 8193, 100_003])
def test_pairwise_sums_fed_in_pieces_are_numpys_sums_to_the_bit(n):
    rng = np.random.default_rng(n)
    values = rng.standard_normal((3, n)) * 1e3
    sums, at = PairwiseSums(n, 3), 0
    while at < n:
        step = int(rng.integers(1, max(2, n // 4)))
        sums.add(values[:, at : at + step])
        at += step
    assert sums.total().tolist() == [np.sum(values[j]) for j in range(3)]


def _frame(n, seed):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "u8": rng.integers(0, 256, n).astype(np.uint8), "i": rng.integers(-1000, 1000, n),
        "f": rng.normal(3, 10, n), "gaps": np.where(rng.random(n) < 0.2, np.nan, rng.normal(0, 1, n)),
        "huge": rng.normal(0, 1e200, n), "b": rng.random(n) < 0.3, "const": np.full(n, 5.0),
        "inf": np.where(rng.random(n) < 0.1, np.inf, rng.random(n)), "t": rng.choice(["a", "b", None, "c"], n),
    })


@pytest.mark.parametrize("scale", [True, False, "global"])
@pytest.mark.parametrize("rows", [1, 7, 300])
def test_feature_fit_in_chunks_is_feature_encoder_fit_to_the_bit(scale, rows):
    frame = _frame(300, seed=rows)
    fit = FeatureFit(frame.iloc[:0], list(frame.columns), scale=scale)
    passes = 0
    while True:
        passes += 1
        for start in range(0, len(frame), rows):
            fit.observe(frame.iloc[start : start + rows])
        if not fit.next_pass():
            break
    assert fit.encoder() == FeatureEncoder.fit(frame, list(frame.columns), scale=scale)
    assert passes == (2 if scale is False else 3)


@pytest.mark.parametrize("scale", [True, False, "global"])
def test_encode_is_transform_to_the_bit(scale):
    frame = _frame(200, seed=4).assign(text=lambda f: f["u8"].astype(str).astype(object))
    features = ["t", "u8", "huge", "gaps", "b", "inf", "f"]
    encoder = FeatureEncoder.fit(frame, features, scale=scale)
    assert encode(encoder, frame).tobytes() == encoder.transform(frame).tobytes()
    # A numeric column that arrives as text goes through transform's own parsing.
    as_text = FeatureEncoder.fit(frame.assign(text=frame["u8"]), ["text", "t", "f"], scale=scale)
    assert encode(as_text, frame).tobytes() == as_text.transform(frame).tobytes()


def test_integer_pixels_need_no_pass_for_their_means():
    frame = pd.DataFrame(np.random.default_rng(0).integers(0, 256, (500, 48), dtype=np.uint8),
                         columns=[f"pixel_{i}" for i in range(48)])
    fit = FeatureFit(frame.iloc[:0], list(frame.columns), scale="global")
    fit.observe(frame.iloc[:200])
    fit.observe(frame.iloc[200:])
    assert fit.next_pass()  # the pooled std
    fit.observe(frame.iloc[:123])
    fit.observe(frame.iloc[123:])
    assert not fit.next_pass()
    assert fit.encoder() == FeatureEncoder.fit(frame, list(frame.columns), scale="global")


def test_chunked_fits_fail_as_the_whole_fits_do():
    frame = _frame(20, seed=0).assign(empty=np.nan, day=pd.Timestamp("2024-01-01"), label=["x"] * 19 + [None])
    with pytest.raises(ConfigError, match="feature 'day' has dtype datetime64"):
        FeatureFit(frame.iloc[:0], ["u8", "day"])
    fit = FeatureFit(frame.iloc[:0], ["u8", "empty"])
    fit.observe(frame)
    with pytest.raises(DataSourceError, match="feature 'empty' has no finite values"):
        fit.next_pass()
    labels = LabelFit("label")
    labels.observe(frame["label"].iloc[:10])
    labels.observe(frame["label"].iloc[10:])
    with pytest.raises(DataSourceError, match="label column 'label' has 1 missing labels"):
        labels.encoder()
    labels = LabelFit("label")
    for part in np.array_split(np.arange(20), 3):
        labels.observe(pd.Series(np.arange(20)[::-1] % 4, name="label").iloc[part])
    assert labels.encoder() == LabelEncoder.fit(pd.Series(np.arange(20) % 4))


def test_a_digest_of_chunks_is_the_fingerprint_of_the_frame():
    frame = _frame(50, seed=3)
    digest = FrameDigest(frame.columns, frame.dtypes, len(frame))
    for start in range(0, 50, 7):
        digest.update(frame.iloc[start : start + 7])
    assert digest.hexdigest() == fingerprint_frame(frame)


def test_chunks_read_back_with_the_whole_files_dtypes(mixed_table):
    whole = pd.read_parquet(mixed_table)
    chunks = list(ParquetChunks(mixed_table, rows=4).frames())
    assert all(frame.dtypes.equals(whole.dtypes) for _, frame in chunks)
    assert pq.read_schema(mixed_table).field("count").type == pa.int64()
    plain = next(f for _, f in chunks if f["count"].notna().all() and f["flag"].notna().all())
    assert plain["count"].dtype == np.float64 and plain["flag"].dtype == object  # read alone: int64 and bool
    pd.testing.assert_frame_equal(pd.concat([f for _, f in chunks]), whole)
    assert ParquetChunks(mixed_table).empty.dtypes.equals(whole.dtypes)


def test_the_chunked_module_keeps_numpys_summation_constants():
    # numpy's PW_BLOCKSIZE and unroll: PairwiseSums relies on them, test_pairwise_sums_... checks them.
    assert (chunked_fit._BLOCK, chunked_fit._UNROLL) == (128, 8)
