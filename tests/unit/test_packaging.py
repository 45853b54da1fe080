"""What `pip install` puts on a user's path: everything under the `normlab` name, nothing else."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def tree_packages() -> set[str]:
    """Every package folder of the source tree, under the name it installs as."""
    mapped = {folder: name for name, folder in SETUPTOOLS["package-dir"].items()}
    found = set()
    for init in REPO.glob("normlab/**/__init__.py"):
        found.add(".".join(init.parent.relative_to(REPO).parts))
    for folder, name in mapped.items():
        for init in (REPO / folder).glob("**/__init__.py"):
            found.add(".".join([name, *init.parent.relative_to(REPO / folder).parts]))
    return found


def test_the_package_list_names_every_package_folder():
    """A new subpackage missing from pyproject's list would import in an editable install and be absent from a wheel."""
    assert set(SETUPTOOLS["packages"]) == tree_packages()


def test_tasks_and_flows_install_under_the_normlab_name():
    assert SETUPTOOLS["package-dir"] == {"normlab.tasks": "tasks", "normlab.flows": "flows",
                                         "normlab.configs": "configs", "normlab.expectations": "expectations"}
    assert all(name == "normlab" or name.startswith("normlab.") for name in SETUPTOOLS["packages"])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """A wheel built from a copy of the tree (the checkout gets no build/ or egg-info)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for folder in ("normlab", "tasks", "flows", "configs", "expectations"):
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(src)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("normlab-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_ships_no_top_level_tasks_or_flows(wheel):
    names = wheel.namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert top == {"normlab", *(n for n in top if n.endswith(".dist-info"))}
    assert "normlab/tasks/training.py" in names and "normlab/flows/training.py" in names
    assert "tasks/training.py" not in names and "flows/training.py" not in names


def test_the_wheel_ships_the_default_config_and_its_suite(wheel):
    """`load_config(None)` reads these from the installed package, wherever the command runs."""
    names = set(wheel.namelist())
    assert {"normlab/configs/digits.yaml", "normlab/expectations/digits.json"} <= names
    assert wheel.read("normlab/configs/digits.yaml") == (REPO / "configs" / "digits.yaml").read_bytes()
    assert wheel.read("normlab/expectations/digits.json") == (REPO / "expectations" / "digits.json").read_bytes()
    assert "normlab/config/__init__.py" in names and "normlab/config/loading.py" in names


def test_the_wheel_ships_no_other_configs_or_suites(wheel):
    """Only the built-in pipelines' files: a config `normlab init` wrote into a checkout's configs/ is not packaged."""
    data = {n for n in wheel.namelist() if n.startswith(("normlab/configs/", "normlab/expectations/"))}
    assert data == {"normlab/configs/__init__.py", "normlab/configs/digits.yaml", "normlab/configs/images.yaml",
                    "normlab/expectations/__init__.py", "normlab/expectations/digits.json"}


def test_the_installed_default_loads_from_any_folder(wheel, tmp_path_factory):
    """Installed from the wheel (no checkout on the path), the default config and its suite resolve into it."""
    site = tmp_path_factory.mktemp("site")
    wheel.extractall(site)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    script = ("import json, pathlib; from normlab.config import load_config; cfg = load_config(None); "
              "print(json.dumps([cfg.name, cfg.data.expectations, pathlib.Path(cfg.data.expectations).is_file()]))")
    done = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {script}"],
                          cwd=elsewhere, check=True, capture_output=True, text=True, timeout=300)
    name, suite, readable = json.loads(done.stdout.strip().splitlines()[-1])
    assert (name, readable) == ("digits", True)
    assert Path(suite).is_relative_to(site)
