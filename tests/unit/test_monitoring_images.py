"""Image batches in the monitoring ledger: which folders are batches, opening one exactly once, the pixels
the drift is measured on (no Prefect, no MLflow)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from normlab import monitoring
from normlab.config import load_config
from normlab.data.image_folders import write_faulty_folder, write_image_folder
from normlab.data.shapes import generate_shapes
from normlab.monitoring.image_batches import typed_pixels
from normlab.registry import registry_name

NAMES = ["circle", "square", "triangle"]


@pytest.fixture
def cfg(tmp_path):
    return load_config(None, [f"workdir={tmp_path / 'work'}", "data.image_shape=[8, 8]"])


@pytest.fixture(scope="module")
def images():
    pictures, labels, _ = generate_shapes(90, size=12, seed=2)
    return pictures, labels % 3


def aged(folder: Path, order: int = 0) -> str:
    """Give every file and folder below ``folder`` an old modification time (settled; ``order`` sorts batches)."""
    stamp = 10**18 + order
    for root, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            os.utime(os.path.join(root, name), ns=(stamp, stamp))
    os.utime(folder, ns=(stamp, stamp))
    return str(folder)


def flat(folder: Path, pictures: np.ndarray, order: int = 0) -> str:
    """Unlabelled images directly in ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True)
    for i, picture in enumerate(pictures):
        Image.fromarray(picture).save(folder / f"cam_{i:03d}.png")
    return aged(folder, order)


def labelled(folder: Path, pictures: np.ndarray, labels: np.ndarray, order: int = 0) -> str:
    write_image_folder(folder, pictures, labels, NAMES)
    return aged(folder, order)


def _open(cfg, path: str) -> monitoring.LandedBatch:
    return monitoring.open_landed_batch(cfg.workdir_path(), registry_name(cfg), path, cfg.data)


# Discovery ------------------------------------------------------------------------------


def test_a_flat_folder_is_one_unlabelled_batch(tmp_path, images):
    batch = flat(tmp_path / "today", images[0][:5])
    assert monitoring.discover_batches(batch) == [str(Path(batch).resolve())]
    assert monitoring.image_layout(batch) == "flat"


def test_a_folder_of_class_folders_is_one_batch_when_they_are_the_models_classes(tmp_path, images):
    batch = labelled(tmp_path / "labelled", images[0][:9], images[1][:9])
    assert monitoring.image_layout(batch) == "labelled"
    assert monitoring.discover_batches(batch, classes=NAMES) == [str(Path(batch).resolve())]
    # Folders not named by the model's classes are batches of a landing folder: each one flat.
    listed = monitoring.discover_batches(batch, classes=["cat", "dog"])
    assert sorted(Path(p).name for p in listed) == ["circle", "square", "triangle"]


def test_a_landing_folder_lists_tables_and_image_batches_oldest_first(tmp_path, images):
    land = tmp_path / "landing"
    land.mkdir()
    labelled(land / "b-labelled", images[0][:6], images[1][:6], order=2)
    flat(land / "a-flat", images[0][6:10], order=3)
    pd.DataFrame({"image": ["x.png"], "label": ["circle"]}).to_csv(land / "c.csv", index=False)
    os.utime(land / "c.csv", ns=(10**18 + 1, 10**18 + 1))
    flat(land / "_uploading", images[0][:2])
    (land / "empty").mkdir()
    (land / "notes").mkdir()
    (land / "notes" / "readme.txt").write_text("not images")
    os.symlink(land / "a-flat", land / "link")
    assert [Path(p).name for p in monitoring.discover_batches(land, classes=NAMES)] == [
        "c.csv", "b-labelled", "a-flat"]


# Opening ------------------------------------------------------------------------------


def test_open_claims_once_and_a_renamed_copy_is_recognised(cfg, tmp_path, images):
    batch = flat(tmp_path / "landing" / "day1", images[0][:12])
    opened = _open(cfg, batch)
    assert opened.status == "claimed" and opened.rows == 12 and opened.images is not None
    snapshot = pd.read_parquet(opened.path)
    assert snapshot["label"].isna().all() and (snapshot["error"] == "").all() and (snapshot["outside"] == "").all()
    assert Path(opened.images.root) == Path(batch).resolve()
    done_copy = tmp_path / "landing" / "day1-again"
    shutil.copytree(batch, done_copy)
    for i, f in enumerate(sorted(done_copy.iterdir())):
        f.rename(done_copy / f"renamed_{i}.png")
    again = _open(cfg, aged(done_copy))
    assert again.fingerprint == opened.fingerprint
    assert again.skip and "being processed" in again.reason


