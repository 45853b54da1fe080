"""Image corruptions at five severities (after ImageNet-C and MNIST-C), for 8x8-scale images.

Every corruption works on the whole (n, H*W) matrix at once, with no loop over
images: numpy broadcasting for the pixel-wise kinds, array slicing for
translation and occlusion, and for rotation and blur one scipy.ndimage call
that yields a (H*W, H*W) linear map applied as a single matrix product.
Parameters grow with severity roughly as in Hendrycks & Dietterich (2019),
rescaled to the pixel ``value_range``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Protocol

import numpy as np
from scipy import ndimage

from normlab.errors import ConfigError

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

# Per-severity parameters (index = severity - 1).
_GAUSSIAN_SIGMA = (0.08, 0.12, 0.18, 0.26, 0.38)  # noise std, fraction of the range
_SHOT_PHOTONS = (60.0, 25.0, 12.0, 5.0, 3.0)  # Poisson photons at full brightness
_IMPULSE_FRACTION = (0.03, 0.06, 0.09, 0.17, 0.27)  # pixels set to black or white
_CONTRAST_FACTOR = (0.4, 0.3, 0.2, 0.1, 0.05)  # kept share of the deviation from the mean
_BRIGHTNESS_SHIFT = (0.1, 0.2, 0.3, 0.4, 0.5)  # added, fraction of the range
_INVERSION_STRENGTH = (0.2, 0.4, 0.6, 0.8, 1.0)  # blend weight of the inverted image
_ROTATION_DEGREES = (15.0, 30.0, 45.0, 60.0, 75.0)
_TRANSLATION_PIXELS = ((1, 0), (1, 1), (2, 1), (2, 2), (3, 3))  # (down, right)
_BLUR_SIGMA = (0.4, 0.6, 0.8, 1.0, 1.3)  # Gaussian sigma in pixels
_OCCLUSION_SIDE = (0.15, 0.25, 0.35, 0.45, 0.6)  # patch side, fraction of the shorter edge

# Up to this many pixels per image, linear spatial maps (rotation, blur) run as
# one (n, P) @ (P, P) product: several times faster than ndimage on a 1M-image
# stack, and the (P, P) matrix stays small.
_MATRIX_MAX_PIXELS = 1024


def corruption_name(kind: str, severity: int) -> str:
    """Return the slice name of a corruption, e.g. ``corruption_name("blur", 3) == "blur_s3"``.

    Raises:
        ConfigError: ``kind`` is unknown or ``severity`` is not 1..5.
    """
    _check_kind(kind)
    _check_severity(severity)
    return f"{kind}_s{int(severity)}"


def corrupt_images(
    x: np.ndarray,
    image_shape: tuple[int, int],
    kind: str,
    severity: int,
    *,
    seed: int = 0,
    value_range: tuple[float, float] = (0.0, 16.0),
) -> np.ndarray:
    """Apply one corruption at one severity to every image.

    Background fill (translation, rotation corners, occlusion patches) is the
    low end of ``value_range``, which is 0 (black) for the digits.

    Args:
        x: Flattened images, shape (n, H*W), any real dtype.
        image_shape: (H, W) of one image.
        kind: One of `CORRUPTIONS` (a key of `CORRUPTION_FUNCS`).
        severity: 1 (mild) to 5 (strong).
        seed: Seed of the random kinds; the same seed gives the same output.
        value_range: (low, high) pixel range; the output is clipped to it.

    Returns:
        float64 array of shape (n, H*W).

    Raises:
        ConfigError: Unknown kind, severity outside 1..5, a bad value range, or
            ``x`` whose shape does not match ``image_shape``.
    """
    _check_kind(kind)
    _check_severity(severity)
    low, high = _check_range(value_range)
    height, width = _check_shape(x, image_shape)
    level = int(severity) - 1
    rng = np.random.default_rng(seed)
    images = np.asarray(x, dtype=np.float64).reshape(-1, height, width)

    out = CORRUPTION_FUNCS[kind](images, level, low=low, high=high, rng=rng)
    if np.may_share_memory(out, images):
        # A corruption must build a new array; clipping its input in place would change x.
        out = out.copy()
    np.clip(out, low, high, out=out)
    return out.reshape(images.shape[0], height * width)


class Corruption(Protocol):
    """One corruption type: ``images`` (n, H, W) float64 at severity index ``level`` (0..4).

    ``low`` and ``high`` are the pixel range (the output is clipped to it afterwards);
    ``rng`` is the call's generator, seeded from ``corrupt_images``' seed. Returns a
    new (n, H, W) array; ``images`` is never written to.
    """

    def __call__(
        self, images: np.ndarray, level: int, *, low: float, high: float, rng: np.random.Generator
    ) -> np.ndarray: ...


def _gaussian_noise(images: np.ndarray, level: int, *, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    # float32 draws are about twice as fast and ample for noise.
    out = rng.standard_normal(images.shape, dtype=np.float32).astype(np.float64)
    out *= _GAUSSIAN_SIGMA[level] * (high - low)
    out += images
    return out


def _shot_noise(images: np.ndarray, level: int, *, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    photons = _SHOT_PHOTONS[level]
    span = high - low
    unit = np.clip((images - low) / span, 0.0, 1.0)
    return rng.poisson(unit * photons) / photons * span + low


def _impulse_noise(images: np.ndarray, level: int, *, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    hit = rng.random(images.shape) < _IMPULSE_FRACTION[level]
    salt = rng.random(images.shape) < 0.5
    return np.where(hit, np.where(salt, high, low), images)


def _contrast(images: np.ndarray, level: int, *, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    means = images.mean(axis=(1, 2), keepdims=True)
    return (images - means) * _CONTRAST_FACTOR[level] + means


def _brightness(images: np.ndarray, level: int, *, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    return images + _BRIGHTNESS_SHIFT[level] * (high - low)


def _inversion(images: np.ndarray, level: int, *, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    strength = _INVERSION_STRENGTH[level]
    return (1.0 - strength) * images + strength * (high + low - images)


def _rotation(images: np.ndarray, level: int, *, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    degrees = _ROTATION_DEGREES[level]
    return _apply_spatial_map(images, lambda stack, fill: _rotate_stack(stack, degrees, fill=fill), fill=low)


def _translation(images: np.ndarray, level: int, *, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    down, right = _TRANSLATION_PIXELS[level]
    return _translate_stack(images, down, right, fill=low)


def _blur(images: np.ndarray, level: int, *, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    sigma = _BLUR_SIGMA[level]
    return _apply_spatial_map(images, lambda stack, fill: _blur_stack(stack, sigma), fill=low)


def _occlusion(images: np.ndarray, level: int, *, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    return _occlude_stack(images, _OCCLUSION_SIDE[level], rng, fill=low)


# Name -> corruption, read-only. Its order is CORRUPTIONS' order, which is the order of
# a corruption suite's splits (and so of their metrics). Adding a corruption: its
# function above, its per-severity parameters, one entry here; tests/unit/test_data_shifts.py
# runs every entry.
CORRUPTION_FUNCS: Mapping[str, Corruption] = MappingProxyType({
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "contrast": _contrast,
    "brightness": _brightness,
    "inversion": _inversion,
    "rotation": _rotation,
    "translation": _translation,
    "blur": _blur,
    "occlusion": _occlusion,
})

CORRUPTIONS: tuple[str, ...] = tuple(CORRUPTION_FUNCS)


def _apply_spatial_map(
    images: np.ndarray, op: Callable[[np.ndarray, float], np.ndarray], *, fill: float
) -> np.ndarray:
    """Apply ``op``, a map linear in (image, fill), to every image.

    For small images the map is read off once from the pixel basis, then
    applied to all images as one matrix product; the result equals ``op``
    on the stack up to rounding.
    """
    n, height, width = images.shape
    pixels = height * width
    if pixels > _MATRIX_MAX_PIXELS or n <= pixels:
        return op(images, fill)
    basis = np.eye(pixels).reshape(pixels, height, width)
    # Row k holds the image of basis pixel k; the fill adds a constant image.
    matrix = op(basis, 0.0).reshape(pixels, pixels)
    constant = op(np.zeros((1, height, width)), fill).reshape(pixels)
    flat = images.reshape(n, pixels) @ matrix
    flat += constant
    return flat.reshape(n, height, width)


def _blur_stack(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-blur every image; sigma 0 on the image axis never mixes images."""
    return ndimage.gaussian_filter(images, sigma=(0.0, sigma, sigma), mode="nearest")


