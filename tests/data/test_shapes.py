"""The generated shapes data set and the image folders written from it: bytes, layout and every fault."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from normlab.data.image_folders import FaultyFolder, write_faulty_folder, write_image_folder, write_manifest
from normlab.data.shapes import SHAPE_CLASSES, generate_shapes, shapes_frame
from normlab.data.sources import read_table

# The data set is a versioned artifact: a change of these bytes is a new data set (say so, then update).
PINNED_SHA256 = "10a71e3b7a25afab0dccca5f600030c36c3298c9fdec9bc2a647a74a87434ebf"


def digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# --- generate_shapes ---------------------------------------------------------


def test_same_seed_gives_the_same_bytes_and_another_seed_others():
    first, second, other = (generate_shapes(40, seed=s)[:2] for s in (3, 3, 4))
    assert digest(*first) == digest(*second)
    assert not np.array_equal(first[0], other[0])


def test_the_bytes_are_pinned():
    assert digest(*generate_shapes(20, seed=0)[:2]) == PINNED_SHA256


@pytest.mark.parametrize(("n", "size"), [(50, 32), (53, 16), (0, 32)])
def test_shapes_dtypes_and_balance(n, size):
    images, labels, names = generate_shapes(n, size=size, seed=1)
    assert images.shape == (n, size, size, 3) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert names == SHAPE_CLASSES and len(set(names)) == 10
    counts = np.bincount(labels, minlength=10)
    assert counts.sum() == n and counts.max() - counts.min() <= (n % 10 > 0)  # balanced
    assert labels.min(initial=0) >= 0 and labels.max(initial=0) <= 9


def test_images_use_the_range_and_every_class_draws_a_shape():
    images, labels, _ = generate_shapes(200, seed=2)
    assert images.min() < 30 and images.max() > 225  # colours span the range
    # A shape covers a good share of the image, so no class is (near-)blank background.
    spread = images.reshape(200, -1).astype(float).std(axis=1)
    assert all(spread[labels == k].min() > 10 for k in range(10))


def test_colour_carries_no_class_information():
    images, labels, _ = generate_shapes(2000, seed=5)
    means = images.reshape(2000, -1, 3).mean(axis=1)  # mean colour of each image
    overall = means.mean(axis=0)
    for k in range(10):
        assert np.abs(means[labels == k].mean(axis=0) - overall).max() < 12, SHAPE_CLASSES[k]


@pytest.mark.parametrize(("n", "size"), [(-1, 32), (10, 7)])
def test_bad_arguments_raise(n, size):
    with pytest.raises(ValueError, match="generate_shapes"):
        generate_shapes(n, size=size)


def test_the_frame_flattens_in_channel_height_width_order():
    images, labels, names = generate_shapes(12, size=8, seed=7)
    frame = shapes_frame(12, size=8, seed=7)
    pixels = [f"pixel_{i}" for i in range(3 * 8 * 8)]
    assert list(frame.columns) == [*pixels, "label"]
    assert (frame[pixels].dtypes == np.uint8).all()
    np.testing.assert_array_equal(frame[pixels].to_numpy(), images.transpose(0, 3, 1, 2).reshape(12, -1))
    c, y, x = 2, 5, 3  # one pixel by hand: index c*H*W + y*W + x
    assert (frame[f"pixel_{c * 64 + y * 8 + x}"].to_numpy() == images[:, y, x, c]).all()
    assert frame["label"].tolist() == [names[k] for k in labels]


# --- write_image_folder ------------------------------------------------------


def test_image_folder_round_trips_in_input_order(tmp_path):
    images, labels, names = generate_shapes(8, size=16, seed=0)
    paths = write_image_folder(tmp_path, images, labels, names)
    assert [p.parent.name for p in paths] == [names[k] for k in labels]
    assert [p.name for p in paths] == [f"{i:05d}.png" for i in range(8)]
    for image, path in zip(images, paths, strict=True):
        with Image.open(path) as loaded:
            np.testing.assert_array_equal(np.asarray(loaded), image)  # PNG is lossless


def test_image_folder_writes_grayscale_and_jpeg_under_given_names(tmp_path):
    images = np.arange(2 * 6 * 5, dtype=np.uint8).reshape(2, 6, 5)
    paths = write_image_folder(tmp_path, images, [1, 1], ("a", "b"), fmt="jpg", names=["x", "y"])
    assert paths == [tmp_path / "b" / "x.jpg", tmp_path / "b" / "y.jpg"]
    with Image.open(paths[0]) as loaded:
        assert (loaded.format, loaded.mode, loaded.size) == ("JPEG", "L", (5, 6))
    with pytest.raises(FileExistsError):  # nothing is overwritten
        write_image_folder(tmp_path, images, [1, 1], ("a", "b"), fmt="jpg", names=["x", "z"])


@pytest.mark.parametrize(
    ("labels", "kwargs", "match"),
    [
        ([0, 2], {}, "class indices"),  # out of range
        ([0], {}, "labels"),  # lengths differ
        ([0, 1], {"names": ["x", "../x"]}, "bare file stem"),  # escapes the class folder
        ([0, 0], {"names": ["x", "x"]}, "same name"),
        ([0, 1], {"fmt": "xyz"}, "unknown format"),
    ],
)
def test_image_folder_rejects_bad_input(tmp_path, labels, kwargs, match):
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=match):
        write_image_folder(tmp_path, images, labels, ("a", "b"), **kwargs)


# --- write_faulty_folder -----------------------------------------------------


@pytest.fixture(scope="module")
def faulty(tmp_path_factory) -> FaultyFolder:
    return write_faulty_folder(tmp_path_factory.mktemp("faulty") / "images", seed=0, per_class=4)


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_every_file_is_valid_or_a_recorded_fault(faulty):
    faults = faulty.faults()
    recorded = set(faulty.valid)
    for value in faults.values():
        recorded |= {value} if isinstance(value, str) else set(value)
    recorded.discard(faulty.empty_class)  # a folder, not a file
    assert files_under(faulty.root) == recorded
    assert set(faults) == {"corrupt", "not_image", "duplicates", "empty_class", "outside_root", "too_deep",
                           "non_image_file", "cmyk", "too_small", "grayscale", "rgba"}


def test_valid_files_load_and_sit_in_their_class(faulty):
    assert faulty.classes == SHAPE_CLASSES[:3]
    assert len(faulty.valid) == 3 * 4 + 2 and list(faulty.valid) == sorted(faulty.valid)
    for rel in faulty.valid:
        assert faulty.label_of(rel) in faulty.classes and len(Path(rel).parts) == 2
        with Image.open(faulty.root / rel) as image:
            image.convert("RGB").load()
    children = {p.name for p in faulty.root.iterdir() if p.is_dir() and any(q.is_file() for q in p.iterdir())}
    assert children == set(faulty.classes)


def test_the_corrupt_file_is_half_a_png_that_does_not_load(faulty):
    data = (faulty.root / faulty.corrupt).read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")  # looks like a PNG from its header
    with pytest.raises(OSError), Image.open(faulty.root / faulty.corrupt) as image:
        image.load()


def test_the_fake_jpeg_and_the_notes_are_not_images(faulty):
    assert faulty.not_image.endswith(".jpg") and faulty.non_image_file.endswith(".txt")
    for rel in (faulty.not_image, faulty.non_image_file):
        assert faulty.label_of(rel) in faulty.classes
        with pytest.raises(UnidentifiedImageError):
            Image.open(faulty.root / rel)


def test_duplicates_are_byte_equal_within_and_across_classes(faulty):
    original, same_class, other_class = faulty.duplicates
    contents = {(faulty.root / rel).read_bytes() for rel in faulty.duplicates}
    assert len(contents) == 1
    assert original in faulty.valid and same_class not in faulty.valid and other_class not in faulty.valid
    assert faulty.label_of(same_class) == faulty.label_of(original) != faulty.label_of(other_class)


def test_layout_faults_sit_where_recorded(faulty):
    empty = faulty.root / faulty.empty_class
    assert empty.is_dir() and not any(empty.iterdir()) and faulty.empty_class not in faulty.classes
    assert (faulty.root / faulty.outside_root).parent == faulty.root
    deep = Path(faulty.too_deep)
    assert len(deep.parts) == 3 and deep.parts[0] in faulty.classes
    for rel in (faulty.outside_root, faulty.too_deep):  # fine images, in the wrong place
        with Image.open(faulty.root / rel) as image:
            image.load()


@pytest.mark.parametrize(
    ("field", "fmt", "mode", "size", "valid"),
    [
        ("cmyk", "JPEG", "CMYK", (32, 32), False),
        ("too_small", "PNG", "RGB", (4, 4), False),
        ("grayscale", "PNG", "L", (40, 24), True),
        ("rgba", "PNG", "RGBA", (32, 32), True),
    ],
)
def test_image_mode_and_size_faults(faulty, field, fmt, mode, size, valid):
    rel = getattr(faulty, field)
    with Image.open(faulty.root / rel) as image:
        assert (image.format, image.mode, image.size) == (fmt, mode, size)
        if mode == "RGBA":
            assert len(set(image.getchannel("A").getdata())) > 1  # real transparency, not a constant alpha
    assert (rel in faulty.valid) is valid


def test_the_faulty_folder_is_the_same_bytes_for_a_seed_and_refuses_a_full_folder(tmp_path, faulty):
    again = write_faulty_folder(tmp_path / "again", seed=0, per_class=4)
    assert again.faults() == faulty.faults() and again.valid == faulty.valid
    for rel in files_under(again.root):
        assert (again.root / rel).read_bytes() == (faulty.root / rel).read_bytes(), rel
    with pytest.raises(FileExistsError):
        write_faulty_folder(again.root)


# --- write_manifest ----------------------------------------------------------


def test_manifest_next_to_the_images_lists_the_valid_files(faulty):
    table = faulty.root / "manifest.csv"
    try:
        frame = write_manifest(faulty, table)
        read = read_table(table)
    finally:
        table.unlink()  # keep the shared folder as the fault tests expect it
    assert list(read.columns) == ["file", "label"]
    assert read["file"].tolist() == list(faulty.valid) == frame["file"].tolist()
    assert read["label"].tolist() == [faulty.label_of(rel) for rel in faulty.valid]


def test_manifest_elsewhere_holds_paths_relative_to_the_table(tmp_path, faulty):
    table = tmp_path / "tables" / "manifest.parquet"
    write_manifest(faulty, table, column="path", label="y")
    read = read_table(table)
    assert list(read.columns) == ["path", "y"] and len(read) == len(faulty.valid)
    assert all(p.startswith("../") for p in read["path"])
    for path, rel in zip(read["path"], faulty.valid, strict=True):
        assert (table.parent / path).resolve() == (faulty.root / rel).resolve()


def test_manifest_of_a_plain_folder_lists_the_images_in_class_folders(tmp_path):
    images, labels, names = generate_shapes(6, size=8, seed=0)
    paths = write_image_folder(tmp_path / "imgs", images, labels, names)
    (tmp_path / "imgs" / "stray.png").write_bytes(paths[0].read_bytes())  # in no class: not listed
    (paths[0].parent / "readme.txt").write_text("not an image")  # not an image suffix: not listed
    frame = write_manifest(tmp_path / "imgs", tmp_path / "imgs" / "m.csv")
    expected = sorted(p.relative_to(tmp_path / "imgs").as_posix() for p in paths)
    assert frame["file"].tolist() == expected
    assert frame["label"].tolist() == [Path(p).parts[0] for p in expected]


@pytest.mark.parametrize(("table", "kwargs"), [("m.json", {}), ("m.csv", {"column": "x", "label": "x"})])
def test_manifest_rejects_bad_arguments(tmp_path, faulty, table, kwargs):
    with pytest.raises(ValueError, match="write_manifest"):
        write_manifest(faulty, tmp_path / table, **kwargs)
