"""Monitoring image batches through the real CLI: a model trained on an image folder, then a landing folder
where new images arrive as folders. New images of the same kind stay quiet; the same kind through a darker,
softer camera drifts on brightness and sharpness; a broken file is quarantined by path while the rest are
measured; two drifted labelled batches in a row retrain on image files and register a new version."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image, ImageEnhance, ImageFilter

from normlab.data.image_folders import write_image_folder
from normlab.data.shapes import generate_shapes
from tests.e2e.conftest import normlab_env, run_normlab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NAMES = ["circle", "square", "triangle", "cross"]


def camera_change(pictures: np.ndarray) -> np.ndarray:
    """A darker, slightly defocused camera: Gaussian blur (radius 1.2), then brightness x 0.6."""
    def one(a: np.ndarray) -> np.ndarray:
        softer = Image.fromarray(a).filter(ImageFilter.GaussianBlur(1.2))
        return np.asarray(ImageEnhance.Brightness(softer).enhance(0.6))
    return np.stack([one(a) for a in pictures])


def flat(folder: Path, pictures: np.ndarray, stamp: int) -> None:
    folder.mkdir(parents=True)
    for i, picture in enumerate(pictures):
        Image.fromarray(picture).save(folder / f"cam_{i:04d}.png")
    age(folder, stamp)


def age(folder: Path, stamp: int) -> None:
    """Old modification times (the batch is settled), ``stamp`` ordering the batches."""
    ns = 10**18 + stamp
    for root, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            os.utime(os.path.join(root, name), ns=(ns, ns))
    os.utime(folder, ns=(ns, ns))


@pytest.fixture(scope="module")
def pictures():
    images, labels, names = generate_shapes(3200, size=24, seed=7)
    keep = labels < 4
    assert list(names[:4]) == NAMES and keep.sum() >= 1200
    return images[keep], labels[keep]


def test_image_batches_drift_quarantine_and_retrain(pictures, tmp_path, prefect_api):
    images, labels = pictures
    write_image_folder(tmp_path / "train", images[:320], labels[:320], NAMES)
    raw = {
        "name": "cams", "workdir": str(tmp_path / "work"),
        "data": {"path": str(tmp_path / "train"), "image_shape": [16, 16], "scale": "global"},
        "splits": {"ood": []},
        "model": {"family": "cnn", "norm": "batch"},
        "train": {"optimizer": "adam", "lr": 0.003, "epochs": 3, "threads": 1, "batch_size": 32},
        "eval": {"bootstrap_samples": 20, "inference": False},
        "monitor": {"min_rows": 100},
    }
    config = tmp_path / "cams.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = normlab_env(prefect_api)
    code, output = run_normlab(["run", str(config)], env, tmp_path / "run.log")
    assert code == 0, output

    land = tmp_path / "landing"
    flat(land / "day1", images[320:520], stamp=1)
    flat(land / "day2", camera_change(images[520:720]), stamp=2)
    # Two broken files among day 2's images: neither stops the batch.
    (land / "day2" / "cut.png").write_bytes((land / "day2" / "cam_0000.png").read_bytes()[:60])
    (land / "day2" / "copy.png").write_bytes((land / "day2" / "cam_0001.png").read_bytes())
    age(land / "day2", stamp=2)
    out = tmp_path / "monitor.json"
    code, output = run_normlab(["monitor", str(config), "--data", str(land), "--summary", str(out)], env,
                               tmp_path / "monitor.log")
    assert code == 0, output
    summary = json.loads(out.read_text())
    day1, day2 = summary["batches"]
    assert (Path(day1["source"]).name, Path(day2["source"]).name) == ("day1", "day2")
    assert day1["status"] == "processed" and day1["rows_in"] == day1["rows_typed"] == 200
    assert day1["drift"]["level"] == "none", day1["drift"]
    assert day1["performance"] is None  # no labels yet
    assert day2["drift"]["level"] == "suspected", day2["drift"]
    drifted = {c["column"] for c in day2["drift"]["columns"] if c["drifted"]}
    assert {"image_brightness", "image_sharpness"} <= drifted
    # The cut file has no pixels and is quarantined by path; the copy is a warning here (monitoring), and measured.
    assert day2["rows_in"] == 202 and day2["rows_typed"] == 201 and day2["rows_quarantined"] == 1
    quarantined = pd.read_parquet(day2["quarantine_path"])
    assert [Path(p).name for p in quarantined["image"]] == ["cut.png"]
    drift = json.loads((Path(day2["gate_report"]).parent / "drift.json").read_text())
    assert all(c["column"].startswith("image_") for c in drift["columns"])

    # Labelled batches through the new camera: the second drifted batch in a row (after day 2) is detected and
    # retrains on the reference plus its labelled images, as image files; a new version is registered.
    labelled = tmp_path / "labelled"
    for i, (start, stop) in enumerate(((720, 960), (960, 1200))):
        write_image_folder(labelled / f"week{i}", camera_change(images[start:stop]), labels[start:stop], NAMES)
        age(labelled / f"week{i}", stamp=10 + i)
    out = tmp_path / "retrain.json"
    code, output = run_normlab(["monitor", str(config), "--data", str(labelled), "--retrain", "--summary", str(out)],
                               env, tmp_path / "retrain.log", timeout=480)
    assert code == 0, output
    summary = json.loads(out.read_text())
    week0, week1 = summary["batches"]
    assert week0["drift"]["level"] == "detected" and week0["drift"]["streak"] == 2
    assert week0["performance"]["accuracy"] is not None
    (retrained,) = summary["retrained"]
    # Day 2 had no labels: only week 0's 240 images are new training rows.
    assert retrained["error"] is None and retrained["rows_new"] == 240
    folder = Path(retrained["data"])
    assert folder.name == "images" and sorted(p.name for p in folder.iterdir()) == sorted(NAMES)
    assert sum(1 for _ in folder.rglob("*.png")) == retrained["rows"] == retrained["rows_reference"] + 240
    assert retrained["registry"]["version"] == "2"
    # Week 1 is compared against the retrained model's data, which holds the new camera's images.
    assert week1["status"] == "processed" and summary["reference"]["run_id"] == retrained["run_id"]
