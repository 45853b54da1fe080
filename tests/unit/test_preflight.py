"""A work folder or tracking store normlab cannot use: one line, exit 2, before any flow starts."""

from __future__ import annotations

import importlib.util
import stat
import tempfile

import pytest
from typer.testing import CliRunner

from normlab.cli import app
from tests.conftest import REPO

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("repo_root")
SECRET = "pw-Preflight-9x"


def invoke(command: str, *sets: str):
    args = [command, str(REPO / "configs" / "digits.yaml")]
    for item in sets:
        args += ["--set", item]
    return runner.invoke(app, args)


def one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output
    return errors[0]


def _unwritable_folder(tmp_path):
    """A folder this user cannot create files in (root writes through mode bits: then a kernel folder)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return folder
    for candidate in ("/sys", "/proc/sys"):
        try:
            with tempfile.TemporaryFile(dir=candidate):
                pass
        except OSError:
            return candidate
    pytest.skip("no folder here refuses writes to this user")


@pytest.mark.parametrize("command", ["validate", "run"])
def test_an_unwritable_workdir_is_one_line_and_exit_2(tmp_path, command):
    folder = _unwritable_folder(tmp_path)
    result = invoke(command, f"workdir={folder}")
    assert result.exit_code == 2, result.output
    assert "is not writable" in one_error_line(result)


@pytest.mark.parametrize("command", ["validate", "run", "monitor"])
def test_a_workdir_that_is_a_file_or_below_one_is_one_line_and_exit_2(tmp_path, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    for workdir, says in ((blocker, "is not a folder"), (blocker / "below", "cannot be created")):
        extra = ["--data", str(tmp_path)] if command == "monitor" else []
        result = runner.invoke(app, [command, str(REPO / "configs" / "digits.yaml"),
                                     "--set", f"workdir={workdir}", *extra])
        assert result.exit_code == 2, result.output
        assert says in one_error_line(result)
    assert blocker.read_text() == "not a folder\n"


def test_a_store_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path):
    store = tmp_path / "mlflow.db"
    store.write_text("these are my notes\n")
    result = invoke("run", f"workdir={tmp_path / 'work'}", f"tracking.uri=sqlite:///{store}")
    assert result.exit_code == 2, result.output
    assert "is not an SQLite database" in one_error_line(result)
    assert store.read_text() == "these are my notes\n"


def test_a_store_path_that_is_a_folder_is_refused(tmp_path):
    store = tmp_path / "mlflow.db"
    store.mkdir()
    result = invoke("validate", f"workdir={tmp_path / 'work'}", f"tracking.uri=sqlite:///{store}")
    assert result.exit_code == 2, result.output
    assert "is not a file" in one_error_line(result)


def test_a_store_folder_that_cannot_be_created_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = invoke("run", f"workdir={tmp_path / 'work'}", f"tracking.uri=sqlite:///{blocker}/sub/mlflow.db")
    assert result.exit_code == 2, result.output
    assert "its folder" in one_error_line(result)


@pytest.mark.skipif(importlib.util.find_spec("psycopg2") is not None, reason="the PostgreSQL driver is installed")
def test_a_database_store_without_its_driver_is_one_line_without_the_password(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_STORE_URI", "")  # restored (to unset) after the test
    result = invoke("run", f"workdir={tmp_path / 'work'}",
                    f"tracking.uri=POSTGRESQL://alice:{SECRET}@127.0.0.1:1/mlflow")
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert "driver" in line and "postgresql://alice:***@127.0.0.1:1/mlflow" in line
    assert SECRET not in result.output
    leaked = [p for p in (tmp_path / "work").rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == []
