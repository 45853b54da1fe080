"""`normlab validate` and `normlab init` as a user runs them: exit codes, tables, summaries, bad files."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from normlab.cli import app
from normlab.data.sources import load_builtin
from tests.conftest import REPO

runner = CliRunner()
# validate runs the repository's digits config, whose suite path is relative to the repository.
pytestmark = pytest.mark.usefixtures("repo_root")


def validate(tmp_path, *args: str):
    return runner.invoke(app, ["validate", str(REPO / "configs" / "digits.yaml"),
                               "--set", f"workdir={tmp_path / 'work'}", *args])


def test_validate_quarantines_prints_the_table_and_writes_the_summary(tmp_path):
    frame = load_builtin("digits")
    frame.loc[4, "pixel_9"] = 40
    csv = tmp_path / "batch.csv"
    frame.to_csv(csv, index=False)
    summary = tmp_path / "summary.json"
    result = validate(tmp_path, "--data", str(csv), "--summary", str(summary))
    assert result.exit_code == 0, result.output
    assert "expect_column_values_to_be_between" in result.stdout and "quarantined" in result.stdout
    assert "rows in 1797 = accepted 1796 + quarantined 1" in result.stdout
    data = json.loads(summary.read_text())
    assert data["status"] == "passed"
    assert (data["rows_in"], data["rows_accepted"], data["rows_quarantined"]) == (1797, 1796, 1)
    between = [c for c in data["checks"]
               if c["check"] == "expect_column_values_to_be_between" and c["column"] == "pixel_9"]
    assert between == [{"check": "expect_column_values_to_be_between", "column": "pixel_9", "severity": "quarantine",
                        "outcome": "quarantined", "rows_flagged": 1, "unexpected_count": 1, "observed": None}]
    assert {"columns", "types", "non_finite", "duplicates", "contamination", "label_noise", "class_balance",
            "row_count", "rejected_share"} <= {c["check"] for c in data["checks"]}
    quarantined = pd.read_parquet(data["quarantine_path"])
    assert quarantined["_normlab_row"].tolist() == [4] and quarantined["pixel_9"].tolist() == [40]


def test_validate_exits_3_when_blocked(tmp_path):
    csv = tmp_path / "short.csv"
    load_builtin("digits").drop(columns=["pixel_0"]).to_csv(csv, index=False)
    summary = tmp_path / "summary.json"
    result = validate(tmp_path, "--data", str(csv), "--summary", str(summary))
    assert result.exit_code == 3
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: batch ") and "pixel_0" in errors[0]
    data = json.loads(summary.read_text())
    assert data["status"] == "blocked" and data["rows_quarantined"] == data["rows_in"] == 1797


BAD_FILES = {
    "empty.csv": b"",
    "header_only.csv": b"pixel_0,label\n",
    "ragged.csv": b"a,label\n1,2\n3,4,5\n",
    "garbage.csv": bytes(range(256)) * 8,
    "table.txt": b"a,label\n1,2\n",
}


@pytest.mark.parametrize("name", [*BAD_FILES, "missing.csv"])
@pytest.mark.parametrize("command", ["validate", "init"])
def test_unreadable_input_is_one_line_a_nonzero_exit_and_untouched(tmp_path, monkeypatch, name, command):
    path = tmp_path / name
    if name in BAD_FILES:
        path.write_bytes(BAD_FILES[name])
        stamp = os.stat(path).st_mtime_ns
    if command == "validate":
        result = validate(tmp_path, "--data", str(path))
    else:
        monkeypatch.chdir(tmp_path)
        result = runner.invoke(app, ["init", "--data", str(path), "--label", "label"])
        assert not (tmp_path / "expectations").exists() and not (tmp_path / "configs").exists()
    assert result.exit_code == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: data ") and str(path) in errors[0]
    if name in BAD_FILES:
        assert path.read_bytes() == BAD_FILES[name] and os.stat(path).st_mtime_ns == stamp
    else:
        assert not path.exists()
    assert not (tmp_path / "work" / "quarantine").exists()
    assert not any((tmp_path / "work" / "validations").glob("*"))


def _customers(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "age": rng.integers(18, 80, n),
        "income": rng.normal(50, 10, n).round(2),
        "city": rng.choice(["oslo", "lima", "pune"], n),
    })
    frame["segment"] = np.where(frame["income"] + rng.normal(0, 3, n) > 50, "high", "low")
    return frame


def test_init_then_validate_passes_the_same_file_and_catches_a_corrupted_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _customers().to_csv("customers.csv", index=False)
    made = runner.invoke(app, ["init", "--data", "customers.csv", "--label", "segment"])
    assert made.exit_code == 0, made.output
    assert "expectations/customers.json" in made.stdout and "normlab run configs/customers.yaml" in made.stdout

    clean = runner.invoke(app, ["validate", "configs/customers.yaml", "--summary", "clean.json"])
    assert clean.exit_code == 0, clean.output
    data = json.loads((tmp_path / "clean.json").read_text())
    assert data["rows_quarantined"] == 0 and {c["outcome"] for c in data["checks"]} == {"passed"}

    broken = _customers().astype({"age": object})
    broken.loc[1, "age"] = "unknown"
    broken.loc[2, "income"] = 1e6
    broken.loc[3, "city"] = "atlantis"
    broken.loc[4, "segment"] = "vip"
    broken.to_csv("broken.csv", index=False)
    caught = runner.invoke(app, ["validate", "configs/customers.yaml", "--data", "broken.csv", "--summary", "b.json"])
    assert caught.exit_code == 0, caught.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["rows_quarantined"] == 4
    assert sorted(pd.read_parquet(data["quarantine_path"])["_normlab_row"]) == [1, 2, 3, 4]

    renamed = _customers().rename(columns={"city": "town"})
    renamed.to_csv("renamed.csv", index=False)
    assert runner.invoke(app, ["validate", "configs/customers.yaml", "--data", "renamed.csv"]).exit_code == 3


def test_init_refuses_to_overwrite_and_unsafe_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _customers().to_csv("customers.csv", index=False)
    assert runner.invoke(app, ["init", "--data", "customers.csv", "--label", "segment"]).exit_code == 0
    suite = (tmp_path / "expectations" / "customers.json").read_text()
    again = runner.invoke(app, ["init", "--data", "customers.csv", "--label", "segment"])
    assert again.exit_code == 2 and "--force" in again.stderr
    assert (tmp_path / "expectations" / "customers.json").read_text() == suite
    forced = runner.invoke(app, ["init", "--data", "customers.csv", "--label", "segment", "--force"])
    assert forced.exit_code == 0
    for bad in ("../escape", "a/b", ".hidden", ""):
        result = runner.invoke(app, ["init", "--data", "customers.csv", "--label", "segment", "--name", bad])
        assert result.exit_code == 2 and "--name" in result.stderr, bad
    missing_label = runner.invoke(app, ["init", "--data", "customers.csv", "--label", "nope", "--name", "other"])
    assert missing_label.exit_code == 2 and "label column 'nope' not found" in missing_label.stderr
