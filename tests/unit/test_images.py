"""Image files as a batch: the scan, the fingerprint, the gate's image checks, decoding, and the pixel rows."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from normlab.config import PipelineConfig
from normlab.contracts import ImageSource
from normlab.data.image_folders import write_faulty_folder, write_image_folder, write_manifest
from normlab.data.shapes import generate_shapes
from normlab.errors import DataSourceError
from normlab.gate import GateScope, assess, run_gate
from normlab.images.decode import decode_images, pixel_frame
from normlab.images.scan import scan_folder, scan_table
from normlab.pipeline import load_batch


def image_config(root, **data) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "name": "imgs", "workdir": str(root / "work"),
        "data": {"path": str(root), "image_shape": [16, 16], "scale": "global", **data},
        "splits": {"ood": []}, "model": {"family": "cnn", "norm": "batch"},
        # The faulty folder is a third faults: the batch must not be blocked for losing them.
        "gate": {"rejected_share": {"max_share": 0.5}},
    })


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    return write_faulty_folder(tmp_path_factory.mktemp("faulty") / "images", seed=0)


def test_the_scan_lists_every_file_once_with_what_it_found(faulty):
    manifest = scan_folder(faulty.root)
    entries = manifest.entries.set_index("image")
    every_file = {p.relative_to(faulty.root).as_posix() for p in faulty.root.rglob("*") if p.is_file()}
    assert set(entries.index) == every_file  # nothing dropped, nothing invented
    assert manifest.empty_classes == (faulty.empty_class,)
    assert entries.loc[faulty.outside_root, "outside"].startswith("outside the layout: directly in the root")
    assert entries.loc[faulty.too_deep, "outside"].startswith("outside the layout: nested")
    assert entries.loc[faulty.non_image_file, "outside"].startswith("not an image file")
    assert entries.loc[faulty.corrupt, "error"].startswith("Pillow cannot decode it")
    assert entries.loc[faulty.not_image, "error"].startswith("Pillow cannot decode it")
    assert entries.loc[faulty.cmyk, "mode"] == "CMYK"
    assert entries.loc[faulty.grayscale, "mode"] == "L"
    assert (entries.loc[faulty.too_small, "width"], entries.loc[faulty.too_small, "height"]) == (4, 4)
    fine = entries.loc[list(faulty.valid)]
    assert (fine["outside"] == "").all() and (fine["error"] == "").all()
    assert (fine["label"] == [p.split("/")[0] for p in faulty.valid]).all()


def test_the_fingerprint_covers_bytes_and_labels_and_survives_renaming_the_root(faulty, tmp_path):
    before = scan_folder(faulty.root).fingerprint()
    moved = tmp_path / "renamed-root"
    shutil.copytree(faulty.root, moved)
    assert scan_folder(moved).fingerprint() == before
    first = moved / faulty.valid[0]
    first.rename(first.with_name("renamed.png"))  # a file renamed within its class: same content, same label
    assert scan_folder(moved).fingerprint() == before
    label, name = faulty.valid[1].split("/")
    other = next(c for c in faulty.classes if c != label)
    (moved / faulty.valid[1]).rename(moved / other / name)  # a relabelled file changes it
    relabelled = scan_folder(moved).fingerprint()
    assert relabelled != before
    target = moved / faulty.valid[2]
    data = bytearray(target.read_bytes())
    data[-20] ^= 1  # one byte
    target.write_bytes(bytes(data))
    assert scan_folder(moved).fingerprint() not in (before, relabelled)


def test_the_gate_quarantines_each_fault_by_path_and_reads_the_rest(faulty, tmp_path):
    cfg = image_config(faulty.root)
    batch = load_batch(cfg.data, tmp_path)
    assert batch.images is not None and batch.rows == sum(1 for p in faulty.root.rglob("*") if p.is_file())
    result = run_gate(GateScope.from_config(cfg), batch, tmp_path)
    checks = {c.name: c for c in result.report.checks}
    # A table's checks do not run on image files; the image checks do not run on tables.
    assert {"non_finite", "duplicates", "label_noise"}.isdisjoint(checks)
    assert checks["image_layout"].outcome == "quarantined" and checks["image_layout"].unexpected_count == 3
    assert checks["image_readable"].outcome == "quarantined" and checks["image_readable"].unexpected_count == 2
    assert checks["image_mode"].observed == ["CMYK"]
    assert checks["image_size"].observed == ["4x4"]
    _original, *copies = faulty.duplicates
    assert checks["image_duplicates"].unexpected_count == len(copies)  # the first copy stays
    assert checks["empty_class"].outcome == "warned" and checks["empty_class"].observed == [faulty.empty_class]
    quarantined = pd.read_parquet(result.quarantine_path)
    expected = {faulty.outside_root, faulty.too_deep, faulty.non_image_file, faulty.corrupt, faulty.not_image,
                faulty.cmyk, faulty.too_small, *copies}
    assert set(quarantined["image"]) == expected
    reasons = dict(zip(quarantined["image"], quarantined["_normlab_checks"], strict=True))
    assert reasons[faulty.corrupt] == "image_readable" and reasons[faulty.cmyk] == "image_mode"
    # Nothing was moved or changed: every file is still where it was.
    assert all((faulty.root / p).is_file() for p in expected)
    # The accepted batch is pixel rows of the valid files: RGB (some images have colour), 3*16*16 values each.
    pixels = pd.read_parquet(result.accepted_path)
    assert result.accepted.images.mode == "RGB"
    assert len(pixels) == result.rows_accepted == len(faulty.valid)
    assert [c for c in pixels.columns if c.startswith("pixel_")] == [f"pixel_{i}" for i in range(3 * 16 * 16)]
    assert pixels["pixel_0"].dtype == np.uint8
    assert sorted(pixels["label"].unique()) == sorted(faulty.classes)
    assert result.rows_in == result.rows_accepted + result.rows_quarantined


def test_a_batch_that_loses_too_many_files_is_blocked(faulty, tmp_path):
    cfg = PipelineConfig.model_validate({"data": {"path": str(faulty.root), "image_shape": [16, 16]}})
    result = run_gate(GateScope.from_config(cfg), load_batch(cfg.data, tmp_path), tmp_path)
    assert result.blocked and result.accepted is None
    assert next(c for c in result.report.checks if c.name == "rejected_share").outcome == "blocked"
    assert not (tmp_path / "pixels.parquet").exists()  # nothing decoded for a blocked batch


def test_a_blocking_image_check_stops_the_batch(faulty, tmp_path):
    cfg = image_config(faulty.root).model_copy(deep=True)
    cfg.gate.empty_class.severity = "block"
    result = run_gate(GateScope.from_config(cfg), load_batch(cfg.data, tmp_path), tmp_path)
    assert result.blocked and result.accepted is None


def test_image_checks_at_warn_keep_the_file_and_read_it_anyway(faulty, tmp_path):
    cfg = image_config(faulty.root).model_copy(deep=True)
    cfg.gate.image_mode.severity = "warn"
    cfg.gate.image_size.severity = "warn"
    cfg.gate.image_duplicates.severity = "off"
    result = run_gate(GateScope.from_config(cfg), load_batch(cfg.data, tmp_path), tmp_path)
    quarantined = set(pd.read_parquet(result.quarantine_path)["image"])
    assert {faulty.cmyk, faulty.too_small, *faulty.duplicates}.isdisjoint(quarantined)
    assert result.rows_accepted == len(faulty.valid) + 2 + len(faulty.duplicates) - 1  # the original is valid


def test_the_image_checks_are_not_run_on_a_table(tmp_path):
    frame = pd.DataFrame({"x": np.arange(40.0), "label": np.arange(40) % 2})
    cfg = PipelineConfig.model_validate({"data": {"path": "x.csv"}})
    names = [c.name for c in assess(frame, GateScope.from_config(cfg), None).checks]
    assert not [n for n in names if n.startswith("image_") or n == "empty_class"]
    assert "duplicates" in names and "non_finite" in names


def test_decoding_resizes_converts_and_lays_pixels_out_channel_first(tmp_path):
    gradient = np.tile(np.arange(0, 240, 10, dtype=np.uint8), (12, 1))  # 12 x 24, brighter to the right
    rgb = np.stack([gradient, np.full_like(gradient, 7), 255 - gradient], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(gradient).save(tmp_path / "g.png")
    out = decode_images([tmp_path / "a.png", tmp_path / "g.png"], (6, 8), "RGB")
    assert out.shape == (2, 3 * 6 * 8) and out.dtype == np.uint8
    planes = out[0].reshape(3, 6, 8)
    assert (planes[1] == 7).all()  # the constant green channel is the second plane
    assert np.all(np.diff(planes[0].astype(int), axis=1) > 0)  # red grows to the right after resizing
    assert np.all(np.diff(planes[2].astype(int), axis=1) < 0)
    gray = out[1].reshape(3, 6, 8)
    assert (gray[0] == gray[1]).all() and (gray[1] == gray[2]).all()  # L read as RGB: three equal planes
    single = decode_images([tmp_path / "a.png"], (6, 8), "L")
    assert single.shape == (1, 48)


def test_exif_orientation_is_applied(tmp_path):
    tall = np.zeros((20, 10), dtype=np.uint8)
    tall[:5] = 255  # a white band at the top
    image = Image.fromarray(tall)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = decode_images([tmp_path / "r.jpg"], (10, 20), "L").reshape(10, 20)
    assert out[:, -5:].mean() > 200 and out[:, :5].mean() < 50  # upright: the band is on the right


def test_a_table_of_image_paths_keeps_its_other_columns(tmp_path):
    images, labels, names = generate_shapes(30, size=16, seed=1)
    root = tmp_path / "imgs"
    write_image_folder(root, images, labels, names)
    table = tmp_path / "index.csv"
    write_manifest(root, table, column="file", label="label")
    frame = pd.read_csv(table)
    frame["camera"] = np.where(np.arange(len(frame)) % 2, "a", "b")
    frame.to_csv(table, index=False)
    manifest = scan_table(pd.read_csv(table), table, column="file", label="label")
    assert list(manifest.entries.columns[:2]) == ["image", "label"] and "camera" in manifest.entries.columns
    assert (manifest.entries["error"] == "").all()
    pixels, mode = pixel_frame(manifest.entries, manifest.root, label="label", image_shape=(16, 16), mode=None)
    assert mode == "RGB" and list(pixels.columns[-2:]) == ["label", "camera"]
    clash = pd.read_csv(table).assign(width=1)
    with pytest.raises(DataSourceError, match="'width' has the name of a column normlab adds"):
        scan_table(clash, table, column="file", label="label")
    with pytest.raises(DataSourceError, match="image column 'path'"):
        scan_table(pd.read_csv(table), table, column="path", label="label")


def test_image_files_need_an_image_shape(faulty, tmp_path):
    cfg = PipelineConfig.model_validate({"data": {"path": str(faulty.root)}})
    with pytest.raises(DataSourceError, match=r"set data\.image_shape"):
        load_batch(cfg.data, tmp_path)


def test_an_empty_or_missing_folder_is_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="holds no files"):
        scan_folder(tmp_path / "empty")
    with pytest.raises(DataSourceError, match="does not exist"):
        scan_folder(tmp_path / "missing")


def test_image_source_round_trips_in_a_batch():
    source = ImageSource(root="/data/x", empty_classes=["cat"], mode="RGB")
    assert ImageSource.model_validate(source.model_dump()) == source
