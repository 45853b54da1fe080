"""Image corruptions: every kind and severity, determinism, the geometric maps, RGB and CIFAR-size images."""

from __future__ import annotations

import colorsys
import hashlib

import numpy as np
import pytest
from scipy import ndimage

from normlab.data import shifts
from normlab.data.shifts import (
    CORRUPTION_FUNCS,
    CORRUPTIONS,
    SEVERITIES,
    corrupt_images,
    corruption_name,
    corruption_parameters,
)
from normlab.data.sources import load_builtin
from normlab.errors import ConfigError

SHAPE = (8, 8)
# More images than pixels, so rotation and blur take the matrix path.
N_IMAGES = 150


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return load_builtin("digits").drop(columns="label").to_numpy()[:N_IMAGES]


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corruption_changes_images_keeps_shape_range_and_repeats(
    images: np.ndarray, kind: str, severity: int
) -> None:
    original = images.copy()
    out = corrupt_images(images, SHAPE, kind, severity, seed=7)
    assert out.shape == images.shape and out.dtype == np.float64
    assert out.min() >= 0.0 and out.max() <= 16.0
    assert not np.array_equal(out, images)
    assert np.array_equal(corrupt_images(images, SHAPE, kind, severity, seed=7), out)
    assert np.array_equal(images, original)  # input untouched


@pytest.mark.parametrize(
    "kind",
    [
        "gaussian_noise",
        "shot_noise",
        "impulse_noise",
        "contrast",
        "brightness",
        "inversion",
        "blur",
        "occlusion",
    ],
)
def test_severity_five_moves_images_further_than_severity_one(images: np.ndarray, kind: str) -> None:
    mild = np.abs(corrupt_images(images, SHAPE, kind, 1) - images).mean()
    strong = np.abs(corrupt_images(images, SHAPE, kind, 5) - images).mean()
    assert strong > mild


@pytest.mark.parametrize("kind", ["gaussian_noise", "shot_noise", "impulse_noise", "occlusion"])
def test_random_kinds_depend_on_the_seed(images: np.ndarray, kind: str) -> None:
    a = corrupt_images(images, SHAPE, kind, 3, seed=0)
    b = corrupt_images(images, SHAPE, kind, 3, seed=1)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("n_images", [10, N_IMAGES])  # direct ndimage path and matrix path
@pytest.mark.parametrize(("severity", "angle"), [(1, 15), (5, 75)])
def test_rotation_matches_ndimage_rotate(
    images: np.ndarray, n_images: int, severity: int, angle: float
) -> None:
    stack = images[:n_images].reshape(-1, *SHAPE).astype(float)
    expected = ndimage.rotate(stack, angle, axes=(1, 2), reshape=False, order=1)
    out = corrupt_images(images[:n_images], SHAPE, "rotation", severity)
    np.testing.assert_allclose(out, np.clip(expected, 0, 16).reshape(n_images, -1), atol=1e-9)


@pytest.mark.parametrize("n_images", [10, N_IMAGES])
def test_blur_matches_gaussian_filter_per_image(images: np.ndarray, n_images: int) -> None:
    first = images[0].reshape(SHAPE).astype(float)
    expected = ndimage.gaussian_filter(first, sigma=1.3, mode="nearest")
    out = corrupt_images(images[:n_images], SHAPE, "blur", 5)
    np.testing.assert_allclose(out[0].reshape(SHAPE), expected, atol=1e-9)


def test_translation_shifts_down_right_with_background_fill() -> None:
    image = np.arange(1, 65, dtype=float).reshape(1, 64) % 16 + 1
    out = corrupt_images(image, SHAPE, "translation", 5).reshape(SHAPE)
    grid = image.reshape(SHAPE)
    assert np.array_equal(out[3:, 3:], grid[:5, :5])
    assert (out[:3, :] == 0).all() and (out[:, :3] == 0).all()


