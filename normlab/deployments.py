"""The deployments of ``deploy/prefect.yaml``, read without Prefect.

`load_deployment_specs` reads the file into plain specs (name, entrypoint,
parameters, schedules, work pool) with the user's resolved config as every
``config`` parameter; ``normlab deploy`` and ``normlab serve`` turn the specs
into Prefect deployments (normlab/cli/deploy.py, where the Prefect schedule
objects and the work pool are made). `resolve_config` is the other half: the
file's own ``config`` parameters are config file paths, loaded when a run of a
plain ``prefect deploy`` starts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from normlab.config import PipelineConfig, load_config, read_yaml
from normlab.errors import ConfigError

# Config values that are paths: made absolute so a run started elsewhere finds them.
_PATH_KEYS: tuple[tuple[str, ...], ...] = (
    ("workdir",), ("data", "path"), ("data", "expectations"), ("gate", "quarantine_dir"),
    ("monitor", "workspace"), ("sweep", "output"),
)


def code_root() -> Path:
    """The folder holding ``flows/`` (the repository root of an editable install)."""
    # Found, not imported: the flows import Prefect.
    spec = importlib.util.find_spec("normlab.flows")
    if spec is None or spec.origin is None:
        raise ConfigError("normlab.flows is not installed: reinstall normlab")
    return Path(spec.origin).resolve().parent.parent


def resolve_config(config: PipelineConfig | str | Path) -> PipelineConfig:
    """A flow's ``config`` parameter as a config: a config file path (relative: to the run's folder) is loaded.

    ``normlab`` itself passes the resolved config; plain ``prefect deploy`` passes
    the path written in deploy/prefect.yaml, so its runs train the same pipeline as
    ``normlab run`` with that file.
    """
    if isinstance(config, (str, Path)):
        return load_config(config)
    return config


def deployable_config(cfg: PipelineConfig) -> dict[str, Any]:
    """The config as a deployment parameter: absolute paths, no credentials.

    Alert URLs stay out of the Prefect database (they hold tokens); workers read
    them from ``NORMLAB_ALERT_URLS``.
    """
    safe = cfg.redacted()
    safe = safe.model_copy(update={"alerts": safe.alerts.model_copy(update={"urls": []})})
    data = safe.model_dump(mode="json")
    for keys in _PATH_KEYS:
        node = data
        for key in keys[:-1]:
            node = node.get(key) or {}
        value = node.get(keys[-1])
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            node[keys[-1]] = str(Path(value).expanduser().resolve())
    return data


def default_prefect_file() -> Path:
    """deploy/prefect.yaml of the current folder, else of the code root."""
    local = Path("deploy/prefect.yaml")
    return local if local.is_file() else code_root() / "deploy" / "prefect.yaml"


def load_deployment_specs(path: Path | None, cfg: PipelineConfig, landing: Path | None,
                          only: list[str] | None) -> list[dict[str, Any]]:
    """The deployments of a prefect.yaml, with the resolved config as their ``config`` parameter.

    Raises:
        ConfigError: The file is missing or malformed, or ``only`` names an unknown deployment.
    """
    file = path or default_prefect_file()
    raw = read_yaml(file)
    entries = raw.get("deployments")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{file}: no `deployments:` list")
    specs = []
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("entrypoint"):
            raise ConfigError(f"{file}: every deployment needs a `name` and an `entrypoint`")
        params = dict(entry.get("parameters") or {})
        if "config" in params:
            params["config"] = deployable_config(cfg)
        if "data" in params and entry["entrypoint"].startswith("flows/monitoring.py"):
            params["data"] = str((landing or Path(params["data"])).expanduser().resolve())
        pool = entry.get("work_pool") or {}
        specs.append({
            "name": entry["name"], "entrypoint": entry["entrypoint"], "parameters": params,
            "schedules": list(entry.get("schedules") or []), "description": entry.get("description"),
            "tags": list(entry.get("tags") or []), "work_pool": pool.get("name") or "normlab",
            "work_queue": pool.get("work_queue_name"),
        })
    names = {s["name"] for s in specs}
    unknown = sorted(set(only or []) - names)
    if unknown:
        raise ConfigError(f"--only {unknown[0]}: not a deployment in {file}; known: {', '.join(sorted(names))}")
    return [s for s in specs if not only or s["name"] in only]


def describe_schedules(spec: dict[str, Any]) -> str:
    """``cron 0 2 * * * (UTC)``, ``every 3600 s``, or ``on demand``."""
    parts = []
    for item in spec["schedules"]:
        if "cron" in item:
            parts.append(f"cron {item['cron']}" + (f" ({item['timezone']})" if item.get("timezone") else ""))
        elif "interval" in item:
            parts.append(f"every {item['interval']} s")
        else:
            parts.append(f"rrule {item.get('rrule')}")
    return ", ".join(parts) or "on demand"


def available(spec: dict[str, Any]) -> bool:
    """True when the deployment's flow file exists in this code tree."""
    return (code_root() / spec["entrypoint"].split(":", 1)[0]).is_file()
