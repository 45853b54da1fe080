"""A generated colour image data set of ten shapes, built in numpy: no download, same bytes every run.

Each image holds one shape on a background. The class is the shape's geometry
only: position, scale, a small rotation, the foreground and background
colours, the background's gradient and texture and the pixel noise are drawn
independently of it, so colour carries no class information. The rotation
stays within +-15 degrees because orientation is part of the geometry here:
the horizontal and the vertical bar, and the square and the diamond standing
on a corner, differ by it.

Every shape is a signed distance function (after Inigo Quilez's 2D distance
functions) in a unit frame; scaled to pixels, ``clip(0.5 - distance, 0, 1)``
is an anti-aliased coverage mask one pixel wide. All images are drawn at once
with numpy broadcasting. Per pixel only elementwise arithmetic and ``sqrt``
run (IEEE exact), with no BLAS call and no transcendental function, so the
bytes do not depend on the CPU's vector units or the BLAS build; only the
per-image parameters come from ``np.random.default_rng(seed)``.

Difficulty was tuned so that the small ResNet of ``normlab.models`` learns the
classes in a few epochs with BatchNorm but clearly less well with other norms
or none (see the `_SCALE` ... `_SHADING` knobs; numbers in the project notes).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

SHAPE_CLASSES: tuple[str, ...] = (
    "circle", "square", "triangle", "cross", "ring", "star", "diamond", "horizontal_bar", "vertical_bar", "crescent",
)

# Difficulty knobs. Lengths are in pixels at size 32 and scale with the size.
_SCALE = (0.26, 0.42)  # shape radius, fraction of the image side
_MAX_TURN = 15.0  # rotation, degrees either way (the bars and the diamond are told apart by orientation)
_MIN_CONTRAST = 70.0  # RGB distance of the foreground from both background colours (0..441)
_MIN_LUMA = 90.0  # luminance difference of the same (0..255)
_TEXTURE_AMPLITUDE = (0.0, 25.0)  # peak of the smooth background texture, grey levels
_TEXTURE_CELLS = 5  # the texture's control grid is this many cells per side
_NOISE_STD = (2.0, 10.0)  # per-pixel Gaussian noise, grey levels
_SHADING = 0.25  # the foreground's brightness varies by up to this share across the shape

_SQRT3 = np.float32(np.sqrt(3.0))
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 weights


def _length(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.sqrt(u * u + v * v)


def _sd_circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _length(u, v) - 0.92


def _box(u: np.ndarray, v: np.ndarray, bx: float, by: float) -> np.ndarray:
    qx, qy = np.abs(u) - bx, np.abs(v) - by
    return _length(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)


def _sd_square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _box(u, v, 0.78, 0.78)


def _sd_triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Equilateral, centroid at the origin, half side r (circumradius 2r/sqrt 3).
    r = 0.95
    px, py = np.abs(u) - r, v + r / _SQRT3
    fold = px + _SQRT3 * py > 0
    px, py = np.where(fold, (px - _SQRT3 * py) / 2, px), np.where(fold, (-_SQRT3 * px - py) / 2, py)
    px = px - np.clip(px, -2 * r, 0)
    return -_length(px, py) * np.sign(py)


def _sd_cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.minimum(_box(u, v, 1.0, 0.3), _box(u, v, 0.3, 1.0))


def _sd_ring(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.abs(_length(u, v) - 0.72) - 0.24


def _sd_star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Five points, outer radius r, inner radius rf * r: fold into one sector, then one edge.
    r, rf = 1.05, 0.5
    k1x, k1y = 0.809016994375, -0.587785252292
    px, py = np.abs(u), v
    for kx, ky in ((k1x, k1y), (-k1x, k1y)):
        d = 2 * np.maximum(kx * px + ky * py, 0)
        px, py = px - d * kx, py - d * ky
    px, py = np.abs(px), py - r
    bax, bay = -rf * k1y, rf * k1x - 1
    h = np.clip((px * bax + py * bay) / (bax * bax + bay * bay), 0, r)
    return _length(px - bax * h, py - bay * h) * np.sign(py * bax - px * bay)


def _sd_diamond(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # A rhombus standing on a corner, taller than wide.
    bx, by = 0.75, 1.05
    px, py = np.abs(u), np.abs(v)
    h = np.clip(((bx - 2 * px) * bx - (by - 2 * py) * by) / (bx * bx + by * by), -1, 1)
    d = _length(px - 0.5 * bx * (1 - h), py - 0.5 * by * (1 + h))
    return d * np.sign(px * by + py * bx - bx * by)


def _sd_horizontal_bar(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _box(u, v, 1.05, 0.33)


def _sd_vertical_bar(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _box(u, v, 0.33, 1.05)


def _sd_crescent(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    u = u - 0.25  # roughly centre the crescent's bulk
    return np.maximum(_length(u, v) - 0.95, 0.78 - _length(u - 0.5, v))


_SDFS: tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], ...] = (
    _sd_circle, _sd_square, _sd_triangle, _sd_cross, _sd_ring,
    _sd_star, _sd_diamond, _sd_horizontal_bar, _sd_vertical_bar, _sd_crescent,
)


def _turns(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 2)`` (cos, sin) of angles within +-`_MAX_TURN` degrees, without sin/cos per image.

    The half-angle tangent t is drawn uniformly and the rotation is
    ``((1 - t^2) / (1 + t^2), 2t / (1 + t^2))``: exact arithmetic only, and for
    small angles as good as uniform in the angle.
    """
    t = rng.uniform(-1, 1, n) * math.tan(math.radians(_MAX_TURN) / 2)
    return np.stack([(1 - t * t) / (1 + t * t), 2 * t / (1 + t * t)], axis=1)


