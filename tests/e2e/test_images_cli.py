"""Image folders through the real CLI: init profiles one, validate quarantines its bad files by path,
run trains residual CNNs and vision transformers with several norms and positions on one, and the
registered model answers image paths and arrays."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from normlab.data.image_folders import write_faulty_folder, write_image_folder
from normlab.data.shapes import generate_shapes
from tests.e2e.conftest import normlab_env, run_normlab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Tiny runs: one epoch, one thread, no corruption suite but one corruption, few bootstrap samples, no timing.
SMALL = ["--set", "train.epochs=1", "--set", "train.threads=1", "--set", "eval.bootstrap_samples=20",
         "--set", "eval.inference=false", "--set", "train.batch_size=16"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Four classes of generated 24x24 colour shapes, 20 images each, as PNG files in class folders."""
    images, labels, names = generate_shapes(200, size=24, seed=3)
    keep = labels < 4
    root = tmp_path_factory.mktemp("shapes") / "images"
    write_image_folder(root, images[keep][:80], labels[keep][:80], names)
    return root


def config(tmp_path: Path, root: Path, **model) -> Path:
    raw = {
        "name": "imgs",
        "workdir": str(tmp_path / "work"),
        "data": {"path": str(root), "image_shape": [16, 16], "scale": "global"},
        "splits": {"ood": [{"name": "noise", "kind": "corruption", "corruption": "gaussian_noise", "severity": 3}]},
        "model": {"channels": [8, 16], "blocks": 1, "width": 32, "depth": 2, "heads": 2, "patch_size": 4, **model},
        "train": {"optimizer": "adam", "lr": 0.003},
    }
    path = tmp_path / "imgs.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("model", [
    {"family": "resnet", "norm": "batch"},
    {"family": "resnet", "norm": "group", "groups": 4},
    {"family": "vit", "norm": "layer", "norm_position": "pre"},
    {"family": "vit", "norm": "rms", "norm_position": "post"},
], ids=["resnet-batch", "resnet-group", "vit-layer-pre", "vit-rms-post"])
def test_run_trains_on_an_image_folder(folder, tmp_path, prefect_api, model):
    out = tmp_path / "summary.json"
    code, output = run_normlab(["run", str(config(tmp_path, folder, **model)), *SMALL, "--summary", str(out)],
                               normlab_env(prefect_api), tmp_path / "run.log")
    assert code == 0, output
    summary = json.loads(out.read_text())
    assert summary["status"] == "finished" and summary["data"]["rows"] == 80
    assert {"id/test/accuracy", "ood/noise/accuracy"} <= set(summary["metrics"])
    spec = json.loads((tmp_path / "work" / "runs" / summary["run_id"] / "model.json").read_text())
    assert (spec["family"], spec["norm"], spec["in_channels"], spec["image_shape"]) == \
        (model["family"], model["norm"], 3, [16, 16])
    if model["family"] == "vit":
        assert spec["norm_position"] == model["norm_position"]


def test_the_registered_image_model_takes_paths_and_arrays(folder, tmp_path, prefect_api):
    out = tmp_path / "summary.json"
    code, output = run_normlab(["run", str(config(tmp_path, folder, family="resnet", norm="batch")), *SMALL,
                                "--summary", str(out)], normlab_env(prefect_api), tmp_path / "run.log")
    assert code == 0, output
    summary = json.loads(out.read_text())
    mlflow.set_tracking_uri(summary["tracking_uri"])
    registered = summary["registry"]
    model = mlflow.pyfunc.load_model(f"models:/{registered['name']}/{registered['version']}")
    files = sorted(folder.rglob("*.png"))[:6]
    by_path = model.predict(pd.DataFrame({"image": [str(p) for p in files]}))
    assert list(by_path.columns[:1]) == ["label"] and len(by_path) == 6
    np.testing.assert_allclose(by_path.filter(like="proba_").sum(axis=1), 1.0, rtol=1e-6)
    # The same images as an array at their own size (24x24, resized as in training) score the same.
    arrays = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files])
    by_array = model.predict(arrays)
    pd.testing.assert_frame_equal(by_array.reset_index(drop=True), by_path.reset_index(drop=True))


def test_a_run_over_the_memory_budget_streams_and_scores_the_same(folder, tmp_path, prefect_api):
    """Encoded splits over data.memory_budget_mb go to prepared/ as .npy files and train through a DataLoader."""
    metrics = []
    for budget in ("1024", "0.01"):
        out = tmp_path / f"summary-{budget}.json"
        code, output = run_normlab(["run", str(config(tmp_path / budget, folder, family="resnet", norm="batch")),
                                    *SMALL, "--set", f"data.memory_budget_mb={budget}", "--summary", str(out)],
                                   normlab_env(prefect_api), tmp_path / f"run-{budget}.log")
        assert code == 0, output
        summary = json.loads(out.read_text())
        run_dir = tmp_path / budget / "work" / "runs" / summary["run_id"]
        assert (run_dir / "prepared").is_dir() == (budget == "0.01")
        metrics.append({k: v for k, v in summary["metrics"].items() if "seconds" not in k and "time" not in k})
    assert metrics[0] == metrics[1]


def test_init_profiles_a_folder_and_validate_quarantines_its_bad_files(tmp_path, prefect_api):
    faulty = write_faulty_folder(tmp_path / "incoming", seed=1)
    trusted = tmp_path / "trusted"
    shutil.copytree(faulty.root, trusted, ignore=shutil.ignore_patterns("*.txt"))
    env = normlab_env(prefect_api)
    code, output = run_normlab(["init", "--data", str(faulty.root), "--name", "incoming"], env, tmp_path / "init.log",
                               cwd=tmp_path)
    assert code == 0, output
    assert f"classes ({len(faulty.classes)})" in output and "channel mean" in output
    profile = json.loads((tmp_path / "profiles" / "incoming.json").read_text())
    assert set(profile["classes"]) == set(faulty.classes) and profile["empty_classes"] == [faulty.empty_class]
    assert len(profile["channel_mean"]) == 3 == len(profile["channel_std"])
    cfg = yaml.safe_load((tmp_path / "configs" / "incoming.yaml").read_text())
    assert cfg["model"]["family"] == "resnet" and cfg["data"]["image_mode"] == "RGB"

    code, output = run_normlab(["validate", str(tmp_path / "configs" / "incoming.yaml"), "--set",
                                f"workdir={tmp_path / 'work'}", "--set", "gate.image_mode.allowed=[L,RGB,RGBA]",
                                "--set", "gate.rejected_share.max_share=0.5",
                                "--summary", str(tmp_path / "v.json")], env, tmp_path / "validate.log", cwd=tmp_path)
    assert code == 0, output
    quarantine = pd.read_parquet(next((tmp_path / "work" / "quarantine").rglob("rows.parquet")))
    assert {faulty.corrupt, faulty.not_image, faulty.outside_root, faulty.too_deep, faulty.cmyk,
            *faulty.duplicates[1:]} <= set(quarantine["image"])
    assert quarantine["_normlab_reasons"].str.len().gt(0).all()
    assert "empty_class" in output
