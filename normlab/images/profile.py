"""``normlab init --data FOLDER``: profile a trusted image folder into a profile and a config ready to run.

The profile (``profiles/NAME.json``) holds the classes and their counts, the
image sizes and modes found, and per-channel pixel statistics of the images
as they are trained on (resized, converted); the config
(``configs/NAME.yaml``) reads the folder at its most common size (capped at
`MAX_SIDE`), trains a ResNet, scores the corruption suite, and gates new
batches with the sizes and modes this folder has.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from normlab.config import PipelineConfig, validate_config
from normlab.errors import ConfigError, DataSourceError
from normlab.images.decode import choose_mode, decode_images
from normlab.images.scan import IMAGE, Manifest, scan_folder

# The side the config resizes to at most: larger images train slowly on a CPU; raise data.image_shape for more.
MAX_SIDE = 64
# Images whose pixels are averaged for the channel statistics (a seeded sample of larger folders).
STAT_SAMPLE = 2000


@dataclass(frozen=True)
class ImageProfile:
    """What a folder of images holds: files, classes, sizes, modes and pixel statistics."""

    files: int
    images: int  # files that are readable images in the layout
    classes: dict[str, int]  # class folder -> images in it
    empty_classes: list[str]
    sizes: dict[str, int]  # "WxH" -> images, most common first
    modes: dict[str, int]  # Pillow mode -> images
    problems: dict[str, int]  # what the scan found wrong -> files ("outside the layout...", "Pillow cannot...")
    image_shape: tuple[int, int]  # (H, W) the config resizes to
    mode: str  # L or RGB, as the config reads them
    channel_mean: list[float] = field(default_factory=list)  # per channel, 0..255, at image_shape
    channel_std: list[float] = field(default_factory=list)
    duplicates: int = 0  # images whose bytes repeat an earlier image's

    def lines(self) -> list[str]:
        """The profile in a few lines, for the terminal."""
        classes = ", ".join(f"{name} {count}" for name, count in self.classes.items())
        sizes = ", ".join(f"{size} ({count})" for size, count in list(self.sizes.items())[:5])
        out = [
            f"classes ({len(self.classes)}): {classes}",
            f"sizes: {sizes}{', ...' if len(self.sizes) > 5 else ''}; read at {self.image_shape[0]}x"
            f"{self.image_shape[1]} (H x W), mode {self.mode}",
            "modes: " + ", ".join(f"{mode} ({count})" for mode, count in self.modes.items()),
            "channel mean: " + ", ".join(f"{v:.1f}" for v in self.channel_mean)
            + "; std: " + ", ".join(f"{v:.1f}" for v in self.channel_std),
        ]
        if self.empty_classes:
            out.append(f"empty class folders: {', '.join(self.empty_classes)}")
        for problem, count in self.problems.items():
            out.append(f"{count} file{'s' if count > 1 else ''}: {problem}")
        if self.duplicates:
            verb = "images repeat" if self.duplicates > 1 else "image repeats"
            out.append(f"{self.duplicates} {verb} an earlier one byte for byte")
        return out


@dataclass(frozen=True)
class InitializedImages:
    """What `init_image_project` wrote and found."""

    profile_path: str
    config_path: str
    name: str
    profile: ImageProfile
    config: PipelineConfig


def profile_images(manifest: Manifest, *, seed: int = 0) -> ImageProfile:
    """Profile the files a scan found (see `ImageProfile`).

    Raises:
        DataSourceError: No readable image in the layout, or fewer than two classes.
    """
    entries = manifest.entries
    fine = entries[entries["outside"].eq("") & entries["error"].eq("")]
    if fine.empty:
        raise DataSourceError(f"{manifest.root}: no readable image in root/<label>/ folders")
    classes = {str(k): int(v) for k, v in fine[manifest.label].value_counts().sort_index().items()}
    if len(classes) < 2:
        raise DataSourceError(f"{manifest.root}: images in {len(classes)} class folder; a classifier needs at least two")
    size_counts = Counter(zip(fine["height"].astype(int), fine["width"].astype(int), strict=True))
    (height, width), _ = max(size_counts.items(), key=lambda item: (item[1], -item[0][0] * item[0][1]))
    scale = min(1.0, MAX_SIDE / max(height, width))
    shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    mode = choose_mode(fine["mode"], None)
    rng = np.random.default_rng(seed)
    picked = fine if len(fine) <= STAT_SAMPLE else fine.iloc[np.sort(rng.choice(len(fine), STAT_SAMPLE, replace=False))]
    pixels = decode_images([manifest.root / p for p in picked[IMAGE]], shape, mode)
    channels = pixels.reshape(len(picked), -1, shape[0] * shape[1]).astype(np.float64)
    problems = Counter(str(p) for p in entries["outside"] if p) + Counter(
        str(e).split(" (")[0] for e in entries["error"] if e)
    return ImageProfile(
        files=len(entries), images=len(fine), classes=classes, empty_classes=list(manifest.empty_classes),
        sizes={f"{w}x{h}": int(n) for (h, w), n in size_counts.most_common()},
        modes={str(k): int(v) for k, v in fine["mode"].value_counts().items()},
        problems=dict(problems), image_shape=shape, mode=mode,
        channel_mean=[round(float(v), 3) for v in channels.mean(axis=(0, 2))],
        channel_std=[round(float(v), 3) for v in channels.std(axis=(0, 2))],
        duplicates=int(fine["sha256"].duplicated().sum()),
    )


def init_image_project(data: str | Path, *, name: str, force: bool = False, root: str | Path = ".",
                       label: str = "label") -> InitializedImages:
    """Write ``profiles/NAME.json`` and ``configs/NAME.yaml`` for a trusted folder of images.

    Raises:
        DataSourceError: The folder cannot be scanned, or holds too few classes.
        ConfigError: A file exists and ``force`` is off.
    """
    root = Path(root).resolve()
    profile_path = root / "profiles" / f"{name}.json"
    config_path = root / "configs" / f"{name}.yaml"
    existing = [p for p in (profile_path, config_path) if p.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} exists; pick another --name or pass --force to overwrite")
    manifest = scan_folder(data, label=label)
    profile = profile_images(manifest)
    resolved = Path(data).resolve()
    shown = resolved.relative_to(root) if resolved.is_relative_to(root) else resolved
    sides = [int(v) for size in profile.sizes for v in size.split("x")]
    raw = {
        "name": name,
        "data": {"path": str(shown), "label": label, "image_shape": list(profile.image_shape),
                 "image_mode": profile.mode, "scale": "global"},
        "splits": {"ood": [{"kind": "corruption_suite", "severity": [1, 2, 3]}]},
        "model": {"family": "resnet", "norm": "batch", "channels": [16, 32, 64], "blocks": 1},
        "train": {"epochs": 5, "batch_size": 64, "optimizer": "sgd", "lr": 0.05},
        "gate": {
            "image_mode": {"allowed": sorted(profile.modes)},
            # Half the smallest and twice the largest side seen: a thumbnail or a full-size scan stands out.
            "image_size": {"min_side": max(1, min(sides) // 2), "max_side": 2 * max(sides)},
        },
    }
    cfg = validate_config(raw, source=str(config_path))
    header = (f"# Profiled by `normlab init` from {shown} ({profile.images} images in {len(profile.classes)} "
              f"classes; profile: profiles/{name}.json).\n"
              f"# Run it: normlab run configs/{name}.yaml   Check a new folder: normlab validate "
              f"configs/{name}.yaml --data NEW_FOLDER\n")
    profile_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    profile_path.write_text(json.dumps(asdict(profile), indent=1) + "\n", encoding="utf-8")
    config_path.write_text(header + yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return InitializedImages(profile_path=str(profile_path), config_path=str(config_path), name=name,
                             profile=profile, config=cfg)
