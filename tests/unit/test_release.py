"""One version everywhere: pyproject.toml's, copied into agentid.__version__ and the chart by `make set-version`."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType

import agentid

REPO = Path(__file__).resolve().parents[2]


def release_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("agentid_release", REPO / "hack" / "release.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_version_is_the_one_of_pyproject() -> None:
    found = release_script().versions()
    assert len(found) == 4
    assert set(found.values()) == {tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]}
    assert agentid.__version__ == found["pyproject.toml version"]


def test_the_distribution_is_not_named_like_the_unrelated_pypi_project() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == "agentid-operator"
    assert project["scripts"] == {"agentid": "agentid.cli.main:main", "kubectl-agentid": "agentid.cli.main:main"}
