"""Built-in data sets and the table reader's handling of good and broken files."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from normlab.data.sources import BUILTIN_DATASETS, image_shape_of, load_builtin, read_table
from normlab.errors import ConfigError, DataSourceError


def test_digits_has_pixel_and_label_columns() -> None:
    df = load_builtin("digits")
    assert df.shape == (1797, 65)
    assert list(df.columns) == [f"pixel_{i}" for i in range(64)] + ["label"]
    assert all(pd.api.types.is_integer_dtype(t) for t in df.dtypes)
    pixels = df.drop(columns="label").to_numpy()
    assert pixels.min() == 0 and pixels.max() == 16
    assert sorted(df["label"].unique()) == list(range(10))


def test_every_builtin_loads_and_digits_is_8x8() -> None:
    for name in BUILTIN_DATASETS:
        assert len(load_builtin(name)) > 0
    assert image_shape_of("digits") == (8, 8)
    assert image_shape_of("my_table.csv") is None


def test_unknown_builtin_lists_known_names() -> None:
    with pytest.raises(ConfigError, match="digits") as info:
        load_builtin("mnist")
    assert "mnist" in str(info.value)


FRAME = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"], "c": [0.5, 1.5, np.nan]})


@pytest.mark.parametrize("name", ["t.csv", "t.CSV", "t.csv.gz", "t.parquet", "t.pq"])
def test_read_table_round_trips_each_format(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.lower().endswith((".csv", ".csv.gz")):
        FRAME.to_csv(path, index=False, compression="gzip" if name.endswith(".gz") else None)
    else:
        FRAME.to_parquet(path, index=False)
    pd.testing.assert_frame_equal(read_table(path), FRAME)
    pd.testing.assert_frame_equal(read_table(str(path)), FRAME)


def test_short_rows_are_padded_with_missing_values(tmp_path: Path) -> None:
    # Fewer fields than the header is legal CSV (trailing empty cells).
    path = tmp_path / "short.csv"
    path.write_text("a,b\n1,2\n3\n")
    df = read_table(path)
    assert df.shape == (2, 2) and np.isnan(df["b"].iloc[1])


def _write(content: bytes, name: str) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        path = tmp_path / name
        path.write_bytes(content)
        return path

    return make


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    import io

    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False)
    return buffer.getvalue()


# Each broken file, with a phrase its message must contain.
BROKEN_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (lambda tmp: tmp / "nope.csv", "does not exist"),
    "directory": (lambda tmp: (tmp / "dir.csv").mkdir() or tmp / "dir.csv", "directory"),
    "txt_extension": (_write(b"a,b\n1,2\n", "data.txt"), "unsupported extension"),
    "no_extension": (_write(b"a,b\n1,2\n", "data"), "unsupported extension"),
    "empty_csv": (_write(b"", "empty.csv"), "empty"),
    "empty_parquet": (_write(b"", "empty.parquet"), "empty"),
    "blank_lines": (_write(b"\n\n\n", "blank.csv"), "no header"),
    "header_only": (_write(b"a,b,c\n", "header.csv"), "no rows"),
    "ragged_first_row": (_write(b"a,b\n1,2,3\n4,5\n", "ragged1.csv"), "well-formed"),
    "ragged_later_row": (_write(b"a,b\n1,2\n4,5,6\n", "ragged2.csv"), "well-formed"),
    "random_bytes": (_write(np.random.default_rng(0).bytes(512), "noise.csv"), "data file"),
    "nul_bytes": (_write(b"a,b\n1,\x002\n", "nul.csv"), "binary"),
    "latin1_text": (_write("a,b\ncafé,1\n".encode("latin-1"), "latin1.csv"), "UTF-8"),
    "parquet_named_csv": (_write(_parquet_bytes(FRAME), "really_parquet.csv"), "data file"),
    "plain_text_named_gz": (_write(b"a,b\n1,2\n", "fake.csv.gz"), "could not be read"),
    "gzip_of_header_only": (_write(gzip.compress(b"a,b\n"), "header.csv.gz"), "no rows"),
    "garbage_parquet": (_write(b"PAR1 this is not parquet at all", "bad.parquet"), "Parquet"),
    "csv_named_pq": (_write(b"a,b\n1,2\n", "text.pq"), "Parquet"),
    "zero_row_parquet": (_write(_parquet_bytes(FRAME.iloc[:0]), "zero.parquet"), "no rows"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_FILES))
def test_broken_file_gives_one_line_error_with_path_and_is_left_untouched(tmp_path: Path, case: str) -> None:
    make, phrase = BROKEN_FILES[case]
    path = make(tmp_path)
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(DataSourceError) as info:
        read_table(path)
    message = str(info.value)
    assert str(path) in message
    assert phrase in message
    assert "\n" not in message
    after = path.read_bytes() if path.is_file() else None
    assert after == before


@pytest.mark.parametrize("command", [["run"], ["sweep"], ["validate"]])
def test_a_missing_data_file_stops_before_any_flow_in_one_line(command, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from normlab.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*command, "--data", str(tmp_path / "missing.csv")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: data file") and "does not exist" in lines[-1]
    assert "Task run" not in result.output and "Flow run" not in result.output


def test_check_readable_names_the_problem_without_parsing(tmp_path):
    from normlab.data.sources import check_readable

    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "table.txt").write_text("a,b\n1,2\n")
    for name, message in (("missing.csv", "does not exist"), ("empty.csv", "empty"), ("table.txt", "extension")):
        with pytest.raises(DataSourceError, match=message):
            check_readable(tmp_path / name)
    assert check_readable(tmp_path) == tmp_path  # a folder is a folder of images: the gate scans it file by file
    (tmp_path / "ok.csv").write_text("a,b\n1,2\n")
    assert check_readable(tmp_path / "ok.csv") == tmp_path / "ok.csv"
