"""Per-image statistics: what the drift monitor compares on image batches instead of raw pixels.

A model on 32x32 RGB images has 3072 pixel inputs; a test per pixel is noise
(each pixel's distribution moves with the objects' positions) and says
nothing an operator can act on. What changes when a camera, its exposure, its
lens or its compression changes is the image as a whole: its brightness,
contrast, colour, sharpness and noise. Each statistic below is one number per
image, computed on the pixels the model reads (after the resize of
`normlab.images.decode`), so reference and batch are measured the same way.

Luminance is ITU-R BT.601 (0.299 R + 0.587 G + 0.114 B, as Pillow's ``L``),
scaled to 0..1. The statistics, in `STATISTICS` order:

- ``image_brightness``: mean luminance;
- ``image_contrast``: standard deviation of luminance (RMS contrast);
- ``image_dark_share`` / ``image_bright_share``: share of pixels with
  luminance below 0.1 / above 0.9 (under- and over-exposure, clipping);
- ``image_sharpness``: mean absolute 4-neighbour Laplacian of luminance
  (falls with blur and defocus, rises with noise);
- ``image_entropy``: Shannon entropy (bits) of a 32-bin luminance histogram
  (falls with posterization and heavy compression, rises with noise);
- RGB only: ``image_mean_red`` / ``_green`` / ``_blue`` (channel means, 0..1,
  a white-balance or colour-cast change) and ``image_saturation`` (mean HSV
  saturation, (max - min) / max per pixel).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from normlab.images.decode import PIXEL_PREFIX

GRAY_STATISTICS: tuple[str, ...] = (
    "image_brightness", "image_contrast", "image_dark_share", "image_bright_share", "image_sharpness",
    "image_entropy",
)
COLOUR_STATISTICS: tuple[str, ...] = ("image_mean_red", "image_mean_green", "image_mean_blue", "image_saturation")
_BINS = 32
# Images per chunk: bounds the float64 working copies (a few arrays of chunk x C x H x W). Elementwise
# float64 arithmetic (no BLAS) keeps every image's numbers independent of the chunk it is in.
_CHUNK = 1024


def statistics_for(channels: int) -> tuple[str, ...]:
    """The statistic columns of images with ``channels`` channels (1 or 3)."""
    return GRAY_STATISTICS + (COLOUR_STATISTICS if channels == 3 else ())


def image_statistics(pixels: np.ndarray, *, channels: int, image_shape: tuple[int, int]) -> pd.DataFrame:
    """One row of statistics per image.

    Args:
        pixels: Pixel rows (n, C*H*W) in (C, H, W) order, values 0..255 (the
            decoded layout, `normlab.images.decode.pixel_columns`).
        channels: C, 1 (``L``) or 3 (``RGB``).
        image_shape: (H, W).

    Returns:
        A frame with the `statistics_for` columns, float64, one row per image.
    """
    height, width = image_shape
    n = len(pixels)
    if channels not in (1, 3) or pixels.ndim != 2 or pixels.shape[1] != channels * height * width:
        raise ValueError(f"pixel rows of shape {pixels.shape} are not {channels} x {height} x {width} images")
    names = statistics_for(channels)
    out = np.empty((n, len(names)), dtype=np.float64)
    for start in range(0, n, _CHUNK):
        chunk = np.asarray(pixels[start:start + _CHUNK], dtype=np.float64).reshape(-1, channels, height, width)
        out[start:start + len(chunk)] = _chunk_statistics(chunk / 255.0)
    return pd.DataFrame(out, columns=list(names))


def _chunk_statistics(images: np.ndarray) -> np.ndarray:
    """Statistics of (n, C, H, W) images scaled to 0..1, in `statistics_for` order."""
    n, channels = images.shape[:2]
    luma = images[:, 0] if channels == 1 else 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]
    flat = luma.reshape(n, -1)
    columns = [flat.mean(axis=1), flat.std(axis=1), (flat < 0.1).mean(axis=1), (flat > 0.9).mean(axis=1),
               _laplacian(luma), _entropy(flat)]
    if channels == 3:
        columns += list(images.reshape(n, 3, -1).mean(axis=2).T)
        high, low = images.max(axis=1), images.min(axis=1)
        saturation = np.divide(high - low, high, out=np.zeros_like(high), where=high > 0)
        columns.append(saturation.reshape(n, -1).mean(axis=1))
    return np.stack(columns, axis=1)


def _laplacian(luma: np.ndarray) -> np.ndarray:
    """Mean |4-neighbour Laplacian| over each image's interior (0 for images under 3x3)."""
    if luma.shape[1] < 3 or luma.shape[2] < 3:
        return np.zeros(len(luma))
    core = luma[:, 1:-1, 1:-1]
    lap = luma[:, :-2, 1:-1] + luma[:, 2:, 1:-1] + luma[:, 1:-1, :-2] + luma[:, 1:-1, 2:] - 4.0 * core
    return np.abs(lap).reshape(len(luma), -1).mean(axis=1)


def _entropy(flat: np.ndarray) -> np.ndarray:
    """Shannon entropy (bits) of each row's 32-bin histogram over 0..1."""
    bins = np.minimum((flat * _BINS).astype(np.int64), _BINS - 1)
    offsets = np.arange(len(flat))[:, None] * _BINS
    counts = np.bincount((bins + offsets).ravel(), minlength=len(flat) * _BINS).reshape(len(flat), _BINS)
    p = counts / flat.shape[1]
    logs = np.log2(p, out=np.zeros_like(p), where=p > 0)
    return -(p * logs).sum(axis=1)


def pixel_channels(features: list[str] | tuple[str, ...], image_shape: tuple[int, int] | None) -> int | None:
    """The channels of a model whose features are pixel columns at ``image_shape`` (1 or 3), else None."""
    if not image_shape or not features or not all(str(f).startswith(PIXEL_PREFIX) for f in features):
        return None
    channels, rest = divmod(len(features), int(image_shape[0]) * int(image_shape[1]))
    return channels if rest == 0 and channels in (1, 3) else None


def model_mode(features: list[str] | tuple[str, ...], image_shape: tuple[int, int] | None) -> str | None:
    """The Pillow mode a pixel model reads (``L`` or ``RGB``), else None."""
    channels = pixel_channels(features, image_shape)
    return None if channels is None else ("L" if channels == 1 else "RGB")
