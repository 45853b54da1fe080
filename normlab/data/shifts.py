"""Image corruptions at five severities (after CIFAR-10-C and MNIST-C), grayscale or RGB, at any size.

Rows are flattened images in (C, H, W) order, C = 1 (grayscale) or 3 (RGB).
Every corruption works on the whole (n, C, H, W) stack at once, with no loop
over images: numpy broadcasting for the pixel-wise kinds, array slicing for
translation and occlusion, one scipy.ndimage call for rotation and blur (for
small images, one call that yields a (H*W, H*W) linear map applied as a single
matrix product). Spatial kinds move every channel of an image alike; noise is
drawn per channel.

The parameters depend on the image size (`corruption_parameters`): images whose
shorter side is at least `CIFAR_MIN_SIDE` pixels get CIFAR-10-C's (Hendrycks &
Dietterich 2019) where it has the kind; smaller images keep the tables tuned
for the 8x8 digits. Pixel amounts are fractions of ``value_range``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np
from scipy import ndimage

from normlab.errors import ConfigError

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
CHANNELS: tuple[int, ...] = (1, 3)  # grayscale, RGB

# Images whose shorter side is at least this many pixels take LARGE_IMAGE_PARAMS
# (CIFAR-10-C's images are 32x32); smaller ones SMALL_IMAGE_PARAMS.
CIFAR_MIN_SIDE = 32

# Per-severity parameters (index = severity - 1), tuned for the 8x8 digits. Unchanged:
# the built-in digits runs depend on these exact values.
SMALL_IMAGE_PARAMS: Mapping[str, tuple[Any, ...]] = MappingProxyType({
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),  # noise std, fraction of the range
    "shot_noise": (60.0, 25.0, 12.0, 5.0, 3.0),  # Poisson photons at full brightness
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),  # values set to black or white
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),  # kept share of the deviation from the mean
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),  # added to V (HSV), fraction of the range
    "inversion": (0.2, 0.4, 0.6, 0.8, 1.0),  # blend weight of the inverted image
    "rotation": (15.0, 30.0, 45.0, 60.0, 75.0),  # degrees
    "translation": ((1, 0), (1, 1), (2, 1), (2, 2), (3, 3)),  # (down, right) in pixels
    "blur": (0.4, 0.6, 0.8, 1.0, 1.3),  # Gaussian sigma in pixels
    "occlusion": (0.15, 0.25, 0.35, 0.45, 0.6),  # patch side, fraction of the shorter edge
})

# From CIFAR_MIN_SIDE up. The first six kinds are CIFAR-10-C's ``c`` lists, checked against
# hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py (gaussian_noise, shot_noise,
# impulse_noise, contrast, brightness, gaussian_blur; there on [0, 1], here fractions of the
# range). CIFAR-10-C has no inversion, rotation, translation or occlusion (MNIST-C's): they keep
# the small-image values, translation as fractions of (H, W) (the 8x8 pixels / 8).
LARGE_IMAGE_PARAMS: Mapping[str, tuple[Any, ...]] = MappingProxyType({
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500.0, 250.0, 100.0, 75.0, 50.0),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # skimage random_noise 's&p' amount
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "inversion": SMALL_IMAGE_PARAMS["inversion"],
    "rotation": SMALL_IMAGE_PARAMS["rotation"],
    "translation": ((0.125, 0.0), (0.125, 0.125), (0.25, 0.125), (0.25, 0.25), (0.375, 0.375)),
    "blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # CIFAR-10-C gaussian_blur
    "occlusion": SMALL_IMAGE_PARAMS["occlusion"],
})

# Up to this many pixels per image, rotation and blur run as one (m, P) @ (P, P) product
# over the m = n*C planes, once there are more planes than pixels: several times faster
# than ndimage on a 1M-image 8x8 stack. Measured on 3000-4000 planes, ndimage itself is
# faster for blur from 16x16 and about as fast for rotation near 28x28, so larger images
# (CIFAR's 32x32 included) never build the matrix.
_MATRIX_MAX_PIXELS = 256


def corruption_name(kind: str, severity: int) -> str:
    """Return the slice name of a corruption, e.g. ``corruption_name("blur", 3) == "blur_s3"``.

    Raises:
        ConfigError: ``kind`` is unknown or ``severity`` is not 1..5.
    """
    _check_kind(kind)
    _check_severity(severity)
    return f"{kind}_s{int(severity)}"


def corruption_parameters(kind: str, image_shape: tuple[int, int]) -> tuple[Any, ...]:
    """The five per-severity parameters ``kind`` uses on images of ``image_shape`` (H, W).

    Translation comes back as whole (down, right) pixels at every size.

    Raises:
        ConfigError: Unknown kind or a bad image shape.
    """
    _check_kind(kind)
    height, width = _check_image_shape(image_shape)
    if min(height, width) < CIFAR_MIN_SIDE:
        return SMALL_IMAGE_PARAMS[kind]
    params = LARGE_IMAGE_PARAMS[kind]
    if kind == "translation":
        return tuple((round(down * height), round(right * width)) for down, right in params)
    return params


def corrupt_images(
    x: np.ndarray,
    image_shape: tuple[int, int],
    kind: str,
    severity: int,
    *,
    seed: int = 0,
    value_range: tuple[float, float] = (0.0, 16.0),
    channels: int = 1,
) -> np.ndarray:
    """Apply one corruption at one severity to every image.

    Background fill (translation, rotation corners, occlusion patches) is the
    low end of ``value_range``, which is 0 (black) for the digits.

    Args:
        x: Flattened images in (C, H, W) order, shape (n, C*H*W), any real dtype.
        image_shape: (H, W) of one image.
        kind: One of `CORRUPTIONS` (a key of `CORRUPTION_FUNCS`).
        severity: 1 (mild) to 5 (strong).
        seed: Seed of the random kinds; the same seed gives the same output.
        value_range: (low, high) pixel range; the output is clipped to it.
        channels: C, 1 (grayscale) or 3 (RGB).

    Returns:
        float64 array of shape (n, C*H*W).

    Raises:
        ConfigError: Unknown kind, severity outside 1..5, a bad value range or
            channel count, or ``x`` whose shape does not match them.
    """
    _check_kind(kind)
    _check_severity(severity)
    params = corruption_parameters(kind, image_shape)
    low, high = _check_range(value_range)
    height, width = _check_image_shape(image_shape)
    _check_rows(x, height, width, _check_channels(channels))
    rng = np.random.default_rng(seed)
    images = np.asarray(x, dtype=np.float64).reshape(-1, int(channels), height, width)

    out = CORRUPTION_FUNCS[kind](images, params[int(severity) - 1], low=low, high=high, rng=rng)
    if np.may_share_memory(out, images):
        # A corruption must build a new array; clipping its input in place would change x.
        out = out.copy()
    np.clip(out, low, high, out=out)
    return out.reshape(images.shape[0], -1)


class Corruption(Protocol):
    """One corruption type: ``images`` (n, C, H, W) float64 at one severity's ``param``.

    ``param`` is the severity's entry of `corruption_parameters`; ``low`` and ``high``
    are the pixel range (the output is clipped to it afterwards); ``rng`` is the call's
    generator, seeded from ``corrupt_images``' seed. Returns a new (n, C, H, W) array;
    ``images`` is never written to.
    """

    def __call__(
        self, images: np.ndarray, param: Any, *, low: float, high: float, rng: np.random.Generator
    ) -> np.ndarray: ...


# Noise is drawn for every value, so each channel gets its own (as in CIFAR-10-C).


def _gaussian_noise(images: np.ndarray, sigma: float, *, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    # float32 draws are about twice as fast and ample for noise.
    out = rng.standard_normal(images.shape, dtype=np.float32).astype(np.float64)
    out *= sigma * (high - low)
    out += images
    return out


def _shot_noise(images: np.ndarray, photons: float, *, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    span = high - low
    unit = np.clip((images - low) / span, 0.0, 1.0)
    return rng.poisson(unit * photons) / photons * span + low


def _impulse_noise(images: np.ndarray, amount: float, *, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    hit = rng.random(images.shape) < amount
    salt = rng.random(images.shape) < 0.5
    return np.where(hit, np.where(salt, high, low), images)


def _contrast(images: np.ndarray, factor: float, *, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    # Each channel's own mean, as make_cifar_c.py's np.mean(x, axis=(0, 1)) on an (H, W, C) image.
    means = images.mean(axis=(2, 3), keepdims=True)
    return (images - means) * factor + means


def _brightness(images: np.ndarray, shift: float, *, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    span = high - low
    if images.shape[1] == 1:
        # A gray pixel is its own HSV value: the shift is an addition (clipped afterwards).
        return images + shift * span
    return _shift_hsv_value(np.clip((images - low) / span, 0.0, 1.0), shift) * span + low


def _inversion(images: np.ndarray, strength: float, *, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    return (1.0 - strength) * images + strength * (high + low - images)


# Spatial kinds treat the n*C channel planes as n*C images: every channel moves alike.


def _rotation(images: np.ndarray, degrees: float, *, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    return _on_planes(images, lambda stack, fill: _rotate_stack(stack, degrees, fill=fill), fill=low)


def _translation(
    images: np.ndarray, pixels: tuple[int, int], *, low: float, high: float, rng: np.random.Generator
) -> np.ndarray:
    down, right = pixels
    return _translate_stack(images, down, right, fill=low)


def _blur(images: np.ndarray, sigma: float, *, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    return _on_planes(images, lambda stack, fill: _blur_stack(stack, sigma), fill=low)


def _occlusion(images: np.ndarray, side: float, *, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    return _occlude_stack(images, side, rng, fill=low)


# Name -> corruption, read-only. Its order is CORRUPTIONS' order, which is the order of
# a corruption suite's splits (and so of their metrics). Adding a corruption: its
# function above, its per-severity parameters in both tables, one entry here;
# tests/unit/test_data_shifts.py runs every entry.
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


def _shift_hsv_value(unit: np.ndarray, shift: float) -> np.ndarray:
    """Add ``shift`` to the HSV value of (n, 3, H, W) RGB in [0, 1], clipped at 1, keeping hue and saturation.

    With hue and saturation fixed every RGB component is proportional to the value
    V = max(R, G, B), so hsv2rgb(rgb2hsv(x) with V + shift) is x scaled by V' / V;
    a black pixel (V = 0, saturation 0) becomes gray V'.
    """
    value = unit.max(axis=1, keepdims=True)
    new_value = np.minimum(value + shift, 1.0)
    lit = value > 0.0
    scale = np.divide(new_value, value, out=np.zeros_like(value), where=lit)
    return np.where(lit, unit * scale, new_value)


def _on_planes(images: np.ndarray, op: Callable[[np.ndarray, float], np.ndarray], *, fill: float) -> np.ndarray:
    """Apply ``op``, a map linear in (plane, fill), to every (H, W) plane of the (n, C, H, W) stack."""
    n, channels, height, width = images.shape
    planes = images.reshape(n * channels, height, width)
    return _apply_spatial_map(planes, op, fill=fill).reshape(images.shape)


def _apply_spatial_map(
    images: np.ndarray, op: Callable[[np.ndarray, float], np.ndarray], *, fill: float
) -> np.ndarray:
    """Apply ``op``, a map linear in (image, fill), to every image of an (m, H, W) stack.

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
    """Shift every (..., H, W) image by whole pixels, filling the uncovered border with ``fill``."""
    height, width = images.shape[-2:]
    out = np.full_like(images, fill)
    if down < height and right < width:
        out[..., down:, right:] = images[..., : height - down, : width - right]
    return out