def _rotate_stack(images: np.ndarray, degrees: float, *, fill: float) -> np.ndarray:
    """Rotate every image about its centre, like ndimage.rotate(axes=(1, 2), reshape=False, order=1).

    ndimage.rotate loops over the images in Python for 3-D input; the same
    affine map with an identity on the image axis is a single C call.
    """
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    centre = (np.array(images.shape[1:], dtype=np.float64) - 1.0) / 2.0
    plane = np.array([[cos, sin], [-sin, cos]])
    matrix = np.eye(3)
    matrix[1:, 1:] = plane
    offset = np.zeros(3)
    offset[1:] = centre - plane @ centre
    return ndimage.affine_transform(
        images, matrix, offset=offset, order=1, mode="constant", cval=fill, prefilter=False
    )


def _translate_stack(images: np.ndarray, down: int, right: int, *, fill: float) -> np.ndarray:
    """Shift every image by whole pixels, filling the uncovered border with ``fill``."""
    _, height, width = images.shape
    out = np.full_like(images, fill)
    if down < height and right < width:
        out[:, down:, right:] = images[:, : height - down, : width - right]
    return out


def _occlude_stack(
    images: np.ndarray, side_fraction: float, rng: np.random.Generator, *, fill: float
) -> np.ndarray:
    """Fill one square patch per image, at a random position inside the image."""
    n, height, width = images.shape
    side = max(1, round(side_fraction * min(height, width)))
    top = rng.integers(0, height - side + 1, size=n)
    left = rng.integers(0, width - side + 1, size=n)
    rows = np.arange(height)
    cols = np.arange(width)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)  # (n, H)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)  # (n, W)
    patch = in_rows[:, :, None] & in_cols[:, None, :]
    return np.where(patch, fill, images)


