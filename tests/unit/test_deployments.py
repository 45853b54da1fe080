"""deploy/prefect.yaml: plain ``prefect deploy`` and ``normlab deploy``/``serve`` train the same pipeline."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from normlab.cli.deploy import entrypoint_flow, prefect_schedules
from normlab.config import PipelineConfig, load_config
from normlab.deployments import (
    available,
    code_root,
    deployable_config,
    describe_schedules,
    load_deployment_specs,
    resolve_config,
)
from normlab.errors import ConfigError
from tests.conftest import REPO

PREFECT_FILE = REPO / "deploy" / "prefect.yaml"
DEFAULT = "configs/digits.yaml"


def raw_deployments() -> list[dict]:
    return yaml.safe_load(PREFECT_FILE.read_text())["deployments"]


class _StartedError(Exception):
    """Raised in place of the flow's work once it has its config."""

    def __init__(self, config: PipelineConfig) -> None:
        super().__init__("started")
        self.config = config


def test_code_root_is_the_repository():
    assert code_root() == REPO


@pytest.mark.parametrize("entry", raw_deployments(), ids=lambda e: e["name"])
def test_plain_prefect_runs_train_the_default_config(entry, repo_root, monkeypatch):
    """The file's parameters, validated against the flow's signature as a run does, give configs/digits.yaml."""
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    flow = entrypoint_flow(entry["entrypoint"])
    params = entry["parameters"]
    # What the server checks when the deployment is created and a run is started (enforce_parameter_schema).
    assert validate(params, parameter_schema(flow).model_dump_for_openapi(), ignore_required=False) == []
    validated = flow.validate_parameters(params)
    assert validated["config"] == DEFAULT

    # The flow's body resolves the config before any work: stop it there.
    module = importlib.import_module(flow.fn.__module__)

    def stop(config):
        raise _StartedError(resolve_config(config))

    monkeypatch.setattr(module, "resolve_config", stop)
    with pytest.raises(_StartedError) as started:
        flow.fn(**validated)
    assert started.value.config.model_dump() == load_config(DEFAULT).model_dump()


def test_no_inline_config_remains_in_the_file():
    document = yaml.safe_load(PREFECT_FILE.read_text())
    # A config section (data, splits, model, ...) written out as a mapping anywhere in the file.
    sections = {k for k, f in PipelineConfig.model_fields.items() if isinstance(f.annotation, type)
                and issubclass(f.annotation, BaseModel)}

    def mappings(node):
        if isinstance(node, dict):
            yield node
            for value in node.values():
                yield from mappings(value)
        elif isinstance(node, list):
            for value in node:
                yield from mappings(value)

    assert sections >= {"data", "splits", "model", "train"}
    assert not [m for m in mappings(document) if any(isinstance(m.get(k), dict) for k in sections)]
    assert "config" not in (document.get("definitions") or {})
    for entry in document["deployments"]:
        config = entry["parameters"].get("config")
        assert isinstance(config, str) and (REPO / config).is_file(), entry["name"]


def test_resolve_config_passes_a_config_through():
    cfg = load_config(REPO / DEFAULT, ["train.epochs=1"])
    assert resolve_config(cfg) is cfg
    assert resolve_config(str(REPO / DEFAULT)).model_dump() == load_config(REPO / DEFAULT).model_dump()


def test_normlab_deploy_sends_the_resolved_config(repo_root, tmp_path):
    cfg = load_config(DEFAULT, [f"workdir={tmp_path / 'work'}", "train.epochs=1"])
    specs = load_deployment_specs(None, cfg, tmp_path / "landing", None)
    assert [s["name"] for s in specs] == ["train", "monitor", "sweep"]
    for spec in specs:
        assert spec["parameters"]["config"] == deployable_config(cfg)
        assert spec["parameters"]["config"]["workdir"] == str(tmp_path / "work")
        assert spec["work_pool"] == "normlab" and spec["work_queue"] == "default"
        assert available(spec)
        # The resolved config is a valid flow parameter, and is the config the flow gets.
        flow = entrypoint_flow(spec["entrypoint"])
        validated = flow.validate_parameters(spec["parameters"])
        assert resolve_config(validated["config"]).train.epochs == 1
    by_name = {s["name"]: s for s in specs}
    assert by_name["monitor"]["parameters"]["data"] == str(tmp_path / "landing")
    assert deployable_config(cfg)["data"]["expectations"] == str(REPO / "expectations" / "digits.json")


def test_only_and_unknown_deployments(repo_root):
    cfg = load_config(DEFAULT)
    assert [s["name"] for s in load_deployment_specs(None, cfg, None, ["sweep"])] == ["sweep"]
    with pytest.raises(ConfigError, match="--only nightly: not a deployment"):
        load_deployment_specs(None, cfg, None, ["nightly"])


def test_a_malformed_file_is_one_line(tmp_path: Path):
    bad = tmp_path / "prefect.yaml"
    bad.write_text("deployments: []\n")
    with pytest.raises(ConfigError, match="no `deployments:` list"):
        load_deployment_specs(bad, load_config(REPO / DEFAULT), None, None)
    bad.write_text("deployments:\n  - name: x\n")
    with pytest.raises(ConfigError, match="needs a `name` and an `entrypoint`"):
        load_deployment_specs(bad, load_config(REPO / DEFAULT), None, None)


def test_schedules(repo_root):
    specs = {s["name"]: s for s in load_deployment_specs(None, load_config(DEFAULT), None, None)}
    assert describe_schedules(specs["train"]) == "cron 0 2 * * * (UTC)"
    assert describe_schedules(specs["monitor"]) == "every 3600 s"
    assert describe_schedules(specs["sweep"]) == "on demand"
    (cron,) = prefect_schedules(specs["train"])
    assert (cron.cron, cron.timezone) == ("0 2 * * *", "UTC")
    (interval,) = prefect_schedules(specs["monitor"])
    assert interval.interval.total_seconds() == 3600
    with pytest.raises(ConfigError, match="needs cron, interval or rrule"):
        prefect_schedules({"name": "x", "schedules": [{"every": 1}]})