def _occlude_stack(
    images: np.ndarray, side_fraction: float, rng: np.random.Generator, *, fill: float
) -> np.ndarray:
    """Fill one square patch per (C, H, W) image, the same in every channel, at a random position inside it."""
    n, _, height, width = images.shape
    side = max(1, round(side_fraction * min(height, width)))
    top = rng.integers(0, height - side + 1, size=n)
    left = rng.integers(0, width - side + 1, size=n)
    rows = np.arange(height)
    cols = np.arange(width)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)  # (n, H)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)  # (n, W)
    patch = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # (n, 1, H, W): every channel
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


def _check_channels(channels: int) -> int:
    """Return ``channels`` as an int, or raise unless it is 1 or 3."""
    if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or int(channels) not in CHANNELS:
        raise ConfigError(f"image channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    return int(channels)


def _check_range(value_range: tuple[float, float]) -> tuple[float, float]:
    """Return (low, high) as floats, or raise unless they are finite with low < high."""
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"value_range must be two numbers (low, high), got {value_range!r}") from exc
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"value_range must be finite with low < high, got {value_range!r}")
    return low, high


def _check_image_shape(image_shape: tuple[int, int]) -> tuple[int, int]:
    """Return (H, W) as ints, or raise unless they are two positive integers."""
    try:
        height, width = (int(v) for v in image_shape)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"image_shape must be (height, width), got {image_shape!r}") from exc
    if height < 1 or width < 1:
        raise ConfigError(f"image_shape must be positive (height, width), got {image_shape!r}")
    return height, width


def _check_rows(x: np.ndarray, height: int, width: int, channels: int) -> None:
    """Raise unless ``x`` is (n, C*H*W)."""
    shape = np.shape(x)
    size = channels * height * width
    if len(shape) != 2 or shape[1] != size:
        raise ConfigError(
            f"images must have shape (n, {size}) for image_shape ({height}, {width}) and {channels} "
            f"channel(s), got {shape}; check the data set's image shape"
        )