@pytest.mark.parametrize(("severity", "side"), [(1, 1), (3, 3), (5, 5)])
def test_occlusion_blanks_one_square_per_image(severity: int, side: int) -> None:
    bright = np.full((40, 64), 10.0)
    out = corrupt_images(bright, SHAPE, "occlusion", severity, seed=3).reshape(-1, *SHAPE)
    assert ((out == 0).sum(axis=(1, 2)) == side * side).all()
    rows_hit = (out == 0).any(axis=2).sum(axis=1)
    assert (rows_hit == side).all()


def test_full_inversion_and_value_range() -> None:
    image = np.array([[0.0, 4.0, 16.0, 8.0]])
    assert corrupt_images(image, (2, 2), "inversion", 5).tolist() == [[16.0, 12.0, 0.0, 8.0]]
    unit = np.array([[0.0, 0.25, 1.0, 0.5]])
    out = corrupt_images(unit, (2, 2), "brightness", 5, value_range=(0.0, 1.0))
    assert out.tolist() == [[0.5, 0.75, 1.0, 1.0]]


def test_contrast_pulls_toward_each_images_mean() -> None:
    images = np.array([[0.0, 16.0, 0.0, 16.0], [4.0, 4.0, 4.0, 8.0]])
    out = corrupt_images(images, (2, 2), "contrast", 5)
    np.testing.assert_allclose(out.mean(axis=1), images.mean(axis=1))
    assert (out.std(axis=1) < images.std(axis=1)).all()


def test_corruption_name() -> None:
    assert corruption_name("gaussian_noise", 3) == "gaussian_noise_s3"
    assert corruption_name("blur", np.int64(5)) == "blur_s5"


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"kind": "fog"}, "known corruptions"),
        ({"severity": 0}, "severity"),
        ({"severity": 6}, "severity"),
        ({"severity": 2.5}, "severity"),
        ({"severity": True}, "severity"),
        ({"image_shape": (7, 8)}, "shape"),
        ({"value_range": (16.0, 0.0)}, "value_range"),
        ({"value_range": (0.0, float("nan"))}, "value_range"),
    ],
)
def test_bad_arguments_are_config_errors(images: np.ndarray, kwargs: dict, phrase: str) -> None:
    args = {"x": images, "image_shape": SHAPE, "kind": "blur", "severity": 1} | kwargs
    with pytest.raises(ConfigError, match=phrase) as info:
        corrupt_images(**args)
    assert "\n" not in str(info.value)


# The registry ----------------------------------------------------------------------------


def test_corruptions_are_the_registry_keys_in_order() -> None:
    assert CORRUPTIONS == tuple(CORRUPTION_FUNCS)
    assert CORRUPTIONS == (
        "gaussian_noise", "shot_noise", "impulse_noise", "contrast", "brightness",
        "inversion", "rotation", "translation", "blur", "occlusion",
    )


def test_the_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        CORRUPTION_FUNCS["fog"] = CORRUPTION_FUNCS["blur"]  # type: ignore[index]


def test_a_corruption_suite_expands_to_every_registered_corruption_in_order() -> None:
    from normlab.config import CorruptionSuite

    suite = CorruptionSuite(kind="corruption_suite")
    assert [s.corruption for s in suite.expand()] == list(CORRUPTION_FUNCS)


@pytest.mark.parametrize("severity", [1, 5])
@pytest.mark.parametrize("kind", list(CORRUPTION_FUNCS))
def test_every_registered_function_builds_a_new_array_and_is_what_corrupt_images_applies(
    images: np.ndarray, kind: str, severity: int
) -> None:
    stack = images.astype(np.float64).reshape(-1, 1, *SHAPE)
    stack.flags.writeable = False  # a function writing to its input fails here
    param = corruption_parameters(kind, SHAPE)[severity - 1]
    out = CORRUPTION_FUNCS[kind](stack, param, low=0.0, high=16.0, rng=np.random.default_rng(4))
    assert out.shape == stack.shape
    assert not np.may_share_memory(out, stack)
    expected = np.clip(out, 0.0, 16.0).reshape(len(images), -1)
    assert np.array_equal(corrupt_images(images, SHAPE, kind, severity, seed=4), expected)