def _check_kind(kind: str) -> None:
    """Raise ConfigError unless ``kind`` is a known corruption."""
    if kind not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {kind!r}; known corruptions: {', '.join(CORRUPTIONS)}")


def _check_severity(severity: int) -> None:
    """Raise ConfigError unless ``severity`` is an integer from 1 to 5."""
    if (
        isinstance(severity, bool)
        or not isinstance(severity, numbers.Integral)
        or int(severity) not in SEVERITIES
    ):
        raise ConfigError(f"corruption severity must be an integer from 1 to 5, got {severity!r}")


def _check_range(value_range: tuple[float, float]) -> tuple[float, float]:
    """Return (low, high) as floats, or raise unless they are finite with low < high."""
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"value_range must be two numbers (low, high), got {value_range!r}") from exc
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"value_range must be finite with low < high, got {value_range!r}")
    return low, high


def _check_shape(x: np.ndarray, image_shape: tuple[int, int]) -> tuple[int, int]:
    """Return (H, W), or raise unless ``x`` is (n, H*W)."""
    try:
        height, width = (int(v) for v in image_shape)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"image_shape must be (height, width), got {image_shape!r}") from exc
    if height < 1 or width < 1:
        raise ConfigError(f"image_shape must be positive (height, width), got {image_shape!r}")
    shape = np.shape(x)
    if len(shape) != 2 or shape[1] != height * width:
        raise ConfigError(
            f"images must have shape (n, {height * width}) for image_shape {image_shape!r}, "
            f"got {shape}; check the data set's image shape"
        )
    return height, width
