"""Per-image statistics: each one moves with the change it is named for, on generated shapes and simple images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from normlab.data.shapes import generate_shapes
from normlab.images.stats import (
    COLOUR_STATISTICS,
    GRAY_STATISTICS,
    image_statistics,
    model_mode,
    pixel_channels,
    statistics_for,
)


def rows(images: np.ndarray) -> np.ndarray:
    """(n, H, W, C) or (n, H, W) uint8 images as pixel rows in (C, H, W) order."""
    if images.ndim == 3:
        images = images[..., None]
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def stats_of(images: np.ndarray):
    channels = 1 if images.ndim == 3 else images.shape[-1]
    return image_statistics(rows(images), channels=channels, image_shape=images.shape[1:3])


@pytest.fixture(scope="module")
def shapes() -> np.ndarray:
    images, _, _ = generate_shapes(120, size=32, seed=5)
    return images


def pil_map(images: np.ndarray, fn) -> np.ndarray:
    return np.stack([np.asarray(fn(Image.fromarray(a))) for a in images])


def test_columns_by_channels():
    assert statistics_for(1) == GRAY_STATISTICS
    assert statistics_for(3) == GRAY_STATISTICS + COLOUR_STATISTICS


def test_known_values_on_flat_and_checkered_images():
    black = np.zeros((1, 8, 8), dtype=np.uint8)
    white = np.full((1, 8, 8), 255, dtype=np.uint8)
    checker = ((np.indices((8, 8)).sum(axis=0) % 2) * 255).astype(np.uint8)[None]
    s = stats_of(np.concatenate([black, white, checker]))
    np.testing.assert_allclose(s["image_brightness"], [0.0, 1.0, 0.5])
    np.testing.assert_allclose(s["image_contrast"], [0.0, 0.0, 0.5])
    np.testing.assert_allclose(s["image_dark_share"], [1.0, 0.0, 0.5])
    np.testing.assert_allclose(s["image_bright_share"], [0.0, 1.0, 0.5])
    np.testing.assert_allclose(s["image_entropy"], [0.0, 0.0, 1.0])
    # A checkerboard's 4-neighbour Laplacian is +-4 everywhere inside.
    np.testing.assert_allclose(s["image_sharpness"], [0.0, 0.0, 4.0])


def test_colour_means_and_saturation():
    red = np.zeros((1, 4, 4, 3), dtype=np.uint8)
    red[..., 0] = 255
    grey = np.full((1, 4, 4, 3), 128, dtype=np.uint8)
    s = stats_of(np.concatenate([red, grey]))
    np.testing.assert_allclose(s[["image_mean_red", "image_mean_green", "image_mean_blue"]].to_numpy(),
                               [[1, 0, 0], [128 / 255] * 3])
    np.testing.assert_allclose(s["image_saturation"], [1.0, 0.0])
    np.testing.assert_allclose(s["image_brightness"], [0.299, 128 / 255], rtol=1e-6)


def test_a_darker_softer_camera_moves_brightness_and_sharpness(shapes):
    base = stats_of(shapes)
    softer = stats_of(pil_map(shapes, lambda im: im.filter(ImageFilter.GaussianBlur(1.5))))
    darker = stats_of(pil_map(shapes, lambda im: ImageEnhance.Brightness(im).enhance(0.5)))
    assert (softer["image_sharpness"] < base["image_sharpness"]).mean() > 0.95
    assert (darker["image_brightness"] < base["image_brightness"]).mean() > 0.95
    assert darker["image_mean_red"].mean() < base["image_mean_red"].mean()
    # Blur keeps the mean light (within 2 %): brightness is not what moved.
    np.testing.assert_allclose(softer["image_brightness"].mean(), base["image_brightness"].mean(), rtol=0.02)


def test_noise_raises_sharpness_and_entropy_and_grey_drops_saturation(shapes):
    rng = np.random.default_rng(0)
    base = stats_of(shapes)
    noisy = np.clip(shapes + rng.normal(0, 25, shapes.shape), 0, 255).astype(np.uint8)
    n = stats_of(noisy)
    assert n["image_entropy"].mean() > base["image_entropy"].mean()
    assert n["image_sharpness"].mean() > 2 * base["image_sharpness"].mean()
    grey = pil_map(shapes, lambda im: im.convert("L").convert("RGB"))
    assert stats_of(grey)["image_saturation"].max() < 0.02 < base["image_saturation"].mean()


def test_chunks_do_not_change_the_result(shapes, monkeypatch):
    import normlab.images.stats as stats

    whole = stats_of(shapes)
    monkeypatch.setattr(stats, "_CHUNK", 7)
    np.testing.assert_array_equal(stats_of(shapes).to_numpy(), whole.to_numpy())


def test_gray_images_and_bad_shapes():
    gray = np.random.default_rng(1).integers(0, 256, (5, 6, 6), dtype=np.uint8)
    assert list(stats_of(gray).columns) == list(GRAY_STATISTICS)
    with pytest.raises(ValueError, match="are not 3 x 6 x 6"):
        image_statistics(rows(gray), channels=3, image_shape=(6, 6))


def test_pixel_channels_and_mode():
    rgb = [f"pixel_{i}" for i in range(3 * 16)]
    assert pixel_channels(rgb, (4, 4)) == 3 and model_mode(rgb, (4, 4)) == "RGB"
    assert model_mode(rgb[:16], (4, 4)) == "L"
    assert pixel_channels(["age", "income"], (4, 4)) is None
    assert pixel_channels(rgb[:20], (4, 4)) is None
    assert pixel_channels(rgb, None) is None