def test_a_corruption_that_returns_its_input_does_not_change_the_caller_s_array(monkeypatch) -> None:
    x = np.full((3, 4), 20.0)  # float64 already: the stack is a view of x
    monkeypatch.setattr(shifts, "CORRUPTION_FUNCS", {**CORRUPTION_FUNCS, "same": lambda images, level, **_: images})
    monkeypatch.setattr(shifts, "CORRUPTIONS", (*CORRUPTIONS, "same"))
    monkeypatch.setattr(shifts, "SMALL_IMAGE_PARAMS", {**shifts.SMALL_IMAGE_PARAMS, "same": (None,) * 5})
    out = corrupt_images(x, (2, 2), "same", 1)
    assert (out == 16.0).all() and (x == 20.0).all()


# The 8x8 digits stay bit-identical -------------------------------------------------------

# sha256 (first 12 hex digits) of corrupt_images(digits[:n], (8, 8), kind, severity, seed=7),
# severities 1..5, recorded with the code before RGB and CIFAR-size support (numpy 2.4,
# scipy 1.17). n = 10 takes ndimage directly for rotation and blur, so its bytes are exact;
# n = 150 takes the (64, 64) matrix product, whose BLAS may round differently on another
# CPU, so those outputs are rounded to 1e-6 first.
DIGITS_EXACT = {
    "gaussian_noise": ("692795d6bfa6", "f379af146ccf", "417ebdfa62fb", "8286ea88be17", "fe5e443ed9dc"),
    "shot_noise": ("430328fb7983", "19c0d23bdf0c", "a030fe766514", "87929aab9f76", "8f165e10ff0f"),
    "impulse_noise": ("c2d98e15ffaa", "56450b6b9cab", "d7fb7377f562", "218adb614b04", "19878c3ef111"),
    "contrast": ("845fbff067c3", "a4641e8fdf1a", "b6a9f511be53", "1a59c02b5515", "064e25ed1db7"),
    "brightness": ("60d4c9d00042", "15e6472324fd", "a4427a2b2f50", "f1b97f03ec55", "44c9c99eae1a"),
    "inversion": ("048842aa8c10", "12b7ed57ec59", "d8d2dc8ba759", "b2e0039f7842", "fb432270ffeb"),
    "rotation": ("34c55c0b1d62", "729314125ba2", "6bc80071876c", "28248b3af910", "113c51a07b29"),
    "translation": ("82afa9d21c73", "f1cb08d2ae12", "57a569451e9d", "7d8a1b59545b", "62b249fe8a09"),
    "blur": ("88dfd3c4f252", "448222a1320f", "f5800fe8deec", "ba29e93f8243", "f78e0affdcce"),
    "occlusion": ("63f3d02b2c2b", "6c315fad119b", "c48a5a51bf49", "3198bd1cd162", "b084e659dc5f"),
}
DIGITS_ROUNDED = {
    "gaussian_noise": ("e802793a7cf8", "f1b07abba09a", "92de5073e0a9", "b06241654d6b", "9854b6ec2f0a"),
    "shot_noise": ("3dccc85fb9b8", "d8ebb852d845", "50c50a15e94f", "56e6138bca94", "c883bf3b8ada"),
    "impulse_noise": ("e848fe49eda6", "2ddc0ce3ece4", "3ce594172d22", "9c4ec80a7f27", "4a47cff85306"),
    "contrast": ("0b2d32c5b0ff", "5cbbd30fe766", "febb6aef11b0", "bc31b8efc542", "a7ccdc126258"),
    "brightness": ("26d9b361b333", "d45168747c7a", "b0abd98228fa", "7a5610766d0b", "4a805640538b"),
    "inversion": ("c88b5eb627c0", "dbc517e1e791", "9ab37204195d", "04b5ba612de7", "bdb033f8444f"),
    "rotation": ("b0a3049f450e", "f78c61d4bdaa", "dcdc8de66cd2", "e9c51b60a40e", "a7bf5fc4aa53"),
    "translation": ("5f90d2772bcb", "d5a114d7b8ea", "5d91be355fc1", "4cbec216dd27", "3a93ca0aa75d"),
    "blur": ("21f4a27bdd53", "c4c74986e4dd", "48409335684b", "902baee04d28", "5eed71d723d9"),
    "occlusion": ("b47a24485e29", "401051ec1a17", "762f7f002335", "ea5acf78d9d0", "d1901dc6cc38"),
}


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:12]


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_digits_outputs_are_unchanged(images: np.ndarray, kind: str) -> None:
    exact = tuple(_digest(corrupt_images(images[:10], SHAPE, kind, s, seed=7)) for s in SEVERITIES)
    rounded = tuple(_digest(np.round(corrupt_images(images, SHAPE, kind, s, seed=7), 6)) for s in SEVERITIES)
    assert exact == DIGITS_EXACT[kind]
    assert rounded == DIGITS_ROUNDED[kind]


