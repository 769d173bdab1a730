"""The generated CRDs follow the Kubernetes API conventions a platform team checks for: a description at every level
(what `kubectl explain` prints; `metadata` is ObjectMeta's own), conditions as a map keyed by type, a category,
`-o wide` columns, and a Ready condition column on both kinds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agentid.api import crdgen


def schema(definition: crdgen.CrdDefinition) -> dict[str, Any]:
    schema: dict[str, Any] = crdgen.build(definition)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def nodes(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from nodes(child, f"{path}.{name}")
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        child = node.get(key)
        if isinstance(child, dict) and child.get("type") == "object":
            yield from nodes(child, path + suffix)


@pytest.mark.parametrize("definition", crdgen.DEFINITIONS, ids=lambda d: d.kind)
def test_every_level_of_the_schema_has_a_description(definition: crdgen.CrdDefinition) -> None:
    missing = [path for path, node in nodes(schema(definition), definition.kind) if not node.get("description")]
    assert missing == [f"{definition.kind}.metadata"], "metadata takes no description (the apiserver explains it)"


@pytest.mark.parametrize("definition", crdgen.DEFINITIONS, ids=lambda d: d.kind)
def test_conditions_are_a_map_keyed_by_type(definition: crdgen.CrdDefinition) -> None:
    conditions = schema(definition)["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]


@pytest.mark.parametrize("definition", crdgen.DEFINITIONS, ids=lambda d: d.kind)
def test_a_category_a_ready_column_and_wide_columns(definition: crdgen.CrdDefinition) -> None:
    crd = crdgen.build(definition)
    assert crd["spec"]["names"]["categories"] == [crdgen.CATEGORY]
    assert crdgen.CATEGORY not in crd["spec"]["names"].get("shortNames", [])
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    assert any(column["name"] == "Ready" and "Ready" in column["jsonPath"] for column in columns)
    assert any(column.get("priority") == 1 for column in columns), "-o wide shows more"
