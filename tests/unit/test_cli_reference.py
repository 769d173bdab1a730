"""docs/reference.md is exactly what hack/reference.py generates from the models, the CLI and the chart."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("agentid_reference", REPO / "hack" / "reference.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_is_not_stale() -> None:
    assert (REPO / "docs" / "reference.md").read_text() == generator().render(), "run `make reference`"


def test_reference_covers_every_spec_field_command_and_value() -> None:
    text = (REPO / "docs" / "reference.md").read_text()
    for needle in (
        "`spec.supervision.mode`",
        "`spec.delegation.allowedActors[].name`",
        "`status.conditions`",
        "### agentid explain-token",
        "### agentid audit",
        "| 4 |",
        "`grantableClusterRoles`",
        "`tokenService.issuer`",
    ):
        assert needle in text
