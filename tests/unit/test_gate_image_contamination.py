"""The ``contamination`` check on image files: files whose pixels sit in an earlier run's evaluation split.

The index comes from a real first run (scan, gate, decode, split, split audit)
on a generated image folder; later folders copy some of its evaluation images
under new names, in other classes, re-encoded, or hold new images only.
"""

from __future__ import annotations

import hashlib
import shutil

import pandas as pd
import pytest
from PIL import Image

from normlab.config import PipelineConfig
from normlab.data.image_folders import write_image_folder
from normlab.data.shapes import generate_shapes
from normlab.data.splits import assign_id_splits
from normlab.gate import GateScope, check_splits, evaluation_index_dir, read_evaluation_index, run_gate
from normlab.gate.checks import WHY
from normlab.pipeline import load_batch
from normlab.splitting import prepare_splits


def _config(root, workdir, *, salt="normlab") -> PipelineConfig:
    # Generated at 24x24 and resized to 16x16: the identity is the pixels training reads, after the resize.
    return PipelineConfig.model_validate({
        "name": "imgs", "workdir": str(workdir),
        "data": {"path": str(root), "image_shape": [16, 16], "scale": "global"},
        "splits": {"ood": [], "salt": salt}, "model": {"family": "cnn", "norm": "batch"},
    })


def _gate(cfg, out):
    out.mkdir(parents=True)
    return run_gate(GateScope.from_config(cfg), load_batch(cfg.data, out), out)


def _contamination(result):
    return next(c for c in result.report.checks if c.name == "contamination")


def _folder(root, n, seed):
    images, labels, classes = generate_shapes(n, size=24, seed=seed)
    write_image_folder(root, images, labels, classes, names=[f"s{seed}-{i:03d}" for i in range(n)])
    return root


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """A first run's split audit on one folder: the workdir with its evaluation index, and its test images."""
    base = tmp_path_factory.mktemp("contamination")
    root = _folder(base / "first", 120, seed=0)
    cfg = _config(root, base / "work")
    run_dir = base / "work" / "run-1"
    run_dir.mkdir(parents=True)
    batch = load_batch(cfg.data, run_dir)
    result = run_gate(GateScope.from_config(cfg), batch, run_dir)
    prepared = prepare_splits(cfg.data, cfg.splits, cfg.eval, cfg.seed, result.accepted, run_dir)
    audit = check_splits(GateScope.from_config(cfg), result.accepted, prepared, run_dir)
    assert audit.evaluation_rows > 0
    # The files behind the ID test rows: the pixel rows are the accepted files, in the manifest's order.
    pixels = pd.read_parquet(result.accepted.path)
    manifest = pd.read_parquet(batch.path)
    test = manifest["image"][(assign_id_splits(pixels, salt=cfg.splits.salt) == "test").to_numpy()].tolist()
    assert len(test) >= 3
    return base, root, test


def test_the_same_folder_again_is_not_contamination(first_run, tmp_path):
    base, root, _test = first_run
    index = read_evaluation_index(evaluation_index_dir(base / "work", "imgs"))
    assert index is not None and len(index) > 0
    result = _gate(_config(root, base / "work"), tmp_path / "again")
    # Its evaluation images go back to their splits: nothing to quarantine.
    assert _contamination(result).outcome == "passed" and result.rows_quarantined == 0


def test_copies_of_evaluation_images_are_quarantined_by_path(first_run, tmp_path):
    base, root, test = first_run
    second = _folder(tmp_path / "second", 60, seed=1)
    classes = sorted(p.name for p in root.iterdir())
    exact, reencoded, same_class = test[:3]

    def other_class(rel):
        label = rel.split("/")[0]
        return next(c for c in classes if c != label and (second / c).is_dir())

    # A byte-for-byte copy under a new name, in another class.
    moved = f"{other_class(exact)}/renamed-copy.png"
    shutil.copyfile(root / exact, second / moved)
    # The same pixels in other bytes (PNG without compression), in another class: bytes differ, pixels do not.
    resaved = f"{other_class(reencoded)}/resaved-copy.png"
    with Image.open(root / reencoded) as image:
        image.save(second / resaved, compress_level=0)
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (root / reencoded, second / resaved)]
    assert digest[0] != digest[1]
    # A copy in its own class under a new name: the same row, so the split sends it back to test.
    kept = f"{same_class.split('/')[0]}/own-class-copy.png"
    shutil.copyfile(root / same_class, second / kept)

    result = _gate(_config(second, base / "work"), tmp_path / "run-2")
    check = _contamination(result)
    assert check.outcome == "quarantined" and check.unexpected_count == 2
    assert sorted(check.details["files"]) == sorted([moved, resaved])
    quarantined = pd.read_parquet(result.quarantine_path)
    assert sorted(quarantined["image"]) == sorted([moved, resaved])
    assert set(quarantined["_normlab_checks"]) == {"contamination"}
    assert set(quarantined["_normlab_reasons"]) == {WHY["contamination"]}
    assert (second / moved).is_file() and (second / resaved).is_file()  # quarantined by path, never moved
    # The accepted batch is the pixel rows of every other file (60 new images and the own-class copy).
    assert (result.rows_in, result.rows_accepted) == (63, 61) and len(pd.read_parquet(result.accepted_path)) == 61

    # Under another split salt the own-class copy could land in training too: it is flagged as well.
    salted = _gate(_config(second, base / "work", salt="other"), tmp_path / "run-3")
    assert sorted(_contamination(salted).details["files"]) == sorted([moved, resaved, kept])


def test_a_clean_folder_flags_nothing(first_run, tmp_path):
    base, _root, _test = first_run
    clean = _folder(tmp_path / "clean", 60, seed=2)
    result = _gate(_config(clean, base / "work"), tmp_path / "clean-run")
    check = _contamination(result)
    assert check.outcome == "passed" and check.unexpected_count == 0 and check.details["indexed_rows"] > 0
    assert result.rows_quarantined == 0


def test_without_an_index_the_check_is_skipped_on_images(tmp_path):
    root = _folder(tmp_path / "images", 30, seed=3)
    result = _gate(_config(root, tmp_path / "fresh"), tmp_path / "run")
    assert _contamination(result).observed == "skipped: no evaluation rows recorded yet"
    assert result.rows_accepted == 30
