"""Reading an agent field by field: what deletion and audit records need from an agent that may not parse."""

from __future__ import annotations

import pydantic
import pytest

from agentid.api.v1alpha1 import AgentIdentity, Attribution
from agentid.domain import attribution, unparsed
from tests.support.agents import agent_manifest
from tests.support.factories import NOW


def _unparseable(**spec: object) -> dict:
    body = agent_manifest("triage", "finance", expiresAt="0000-01-01T00:00:00Z", **spec)
    body["metadata"].update({"uid": "uid-triage", "resourceVersion": "7"})
    with pytest.raises(pydantic.ValidationError):
        AgentIdentity.from_body(body)
    return body


def test_cluster_roles_come_from_the_spec_and_the_status_even_when_the_spec_does_not_parse() -> None:
    body = _unparseable(clusterRoleRefs=["view", "", 7, "edit"])
    body["status"] = {"grantedClusterRoles": ["view", "legacy"]}
    assert unparsed.cluster_roles(body) == ("view", "edit", "legacy")


def test_malformed_cluster_role_fields_give_none() -> None:
    body = _unparseable(clusterRoleRefs="view")
    body["status"] = "broken"
    assert unparsed.cluster_roles(body) == ()


def test_the_audit_subject_is_read_from_the_stored_object() -> None:
    body = _unparseable()
    changed = Attribution(username="bob@example.com", time=NOW)
    body["metadata"]["annotations"] = {attribution.LAST_CHANGED_BY: changed.model_dump_json()}
    assert unparsed.audit_subject(body) == {
        "namespace": "finance",
        "name": "triage",
        "uid": "uid-triage",
        "owner": "User:alice@example.com",
        "actor": "bob@example.com",
        "supervision": "Autonomous",
    }


def test_unreadable_audit_fields_are_left_out() -> None:
    body = _unparseable(owner={"kind": "User", "name": 5}, supervision="Autonomous")
    body["metadata"]["annotations"] = {attribution.LAST_CHANGED_BY: "not json"}
    subject = unparsed.audit_subject(body)
    assert subject["owner"] is None
    assert subject["supervision"] is None
    assert subject["actor"] is None
    assert subject["uid"] == "uid-triage"