# Parameters by image size ----------------------------------------------------------------

# CIFAR-10-C's c lists, hendrycks/robustness ImageNet-C/create_c/make_cifar_c.py (why: the
# suite claims CIFAR-10-C's severities at CIFAR size).
CIFAR_10_C = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # gaussian_blur
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_both_tables_have_five_parameters_per_kind(kind: str) -> None:
    assert len(shifts.SMALL_IMAGE_PARAMS[kind]) == len(shifts.LARGE_IMAGE_PARAMS[kind]) == len(SEVERITIES)
    assert set(shifts.SMALL_IMAGE_PARAMS) == set(shifts.LARGE_IMAGE_PARAMS) == set(CORRUPTIONS)


@pytest.mark.parametrize("shape", [(32, 32), (32, 48), (128, 96)])
def test_cifar_size_images_use_the_cifar_10_c_parameters(shape: tuple[int, int]) -> None:
    for kind, expected in CIFAR_10_C.items():
        assert corruption_parameters(kind, shape) == expected


@pytest.mark.parametrize("shape", [(8, 8), (28, 28), (31, 64)])
def test_smaller_images_keep_the_digits_parameters(shape: tuple[int, int]) -> None:
    for kind in CORRUPTIONS:
        assert corruption_parameters(kind, shape) == shifts.SMALL_IMAGE_PARAMS[kind]
    assert corruption_parameters("translation", shape) == ((1, 0), (1, 1), (2, 1), (2, 2), (3, 3))


def test_translation_scales_with_the_image_side_from_cifar_size() -> None:
    # The 8x8 pixels are 1/8, 2/8 and 3/8 of the side.
    assert corruption_parameters("translation", (32, 32)) == ((4, 0), (4, 4), (8, 4), (8, 8), (12, 12))
    assert corruption_parameters("translation", (64, 128)) == ((8, 0), (8, 16), (16, 16), (16, 32), (24, 48))
    assert corruption_parameters("rotation", (64, 64)) == corruption_parameters("rotation", (8, 8))


# RGB and CIFAR-size images ---------------------------------------------------------------

RGB = 3


