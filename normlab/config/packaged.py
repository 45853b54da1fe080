"""Where the default pipeline and its expectation suite live: files installed with the package.

The top-level ``configs/`` and ``expectations/`` folders install as the data
packages ``normlab.configs`` and ``normlab.expectations`` (pyproject's
``package-dir``), so the default config is found wherever a command runs from.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path, PurePosixPath

from normlab.errors import ConfigError

# The default pipeline, as error messages and help texts name it.
DEFAULT_CONFIG = "configs/digits.yaml"
# Top-level folders of the repository that install as data packages, by package name.
DATA_FOLDERS = {"configs": "normlab.configs", "expectations": "normlab.expectations"}


@functools.cache
def _folder(name: str) -> Path:
    """The installed folder of one data package, on the file system."""
    try:
        root = resources.files(DATA_FOLDERS[name])
    except ModuleNotFoundError:
        # A source checkout whose editable install predates the data packages: the folder beside normlab/.
        root = Path(__file__).resolve().parents[2] / name
    if not isinstance(root, Path) or not root.is_dir():
        raise ConfigError(f"normlab's packaged {name}/ folder is missing (reinstall normlab)")
    return root


def packaged_path(relative: str) -> Path:
    """The installed file a repository-relative path such as ``expectations/digits.json`` names."""
    parts = PurePosixPath(relative).parts
    if len(parts) < 2 or parts[0] not in DATA_FOLDERS or ".." in parts:
        raise ConfigError(f"{relative}: not a file of normlab's packaged {' or '.join(DATA_FOLDERS)} folders")
    return _folder(parts[0]).joinpath(*parts[1:])


def default_config_path() -> Path:
    """The packaged default pipeline config (``configs/digits.yaml``)."""
    return packaged_path(DEFAULT_CONFIG)


def is_default_config(path: str | Path) -> bool:
    """Whether ``path`` is the packaged default config file itself (in a source checkout, configs/digits.yaml)."""
    p, default = Path(path), default_config_path()
    try:
        return p.is_file() and p.samefile(default)
    except OSError:
        return False
