"""Image corruptions: every kind and severity, determinism, and the geometric maps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from normlab.data import shifts
from normlab.data.shifts import CORRUPTION_FUNCS, CORRUPTIONS, SEVERITIES, corrupt_images, corruption_name
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
    stack = images.astype(np.float64).reshape(-1, *SHAPE)
    stack.flags.writeable = False  # a function writing to its input fails here
    out = CORRUPTION_FUNCS[kind](stack, severity - 1, low=0.0, high=16.0, rng=np.random.default_rng(4))
    assert out.shape == stack.shape
    assert not np.may_share_memory(out, stack)
    expected = np.clip(out, 0.0, 16.0).reshape(len(images), -1)
    assert np.array_equal(corrupt_images(images, SHAPE, kind, severity, seed=4), expected)


def test_a_corruption_that_returns_its_input_does_not_change_the_caller_s_array(monkeypatch) -> None:
    x = np.full((3, 4), 20.0)  # float64 already: the stack is a view of x
    monkeypatch.setattr(shifts, "CORRUPTION_FUNCS", {**CORRUPTION_FUNCS, "same": lambda images, level, **_: images})
    monkeypatch.setattr(shifts, "CORRUPTIONS", (*CORRUPTIONS, "same"))
    out = corrupt_images(x, (2, 2), "same", 1)
    assert (out == 16.0).all() and (x == 20.0).all()