def test_a_folder_still_being_written_is_pending(cfg, tmp_path, images, monkeypatch):
    from normlab.monitoring import image_batches

    monkeypatch.setattr(image_batches, "SETTLE_S", 0.2)
    batch = tmp_path / "day"
    flat(batch, images[0][:3])
    (batch / "late.png").write_bytes((batch / "cam_000.png").read_bytes())
    real = image_batches.folder_identity
    calls = []

    def growing(path):
        calls.append(path)
        size, newest = real(path)
        return size + len(calls), newest  # every look finds it changed

    monkeypatch.setattr(image_batches, "folder_identity", growing)
    opened = _open(cfg, str(batch))
    assert opened.status == "pending" and "still being written" in opened.reason


def test_without_image_shape_the_batch_is_unreadable_with_the_reason(tmp_path, images):
    cfg = load_config(None, [f"workdir={tmp_path / 'work'}", "data.image_shape=null", "splits.ood=[]"])
    batch = flat(tmp_path / "day", images[0][:3])
    opened = _open(cfg, batch)
    assert opened.status == "unreadable" and "data.image_shape" in opened.reason
    # Recorded: not read again until the folder changes.
    triage = monitoring.triage_batches(cfg.workdir_path(), [batch])
    assert triage.new == [] and triage.skipped[0].status == "unreadable"
    (Path(batch) / "more.png").write_bytes((Path(batch) / "cam_000.png").read_bytes())
    assert monitoring.triage_batches(cfg.workdir_path(), [aged(Path(batch), order=5)]).new == [batch]


def test_a_link_to_a_folder_is_refused(cfg, tmp_path, images):
    real = flat(tmp_path / "real", images[0][:3])
    os.symlink(real, tmp_path / "link")
    opened = _open(cfg, str(tmp_path / "link"))
    assert opened.status == "refused" and "symbolic link" in opened.reason


def test_a_table_naming_images_opens_as_an_image_batch(tmp_path, images):
    cfg = load_config(None, [f"workdir={tmp_path / 'work'}", "data.image_shape=[8, 8]", "data.image_column=file"])
    folder = tmp_path / "landing"
    flat(folder / "files", images[0][:4])
    table = folder / "batch.csv"
    pd.DataFrame({"file": [f"files/cam_{i:03d}.png" for i in range(4)], "site": list("abab")}).to_csv(table,
                                                                                                     index=False)
    os.utime(table, ns=(10**18, 10**18))
    opened = _open(cfg, str(table))
    assert opened.status == "claimed" and opened.rows == 4
    snapshot = pd.read_parquet(opened.path)
    assert list(snapshot["site"]) == list("abab") and snapshot["label"].isna().all()
    assert (snapshot["sha256"].str.len() == 64).all()


# The pixels drift is measured on ------------------------------------------------------


def test_typed_pixels_decode_every_readable_file_in_the_models_mode(cfg, tmp_path):
    faulty = write_faulty_folder(tmp_path / "faulty", per_class=3, size=12)
    opened = _open(cfg, aged(faulty.root))
    entries = pd.read_parquet(opened.path)
    path, rows = typed_pixels(entries, opened.images.root, tmp_path, label="label", image_shape=(8, 8), mode="RGB")
    frame = pd.read_parquet(path)
    readable = ((entries["outside"] == "") & (entries["error"] == "")).sum()
    assert rows == len(frame) == readable < len(entries)
    assert [c for c in frame.columns if c.startswith("pixel_")] == [f"pixel_{i}" for i in range(3 * 64)]
    (tmp_path / "g").mkdir()
    gray, _ = typed_pixels(entries, opened.images.root, tmp_path / "g", label="label", image_shape=(8, 8), mode="L")
    assert len([c for c in pd.read_parquet(gray).columns if c.startswith("pixel_")]) == 64
