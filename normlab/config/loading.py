"""Reading configs: the safe YAML loader, ``--set`` overrides, one-line errors, and the flat and YAML views.

One `PipelineConfig` describes a whole pipeline run. It is loaded from YAML,
overridden from the command line (``--set train.batch_size=8``) and passed whole
as the flow parameter, so Prefect validates it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from normlab.config.packaged import DEFAULT_CONFIG, default_config_path, is_default_config, packaged_path
from normlab.config.pipeline import PipelineConfig
from normlab.credentials import strip_credentials
from normlab.errors import ConfigError


def _format_validation_error(err: ValidationError, source: str) -> str:
    """One line: the first offending key, its value and what is allowed."""
    first = err.errors()[0]
    key = ""
    for part in first["loc"]:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}'"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    if not key:  # a check across sections: its message names the keys, the whole config is no help
        return f"{source}: {msg.removeprefix('Value error, ')}{more}"
    shown = short_repr(first.get("input"))
    return f"{source}: {key}={shown}: {msg}{more}"


# A config expands to at most this many YAML nodes with its aliases followed: a few kilobytes of
# nested aliases (``b: [*a, *a, ...]``, ``c: [*b, *b, ...]``) would otherwise expand to billions.
MAX_YAML_NODES = 100_000


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing documents whose aliases expand past `MAX_YAML_NODES` (or into themselves)."""

    def compose_document(self):
        node = super().compose_document()
        if node is not None:
            _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node) -> None:
    """Count the nodes of ``root`` as if every alias were copied out, without copying anything."""
    sizes: dict[int, int] = {}
    pending: list[tuple[yaml.Node, bool]] = [(root, False)]
    on_path: set[int] = set()
    while pending:
        node, children_done = pending.pop()
        key = id(node)
        if key in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if children_done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_YAML_NODES:
                raise yaml.YAMLError(f"aliases expand to more than {MAX_YAML_NODES:,} values")
            continue
        if key in on_path:
            raise yaml.YAMLError("an alias refers to a node that contains it")
        on_path.add(key)
        pending.append((node, True))
        pending.extend((c, False) for c in children if id(c) not in sizes)
        for child in children:
            if id(child) in on_path:
                raise yaml.YAMLError("an alias refers to a node that contains it")


def safe_yaml(text: str) -> Any:
    """``yaml.safe_load`` with bounded alias expansion (no tags that run code, no alias bombs)."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def short_repr(value: Any, limit: int = 80) -> str:
    """A repr of ``value`` at most ``limit`` characters long, without walking all of a large or aliased value."""
    import reprlib

    shortener = reprlib.Repr()
    shortener.maxlevel = 2
    shortener.maxdict = shortener.maxlist = shortener.maxtuple = shortener.maxset = 4
    shortener.maxstring = shortener.maxother = limit
    text = shortener.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a key path and a YAML-typed value."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.batch_size=8")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {item!r}: empty key segment in {key!r}")
    try:
        value = safe_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to a raw config dict (new keys are caught by validation)."""
    for item in overrides:
        parts, value = parse_override(item)
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping safely, with one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = safe_yaml(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{p}: not valid YAML ({first})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of settings, got {type(raw).__name__}")
    return raw


def validate_config(raw: dict[str, Any], source: str = "config") -> PipelineConfig:
    """Validate a raw dict into a `PipelineConfig`, with a one-line error."""
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a YAML config (default: the packaged ``configs/digits.yaml``) and apply ``--set`` overrides.

    Relative paths in a config file (``data.path``, ``data.expectations``) stay as
    written, relative to the current folder. The packaged default's own relative
    paths name its packaged files (its expectation suite), so the default works from
    any folder; that holds for its file given by path too (in a source checkout,
    configs/digits.yaml). ``workdir`` stays relative to the current folder.

    A password in ``tracking.uri`` is moved out of the config (`strip_credentials`).
    """
    default = path is None or is_default_config(path)
    raw = read_yaml(default_config_path() if path is None else path)
    if default:
        _resolve_packaged_paths(raw)
    raw = apply_overrides(raw, list(overrides or []))
    cfg = validate_config(raw, source=DEFAULT_CONFIG if path is None else str(path))
    # Before anything sees the config: no password in the tracking URI (see normlab/credentials.py).
    cfg.tracking.uri = strip_credentials(cfg.tracking.uri)
    return cfg


def _resolve_packaged_paths(raw: dict[str, Any]) -> None:
    """Make the packaged default's relative data paths absolute, into the installed package (in place)."""
    data = raw.get("data")
    if isinstance(data, dict):
        for key in ("path", "expectations"):
            value = data.get(key)
            if isinstance(value, str) and value and not Path(value).is_absolute():
                data[key] = str(packaged_path(value))


def flatten(cfg: BaseModel | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a config into dotted keys (``train.batch_size``) for MLflow params."""
    data = cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else cfg
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, dotted + "."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
            for item in value:
                out.update(flatten({k: v for k, v in item.items() if k != "name"}, f"{dotted}.{item['name']}."))
        else:
            out[dotted] = value
    return out


def to_yaml(cfg: PipelineConfig) -> str:
    """The resolved config as YAML (what a rerun needs)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
