"""Attribution stamps: set from the admission request, kept across unrelated writes, never forgeable."""

from __future__ import annotations

import json

from agentid.domain import attribution
from agentid.webhooks.admission import AgentAdmission, transition_error
from tests.support.agents import agent_manifest
from tests.support.factories import NOW, agent

ALICE = {"username": "alice@example.com", "groups": ["platform", "system:authenticated"]}
BOB = {"username": "bob@example.com", "groups": []}


def test_creation_stamps_creator_and_last_change() -> None:
    stamped = attribution.stamped_annotations(old=None, new=agent_manifest("a", "ns"), userinfo=ALICE, now=NOW)
    created = json.loads(stamped[attribution.CREATED_BY])
    assert created["username"] == "alice@example.com"
    assert created["groups"] == ["platform", "system:authenticated"]
    assert created["changes"] == ["created"]
    assert stamped[attribution.LAST_CHANGED_BY] == stamped[attribution.CREATED_BY]


def test_a_supervision_change_is_attributed_and_an_unrelated_write_keeps_history() -> None:
    old = agent_manifest("a", "ns")
    old["metadata"]["annotations"] = attribution.stamped_annotations(old=None, new=old, userinfo=ALICE, now=NOW)
    new = agent_manifest("a", "ns", supervision={"mode": "Suspended"})
    stamped = attribution.stamped_annotations(old=old, new=new, userinfo=BOB, now=NOW)
    assert json.loads(stamped[attribution.LAST_CHANGED_BY])["changes"] == ["supervision"]
    assert json.loads(stamped[attribution.CREATED_BY])["username"] == "alice@example.com"
    forged = {**old, "metadata": {**old["metadata"], "annotations": {attribution.CREATED_BY: '{"username":"mallory"}'}}}
    unchanged = attribution.stamped_annotations(old=old, new=forged, userinfo=BOB, now=NOW)
    assert unchanged == old["metadata"]["annotations"]


def test_annotations_parse_back_into_status_and_garbage_is_ignored() -> None:
    stamped = attribution.stamped_annotations(old=None, new=agent_manifest("a", "ns"), userinfo=ALICE, now=NOW)
    parsed = attribution.parse(stamped, attribution.CREATED_BY)
    assert parsed is not None
    assert parsed.time == NOW
    assert attribution.parse({attribution.CREATED_BY: "{not json"}, attribution.CREATED_BY) is None


def test_no_write_can_unrevoke_an_agent() -> None:
    revoked, active = agent(revoked=True), agent()
    assert (
        transition_error(revoked, active)
        == "spec.revoked: revoked is terminal: once true it can never be set back to false"
    )
    assert transition_error(active, revoked) is None
    assert transition_error(None, active) is None


def test_the_finalizer_is_added_on_creation_only() -> None:

    fresh = agent_manifest("a", "ns")
    assert AgentAdmission.finalizers(body=fresh, old=None) == ["agentid.dev/cleanup"]
    assert AgentAdmission.finalizers(body=fresh, old=fresh) is None  # updates never touch finalizers
    other = {**fresh, "metadata": {**fresh["metadata"], "finalizers": ["example.com/x"]}}
    assert AgentAdmission.finalizers(body=other, old=None) == ["example.com/x", "agentid.dev/cleanup"]
