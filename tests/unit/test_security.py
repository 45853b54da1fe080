"""Hostile input and secrets: no code runs from checkpoints, models or YAML; names cannot escape; no secret is recorded.

The source audit parses every module of normlab/, tasks/ and flows/ (what any
engineer adds included) and fails on an unsafe loader or an eval.
"""

from __future__ import annotations

import ast
import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from normlab.config import PipelineConfig, load_config, redact_uri
from normlab.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for folder in ("normlab", "tasks", "flows") for p in (REPO / folder).rglob("*.py"))

# Module-level functions that run code from data, by dotted name.
UNSAFE_CALLS = {
    "yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all",
    "pickle.load", "pickle.loads", "cloudpickle.load", "cloudpickle.loads", "dill.load", "dill.loads",
    "joblib.load", "marshal.loads", "shelve.open",
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _calls(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, _dotted(node.func)


def test_sources_were_found():
    names = {p.relative_to(REPO).as_posix() for p in SOURCES}
    assert {"normlab/training.py", "normlab/pipeline.py", "normlab/config/loading.py", "tasks/training.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_source_loads_nothing_unsafely(path):
    problems = []
    for node, name in _calls(path):
        where = f"{path.relative_to(REPO)}:{node.lineno}"
        if name in {"eval", "exec"}:
            problems.append(f"{where}: {name}()")
        if name in UNSAFE_CALLS:
            problems.append(f"{where}: {name}()")
        if name == "torch.load":
            weights_only = {k.arg: k.value for k in node.keywords}.get("weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                problems.append(f"{where}: torch.load without weights_only=True")
        if name == "numpy.load" or name == "np.load":
            allow = {k.arg: k.value for k in node.keywords}.get("allow_pickle")
            if isinstance(allow, ast.Constant) and allow.value is True:
                problems.append(f"{where}: np.load(allow_pickle=True)")
    # MLflow refuses pickled models (and pickles inside pt2 archives) unless this is set.
    tree = ast.parse(path.read_text(encoding="utf-8"))
    problems += [f"{path.relative_to(REPO)}:{node.lineno}: MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
                 for node in ast.walk(tree)
                 if isinstance(node, ast.Constant) and node.value == "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"]
    assert problems == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_source_binds_no_server_to_all_interfaces(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    wildcard = [node.lineno for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and isinstance(node.value, str)
                and node.value.strip() in {"0.0.0.0", "::"}]
    assert wildcard == [], f"{path.relative_to(REPO)} lines {wildcard}: bind 127.0.0.1 unless the user asks otherwise"


class _Payload:
    """Pickles to a call of ``os.mkdir(marker)``: proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _hostile_file(path: Path, marker: Path, state: dict) -> Path:
    torch.save({**state, "payload": _Payload(marker)}, path)
    # The payload is live: an unrestricted load runs it.
    torch.load(path, weights_only=False)
    assert marker.is_dir()
    marker.rmdir()
    return path


def test_hostile_checkpoint_is_refused_without_running_its_code(tmp_path):
    from normlab.models import build_model
    from normlab.training import CHECKPOINT_NAME, make_optimizer, train_model

    model = build_model("mlp", in_features=4, num_classes=2, norm="batch", hidden=(8,))
    optimizer = make_optimizer(model.parameters(), "sgd", lr=0.1)
    marker = tmp_path / "pwned"
    (tmp_path / "ckpt").mkdir()
    _hostile_file(tmp_path / "ckpt" / CHECKPOINT_NAME, marker, {"epoch": 1, "model": model.state_dict()})
    x = torch.randn(16, 4).numpy()
    y = (x[:, 0] > 0).astype("int64")
    with pytest.raises(pickle.UnpicklingError):
        train_model(model, optimizer, (x, y), (x, y), epochs=2, batch_size=8, seed=0, checkpoint_dir=tmp_path / "ckpt")
    assert not marker.exists()


def test_hostile_model_weights_are_refused_without_running_their_code(tmp_path):
    from normlab.model_spec import ModelSpec
    from normlab.pipeline import load_weights

    spec = ModelSpec(family="mlp", in_features=4, num_classes=2, norm="layer", image_shape=None,
                     hidden=(8,), channels=(4,), groups=2, dropout=0.0)
    marker = tmp_path / "pwned"
    weights = _hostile_file(tmp_path / "model.pt", marker, {})
    with pytest.raises(pickle.UnpicklingError):
        load_weights(spec, weights)
    assert not marker.exists()


def test_yaml_tags_that_run_code_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    config = tmp_path / "evil.yaml"
    config.write_text(f"name: !!python/object/apply:os.mkdir ['{marker}']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(config)
    with pytest.raises(ConfigError, match="name"):
        load_config(None, [f"name=!!python/object/apply:os.mkdir ['{marker}']"])
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../outside", "a/b", "..", ".", "/etc", "x\\..\\y", "", "name\x00"])
def test_names_that_would_escape_their_folder_are_refused(name):
    from normlab.config import validate_config

    with pytest.raises(ConfigError) as info:
        validate_config({"name": name})
    message = str(info.value)
    assert message.startswith("config: name=") and "\n" not in message


def test_an_escaping_name_is_refused_from_the_command_line():
    with pytest.raises(ConfigError, match=re.escape("name='../outside'")):
        load_config(None, ["name=../outside"])


def test_a_plain_name_stays_inside_the_quarantine_and_run_folders(tmp_path):
    cfg = load_config(None, ["name=my-data_v2.1", f"workdir={tmp_path}"])
    root = cfg.gate.quarantine_path(cfg.workdir_path())
    assert (root / cfg.name).resolve().parent == root.resolve()


@pytest.mark.parametrize(("uri", "shown"), [
    ("http://alice:s3cret@127.0.0.1:5000", "http://alice:***@127.0.0.1:5000"),
    ("https://token@mlflow.example.org/path", "https://***@mlflow.example.org/path"),
    ("https://h.example.org/?token=abc&x=1", "https://h.example.org/?token=***&x=1"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
])
def test_redact_uri_hides_passwords_and_tokens(uri, shown):
    assert redact_uri(uri) == shown


def test_recorded_config_holds_no_tracking_password():
    from normlab.config import flatten, to_yaml

    cfg = PipelineConfig.model_validate({"tracking": {"uri": "http://alice:s3cret@127.0.0.1:5000"}})
    assert "s3cret" not in to_yaml(cfg.redacted())
    assert "s3cret" not in repr(flatten(cfg.redacted()))
    assert cfg.tracking.uri == "http://alice:s3cret@127.0.0.1:5000"  # the original is untouched


def test_credentials_in_the_uri_move_to_mlflows_variables(monkeypatch):
    from normlab.credentials import strip_credentials

    # Set first so that monkeypatch restores the variables the call overwrites.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "before")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "before")
    assert strip_credentials("http://alice:p%40ss@127.0.0.1:5000/x") == "http://127.0.0.1:5000/x"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "p@ss"
    assert strip_credentials("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert strip_credentials("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


@pytest.mark.parametrize("uri", ["HTTP://alice:s3cret@127.0.0.1:5000", "Https://alice:s3cret@h.example.org/p"])
def test_credentials_leave_an_http_uri_whatever_the_case_of_its_scheme(monkeypatch, uri):
    from normlab.credentials import strip_credentials

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "before")
    public = strip_credentials(uri)
    assert "s3cret" not in public and "alice" not in public
    assert public.startswith(("http://", "https://"))
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cret"


@pytest.mark.parametrize(("uri", "public"), [
    ("postgresql://alice:s3cret@db.example.org:5432/mlflow", "postgresql://alice:***@db.example.org:5432/mlflow"),
    ("POSTGRESQL+psycopg2://alice:s3cret@db/mlflow", "postgresql+psycopg2://alice:***@db/mlflow"),
    ("mysql+pymysql://root:s3cret@127.0.0.1/mlflow?charset=utf8", "mysql+pymysql://root:***@127.0.0.1/mlflow?charset=utf8"),
])
def test_a_database_password_stays_in_the_environment_and_reaches_only_mlflow(monkeypatch, uri, public):
    from normlab.credentials import STORE_URI_VAR, store_uri, strip_credentials

    monkeypatch.delenv(STORE_URI_VAR, raising=False)
    assert strip_credentials(uri) == public
    assert store_uri(public) == os.environ[STORE_URI_VAR]
    assert "s3cret" in store_uri(public)
    assert store_uri("postgresql://bob:***@elsewhere/db") == "postgresql://bob:***@elsewhere/db"


def test_scrub_hides_passwords_in_error_text(monkeypatch):
    from normlab.credentials import STORE_URI_VAR, scrub, strip_credentials

    monkeypatch.delenv(STORE_URI_VAR, raising=False)
    strip_credentials("postgresql://alice:s3cret-Pw@db/mlflow")
    text = "could not connect: s3cret-Pw rejected for HTTP://bob:other-pw@host:5000/api"
    assert scrub(text) == "could not connect: *** rejected for HTTP://bob:***@host:5000/api"


def test_cli_strips_credentials_before_anything_sees_the_config(monkeypatch):
    from normlab.cli.common import load_or_fail

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "before")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "before")
    cfg = load_or_fail(None, ["tracking.uri=HTTP://alice:s3cret@127.0.0.1:5000"])
    assert cfg.tracking.uri == "http://127.0.0.1:5000"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cret"


def test_ui_command_binds_localhost(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from normlab.cli import app, common, run

    calls = []
    monkeypatch.setattr(run.os, "execvp", lambda prog, args: calls.append(args))
    result = CliRunner().invoke(app, ["ui", "--set", f"workdir={tmp_path}", "--port", "5123"])
    assert result.exit_code == 0, result.output
    (args,) = calls
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert "127.0.0.1" in common.ui_command("sqlite:////tmp/x.db")
