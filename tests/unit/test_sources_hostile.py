"""`read_table` on hostile files: NA-like text, reserved column names, nested Parquet columns."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_wine
from typer.testing import CliRunner

from normlab.cli import app
from normlab.data.sources import read_table
from normlab.errors import DataSourceError

runner = CliRunner()

# pandas' default NA tokens: each one is text as written; only the empty field is missing.
NA_TOKENS = ["NA", "N/A", "n/a", "#N/A", "#NA", "NaN", "nan", "-NaN", "-nan", "None", "null", "NULL", "<NA>",
             "1.#IND", "1.#QNAN", "-1.#IND", "#N/A N/A"]


def _wine() -> pd.DataFrame:
    frame = load_wine(as_frame=True).frame.rename(columns={"target": "cultivar"})
    frame["cultivar"] = frame["cultivar"].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    return frame


@pytest.mark.parametrize("token", NA_TOKENS)
def test_na_tokens_arrive_as_the_text_they_are(tmp_path, token):
    path = tmp_path / "na.csv"
    path.write_text(f"amount,note\n1.5,{token}\n{token},ok\n,\n", encoding="utf-8")
    frame = read_table(path)
    assert frame["amount"].tolist()[:2] == ["1.5", token] and frame["note"].tolist()[:2] == [token, "ok"]
    assert frame.iloc[2].isna().all()  # the empty field is the one missing value


def test_an_empty_field_is_still_missing_in_a_numeric_column(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("amount,count\n1.5,3\n,\n2.5,4\n", encoding="utf-8")
    frame = read_table(path)
    assert frame["amount"].dtype == np.float64 and np.isnan(frame["amount"].iloc[1])
    assert frame["count"].isna().tolist() == [False, True, False]


def test_na_in_a_numeric_column_is_quarantined_as_it_arrived(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trusted = _wine()
    trusted["cellar"] = np.where(np.arange(len(trusted)) % 3 == 0, "None", "north")  # "None" is a cellar's name
    trusted.to_csv("wine.csv", index=False)
    made = runner.invoke(app, ["init", "--data", "wine.csv", "--label", "cultivar"])
    assert made.exit_code == 0, made.output
    suite = json.loads((tmp_path / "expectations" / "wine.json").read_text())
    (cellar,) = [e for e in suite["expectations"]
                 if e["type"] == "expect_column_values_to_be_in_set" and e["kwargs"]["column"] == "cellar"]
    assert cellar["kwargs"]["value_set"] == ["None", "north"]

    batch = trusted.astype({"alcohol": object, "magnesium": object})
    batch.loc[3, "alcohol"] = "NA"
    batch.loc[8, "magnesium"] = "null"
    batch.loc[9, "alcohol"] = np.nan  # written as an empty field: a missing value, not text
    batch.to_csv("batch.csv", index=False)
    result = runner.invoke(app, ["validate", "configs/wine.yaml", "--data", "batch.csv", "--summary", "s.json"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s.json").read_text())
    types = [c for c in summary["checks"] if c["check"] == "types"]
    assert types[0]["outcome"] == "quarantined" and types[0]["rows_flagged"] == 2
    quarantined = pd.read_parquet(summary["quarantine_path"]).set_index("_normlab_row")
    assert sorted(quarantined.index) == [3, 8, 9]
    assert quarantined.loc[3, "alcohol"] == "NA" and quarantined.loc[8, "magnesium"] == "null"
    assert quarantined.loc[3, "_normlab_checks"] == "types" and quarantined.loc[8, "_normlab_checks"] == "types"
    assert pd.isna(quarantined.loc[9, "alcohol"]) and "not_be_null(alcohol)" in quarantined.loc[9, "_normlab_checks"]
    assert set(quarantined["cellar"]) <= {"None", "north"}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("column", ["_normlab_row", "_normlab_checks", "_normlab_anything"])
def test_a_reserved_column_name_is_refused_in_one_line(tmp_path, suffix, column):
    path = tmp_path / f"reserved{suffix}"
    frame = _wine().head(10).assign(**{column: 1})
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path, index=False)
    with pytest.raises(DataSourceError) as info:
        read_table(path)
    message = str(info.value)
    assert str(path) in message and repr(column) in message and "reserve" in message and "\n" not in message


NESTED = {
    "list": (pa.list_(pa.int64()), [[1, 2], [3]], "lists"),
    "large_list": (pa.large_list(pa.string()), [["a"], []], "lists"),
    "fixed_size_list": (pa.list_(pa.float64(), 2), [[0.5, 1.0], [1.5, 2.0]], "lists"),
    "struct": (pa.struct([("x", pa.int64()), ("y", pa.string())]), [{"x": 1, "y": "a"}, {"x": 2, "y": "b"}],
               "structs"),
    "map": (pa.map_(pa.string(), pa.int64()), [[("k", 1)], [("k", 2), ("j", 3)]], "maps"),
}


@pytest.mark.parametrize("case", sorted(NESTED))
def test_a_nested_parquet_column_is_refused_in_one_line_and_left_untouched(tmp_path, case):
    kind, cells, holds = NESTED[case]
    path = tmp_path / f"{case}.parquet"
    table = pa.table({"alcohol": pa.array([13.2, 12.4]), "tags": pa.array(cells, type=kind),
                      "cultivar": pa.array(["barolo", "barbera"])})
    pq.write_table(table, path)
    before = path.read_bytes()
    with pytest.raises(DataSourceError) as info:
        read_table(path)
    message = str(info.value)
    assert str(path) in message and "column 'tags'" in message and f"holds {holds}" in message
    assert "\n" not in message and path.read_bytes() == before


def test_init_on_a_nested_column_exits_2_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frame = _wine()
    table = pa.Table.from_pandas(frame, preserve_index=False).append_column(
        "aromas", pa.array([["cherry", "tar"]] * len(frame), type=pa.list_(pa.string())))
    pq.write_table(table, "wine.parquet")
    result = runner.invoke(app, ["init", "--data", "wine.parquet", "--label", "cultivar"])
    assert result.exit_code == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and "wine.parquet" in errors[0] and "column 'aromas' holds lists" in errors[0]
    assert not (tmp_path / "configs").exists()
