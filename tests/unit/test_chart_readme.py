"""The chart's README.md is exactly what hack/chart_readme.py generates, and it documents every value."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "agentid-operator"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("agentid_chart_readme", REPO / "hack" / "chart_readme.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chart_readme_is_not_stale() -> None:
    assert (CHART / "README.md").read_text() == generator().render(), "run `make chart-readme`"


def test_every_value_has_a_row_with_a_description() -> None:
    module = generator()
    schema = json.loads((CHART / "values.schema.json").read_text())
    rows = [row for name, child in schema["properties"].items() for row in module.rows(schema, child, None, name)]
    undescribed = [row[0] for row in rows if not row[3] and row[0] != "`global`"]
    assert undescribed == []
    text = (CHART / "README.md").read_text()
    for value in (
        "`operator.extraEnv`",
        "`tokenService.ingress.host`",
        "`metrics.prometheusRule.enabled`",
        "`operator.serviceAccount.create`",
        "`extraObjects`",
        "`operator.resources.limits.memory`",
    ):
        assert value in text