def _rgb_images(n: int, side: int, seed: int = 0) -> np.ndarray:
    """(n, 3*side*side) rows in [0, 1]: smooth colour fields with some fine texture."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random((n, RGB, side, side)), sigma=(0, 0, 3, 3), mode="wrap")
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return np.clip(0.15 + 0.5 * smooth + 0.1 * rng.random(smooth.shape), 0.0, 1.0).reshape(n, -1)


def _gray_replicated(n: int, side: int) -> np.ndarray:
    """(n, 3*side*side) rows whose three channels are the same gray image."""
    gray = _rgb_images(n, side)[:, : side * side]
    return np.tile(gray, (1, RGB))


def _planes(rows: np.ndarray, side: int) -> np.ndarray:
    return rows.reshape(len(rows), -1, side, side)


@pytest.fixture(scope="module")
def rgb32() -> np.ndarray:
    return _rgb_images(12, 32)


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_rgb_rows_keep_shape_dtype_range_and_repeat(rgb32: np.ndarray, kind: str, severity: int) -> None:
    original = rgb32.copy()
    out = corrupt_images(rgb32, (32, 32), kind, severity, seed=5, value_range=(0.0, 1.0), channels=RGB)
    assert out.shape == rgb32.shape == (12, RGB * 32 * 32) and out.dtype == np.float64
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.array_equal(out, rgb32)
    again = corrupt_images(rgb32, (32, 32), kind, severity, seed=5, value_range=(0.0, 1.0), channels=RGB)
    assert np.array_equal(again, out)
    assert np.array_equal(rgb32, original)


@pytest.mark.parametrize("kind", ["gaussian_noise", "shot_noise", "impulse_noise", "occlusion"])
def test_rgb_random_kinds_depend_on_the_seed(rgb32: np.ndarray, kind: str) -> None:
    a, b = (corrupt_images(rgb32, (32, 32), kind, 3, seed=s, value_range=(0.0, 1.0), channels=RGB) for s in (0, 1))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("kind", ["gaussian_noise", "shot_noise", "impulse_noise"])
def test_noise_is_drawn_per_channel(kind: str) -> None:
    rows = _gray_replicated(6, 32)
    out = _planes(corrupt_images(rows, (32, 32), kind, 5, seed=2, value_range=(0.0, 1.0), channels=RGB), 32)
    noise = out - _planes(rows, 32)
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        assert not np.array_equal(out[:, a], out[:, b])
        assert abs(np.corrcoef(noise[:, a].ravel(), noise[:, b].ravel())[0, 1]) < 0.1  # independent draws


@pytest.mark.parametrize("kind", ["contrast", "brightness", "inversion", "rotation", "translation", "blur", "occlusion"])
def test_non_noise_kinds_keep_a_gray_image_gray(kind: str) -> None:
    out = _planes(corrupt_images(_gray_replicated(6, 32), (32, 32), kind, 4, seed=3, value_range=(0.0, 1.0),
                                 channels=RGB), 32)
    assert np.array_equal(out[:, 0], out[:, 1]) and np.array_equal(out[:, 0], out[:, 2])


@pytest.mark.parametrize("side", [32, 64])
@pytest.mark.parametrize("kind", ["rotation", "translation", "blur", "occlusion", "inversion"])
def test_spatial_kinds_move_every_channel_like_a_gray_image(kind: str, side: int) -> None:
    rows = _rgb_images(4, side)
    out = _planes(corrupt_images(rows, (side, side), kind, 3, seed=9, value_range=(0.0, 1.0), channels=RGB), side)
    for c in range(RGB):
        gray = _planes(rows, side)[:, c].reshape(len(rows), -1)
        alone = corrupt_images(gray, (side, side), kind, 3, seed=9, value_range=(0.0, 1.0))  # same seed: same patch
        np.testing.assert_allclose(out[:, c].reshape(len(rows), -1), alone, atol=1e-12)


def test_rgb_rotation_is_ndimage_rotate_on_the_stack() -> None:
    rows = _rgb_images(2, 64)
    expected = ndimage.rotate(_planes(rows, 64), 45, axes=(2, 3), reshape=False, order=1)
    out = corrupt_images(rows, (64, 64), "rotation", 3, value_range=(0.0, 1.0), channels=RGB)
    np.testing.assert_allclose(_planes(out, 64), np.clip(expected, 0.0, 1.0), atol=1e-9)


def test_cifar_size_planes_never_build_a_pixel_by_pixel_matrix() -> None:
    # A (1024, 1024) map per 32x32 plane is slower than ndimage for blur (and 2 GiB at 128x128).
    assert shifts._MATRIX_MAX_PIXELS < 32 * 32
    assert shifts._MATRIX_MAX_PIXELS >= 8 * 8  # the digits keep the matrix path (bit-identical runs)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_rgb_brightness_adds_the_cifar_amount_to_the_hsv_value(rgb32: np.ndarray, severity: int) -> None:
    out = corrupt_images(rgb32, (32, 32), "brightness", severity, value_range=(0.0, 1.0), channels=RGB)
    value_in, value_out = _planes(rgb32, 32).max(axis=1), _planes(out, 32).max(axis=1)
    shift = CIFAR_10_C["brightness"][severity - 1]
    np.testing.assert_allclose(value_out, np.minimum(value_in + shift, 1.0), atol=1e-12)
    # Hue and saturation kept: the stdlib's HSV round trip on a sample of pixels.
    pixels_in = _planes(rgb32, 32).transpose(0, 2, 3, 1).reshape(-1, RGB)[::97]
    pixels_out = _planes(out, 32).transpose(0, 2, 3, 1).reshape(-1, RGB)[::97]
    for rgb, got in zip(pixels_in, pixels_out, strict=True):
        h, s, v = colorsys.rgb_to_hsv(*rgb)
        np.testing.assert_allclose(got, colorsys.hsv_to_rgb(h, s, min(v + shift, 1.0)), atol=1e-12)


def test_rgb_brightness_in_another_value_range_and_on_black() -> None:
    rows = np.zeros((1, RGB * 4))  # one black 2x2 image in [0, 255]
    rows[0, :4] = [255.0, 51.0, 0.0, 0.0]  # red channel: full, 20 %, black, black
    rows[0, 4:8] = [0.0, 51.0, 0.0, 0.0]
    out = corrupt_images(rows, (2, 2), "brightness", 1, value_range=(0.0, 255.0), channels=RGB)
    planes = out.reshape(RGB, 2, 2).reshape(RGB, 4)
    assert planes[:, 0].tolist() == [255.0, 0.0, 0.0]  # already at full value
    np.testing.assert_allclose(planes[:, 1], [51.0 + 25.5, 51.0 + 25.5, 0.0])  # small images: +0.1 of the range
    np.testing.assert_allclose(planes[:, 2], [25.5, 25.5, 25.5])  # black becomes gray


def test_rgb_contrast_pulls_each_channel_toward_its_own_mean(rgb32: np.ndarray) -> None:
    # make_cifar_c.py: np.mean(x, axis=(0, 1), keepdims=True) on an (H, W, 3) image, one mean per channel.
    out = _planes(corrupt_images(rgb32, (32, 32), "contrast", 5, value_range=(0.0, 1.0), channels=RGB), 32)
    means = _planes(rgb32, 32).mean(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(out, (_planes(rgb32, 32) - means) * 0.15 + means, atol=1e-12)


def _inscribed_disc(side: int) -> np.ndarray:
    r = np.arange(side) - (side - 1) / 2
    return (r[:, None] ** 2 + r[None, :] ** 2) <= (side / 2 - 1) ** 2


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_severity_moves_cifar_size_rgb_images_further(rgb32: np.ndarray, kind: str) -> None:
    # Rotation is measured inside the inscribed disc: the background-filled corners cover
    # the most at 45 degrees and as much at 75 as at 15, so the whole-image change peaks at severity 3.
    region = _inscribed_disc(32) if kind == "rotation" else np.ones((32, 32), dtype=bool)
    change = [
        np.abs(_planes(corrupt_images(rgb32, (32, 32), kind, s, seed=1, value_range=(0.0, 1.0), channels=RGB)
                       - rgb32, 32)[..., region]).mean()
        for s in SEVERITIES
    ]
    assert all(np.diff(change) > 0), change


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"channels": 2}, "channels must be 1"),
        ({"channels": True}, "channels must be 1"),
        ({"channels": 3}, r"shape \(n, 192\)"),  # gray rows called as RGB
    ],
)
def test_bad_channels_are_one_line_config_errors(images: np.ndarray, kwargs: dict, phrase: str) -> None:
    with pytest.raises(ConfigError, match=phrase) as info:
        corrupt_images(images, SHAPE, "blur", 1, **kwargs)
    assert "\n" not in str(info.value)