def _unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 2)`` directions uniform on the circle, without sin/cos (a normalized Gaussian pair)."""
    g = rng.standard_normal((n, 2))
    return g / np.sqrt((g * g).sum(axis=1, keepdims=True))


def _colours(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two background colours and a foreground colour per image, the foreground set apart from both.

    A triple is redrawn until the foreground differs from both background
    colours by `_MIN_LUMA` in luminance (so the outline shows in brightness,
    whatever the hues) and by `_MIN_CONTRAST` in RGB.
    """
    back_a, back_b, fore = (np.empty((n, 3)) for _ in range(3))
    todo = np.arange(n)
    while todo.size:  # about one triple in 15 fits: some 150 cheap rounds for 6000 images
        a, b, f = (rng.uniform(0, 255, (todo.size, 3)) for _ in range(3))
        back_a[todo], back_b[todo], fore[todo] = a, b, f
        luma = np.minimum(np.abs(((f - a) * _LUMA).sum(axis=1)), np.abs(((f - b) * _LUMA).sum(axis=1)))
        dist = np.sqrt(np.minimum(((f - a) ** 2).sum(axis=1), ((f - b) ** 2).sum(axis=1)))
        todo = todo[(luma < _MIN_LUMA) | (dist < _MIN_CONTRAST)]
    return back_a, back_b, fore


def _texture(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Smooth grey texture ``(n, size, size)``: a coarse random grid, bilinearly upsampled, times an amplitude."""
    cells = _TEXTURE_CELLS
    grid = rng.uniform(-1, 1, (n, cells + 1, cells + 1)).astype(np.float32)
    pos = (np.arange(size, dtype=np.float32) + 0.5) * (cells / size)
    i0 = np.minimum(pos.astype(np.int64), cells - 1)
    w = (pos - i0).astype(np.float32)
    rows = grid[:, i0, :] * (1 - w)[None, :, None] + grid[:, i0 + 1, :] * w[None, :, None]
    smooth = rows[:, :, i0] * (1 - w)[None, None, :] + rows[:, :, i0 + 1] * w[None, None, :]
    amplitude = rng.uniform(*_TEXTURE_AMPLITUDE, n).astype(np.float32)
    return smooth * amplitude[:, None, None]


def generate_shapes(
    n: int = 6000, *, size: int = 32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Draw ``n`` shape images, balanced over `SHAPE_CLASSES`.

    Args:
        n: Number of images; the class counts differ by at most one.
        size: Side of each square image in pixels (at least 8).
        seed: Seed of ``np.random.default_rng``; the same seed gives the same bytes.

    Returns:
        ``(images, labels, class_names)``: ``uint8`` images ``(n, size, size, 3)``
        (HWC, RGB), ``int64`` labels ``(n,)`` in 0..9 and the ten class names.

    Raises:
        ValueError: ``n`` is negative or ``size`` is below 8.
    """
    if n < 0 or size < 8:
        raise ValueError(f"generate_shapes: need n >= 0 and size >= 8, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n, dtype=np.int64) % len(SHAPE_CLASSES))

    # Per-image geometry: radius r (pixels per shape unit), centre, rotation.
    radius = rng.uniform(*_SCALE, n) * size
    centre = radius[:, None] + rng.uniform(0, 1, (n, 2)) * (size - 2 * radius)[:, None]
    turn = _turns(rng, n)
    back_a, back_b, fore = _colours(rng, n)
    gradient = _unit_vectors(rng, n)
    shading = _unit_vectors(rng, n) * rng.uniform(0, _SHADING, (n, 1))
    texture = _texture(rng, n, size)
    noise_std = rng.uniform(*_NOISE_STD, n).astype(np.float32)
    noise = rng.standard_normal((n, size, size, 3), dtype=np.float32)
    noise *= noise_std[:, None, None, None]

    f32 = np.float32
    axis = np.arange(size, dtype=f32) + f32(0.5)  # pixel centres
    dx = axis[None, None, :] - centre[:, 0, None, None].astype(f32)
    dy = axis[None, :, None] - centre[:, 1, None, None].astype(f32)
    cos, sin = turn[:, 0, None, None].astype(f32), turn[:, 1, None, None].astype(f32)
    inv_r = (1 / radius)[:, None, None].astype(f32)
    u = (dx * cos + dy * sin) * inv_r
    v = (dy * cos - dx * sin) * inv_r

    # Coverage: the signed distance in pixels, through a one-pixel ramp.
    alpha = np.empty((n, size, size), dtype=f32)
    for index, sdf in enumerate(_SDFS):
        rows = np.flatnonzero(labels == index)
        if rows.size:
            distance = sdf(u[rows], v[rows]) * radius[rows, None, None].astype(f32)
            alpha[rows] = np.clip(f32(0.5) - distance, 0, 1)

    # Background: a linear gradient across the image between two colours, plus texture.
    t = ((dx * gradient[:, 0, None, None].astype(f32) + dy * gradient[:, 1, None, None].astype(f32))
         * f32(1 / size) + f32(0.5))
    t = np.clip(t, 0, 1)[..., None]
    start = back_a[:, None, None, :].astype(f32)
    back = (back_b[:, None, None, :].astype(f32) - start) * t
    back += start
    back += texture[..., None]
    # Foreground: a flat colour with a soft linear shading across the shape.
    light = 1 + (u * shading[:, 0, None, None].astype(f32) + v * shading[:, 1, None, None].astype(f32))
    pixels = fore[:, None, None, :].astype(f32) * light[..., None]

    # pixels = back + alpha * (front - back) + noise, in place: these are the large arrays.
    pixels -= back
    pixels *= alpha[..., None]
    pixels += back
    pixels += noise
    np.rint(pixels, out=pixels)
    images = np.clip(pixels, 0, 255, out=pixels).astype(np.uint8)
    return images, labels, SHAPE_CLASSES


def shapes_frame(n: int = 6000, *, size: int = 32, seed: int = 0) -> pd.DataFrame:
    """`generate_shapes` as a table: one row per image, pixels flattened in ``(C, H, W)`` order.

    Args:
        n: Number of images.
        size: Side of each image in pixels.
        seed: Seed of the generator.

    Returns:
        ``uint8`` columns ``pixel_0``..``pixel_{3*size*size-1}``, equal to
        ``images.transpose(0, 3, 1, 2).reshape(n, -1)`` (the flat layout the
        image model families read), and ``label``, the class name (e.g. ``"circle"``).
    """
    images, labels, names = generate_shapes(n, size=size, seed=seed)
    flat = images.transpose(0, 3, 1, 2).reshape(n, -1)
    frame = pd.DataFrame(flat, columns=[f"pixel_{i}" for i in range(flat.shape[1])])
    frame["label"] = np.asarray(names, dtype=object)[labels]
    return frame
