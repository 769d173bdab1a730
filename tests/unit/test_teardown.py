"""What `agentid uninstall` may do in the operator's place (agentid.domain.teardown): only the agent's own objects,
access first; only agentid's finalizer; a kill-switch write that changes nothing else; and when to wait."""

from __future__ import annotations

from typing import Any

from agentid.domain import naming, teardown

AGENT = {
    "metadata": {
        "name": "triage",
        "namespace": "team",
        "uid": "uid-triage",
        "creationTimestamp": "2026-01-01T10:00:00Z",
        "resourceVersion": "42",
        "generation": 3,
        "finalizers": ["example.com/hold", naming.FINALIZER],
    },
    "spec": {"supervision": {"mode": "Autonomous"}},
}


def _object(
    name: str, *, uid: str = "uid-triage", controller: bool = True, created: str = "2026-01-01T10:00:05Z"
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "creationTimestamp": created,
            "ownerReferences": [{"kind": "AgentIdentity", "uid": uid, "controller": controller}],
        }
    }


def test_only_owned_objects_are_deleted_access_first() -> None:
    candidates = [
        ("ServiceAccount", _object("triage-agent")),
        ("Secret", _object("triage-agent-key")),
        ("RoleBinding", _object("triage-agent:view")),
        ("Role", _object("triage-agent")),
        ("RoleBinding", _object("triage-agent")),
        ("ServiceAccount", _object("triage-agent-2", uid="uid-someone-else")),  # another owner
        ("Secret", _object("triage-agent-old", controller=False)),  # a reference, not a controller reference
        ("Role", _object("triage-agent-early", created="2026-01-01T09:00:00Z")),  # predates the agent
        ("ConfigMap", _object("triage-agent")),  # not a kind agentid creates
    ]
    refs = teardown.owned_deletions(AGENT, candidates)
    assert [(ref.kind, ref.name) for ref in refs] == [
        ("RoleBinding", "triage-agent"),
        ("RoleBinding", "triage-agent:view"),
        ("Role", "triage-agent"),
        ("Secret", "triage-agent-key"),
        ("ServiceAccount", "triage-agent"),
    ]
    assert all(ref.uid == f"uid-{ref.name}" for ref in refs)  # every delete carries a UID precondition


def test_only_agentids_finalizer_is_removed() -> None:
    assert teardown.without_our_finalizer(AGENT) == ["example.com/hold"]
    assert teardown.foreign_finalizers(AGENT) == ["example.com/hold"]
    others_only = {"metadata": {"finalizers": ["example.com/hold"]}}
    assert teardown.without_our_finalizer(others_only) is None


def test_the_suspension_is_a_kill_switch_write_and_skipped_when_there_is_no_access_to_take() -> None:
    patch = teardown.suspension(AGENT)
    assert patch == {
        "metadata": {"resourceVersion": "42"},  # no annotations: the kill switch path admits it with the webhook down
        "spec": {"supervision": {"mode": "Suspended", "reason": teardown.SUSPEND_REASON}},
    }
    for spec, metadata in (
        ({"revoked": True}, {}),
        ({"supervision": {"mode": "Suspended"}}, {}),
        ({"supervision": {"mode": "Autonomous"}}, {"deletionTimestamp": "2026-01-01T11:00:00Z"}),
    ):
        assert teardown.suspension({"metadata": metadata, "spec": spec}) is None


def test_access_is_removed_only_when_reported_for_the_current_spec() -> None:
    def agent(phase: str, observed: int) -> dict[str, Any]:
        return {"metadata": {"generation": 3}, "status": {"phase": phase, "observedGeneration": observed}}

    assert teardown.access_removed(agent("Suspended", 3))
    assert teardown.access_removed(agent("Revoked", 3))
    assert not teardown.access_removed(agent("Suspended", 2))  # an older spec's report
    assert not teardown.access_removed(agent("Active", 3))


def _deployment(ready: int) -> dict[str, Any]:
    return {"metadata": {"namespace": "agentid-system", "name": "agentid-operator"}, "status": {"readyReplicas": ready}}


def test_an_operator_is_waited_for_only_while_something_of_it_is_there_and_ready() -> None:
    presence = teardown.operator_presence
    assert presence([_deployment(1)], {}, url_webhooks=False).running
    assert not presence([_deployment(0)], {"agentid-system/agentid-webhook": True}, url_webhooks=True).running
    assert presence([], {"agentid-system/agentid-webhook": True}, url_webhooks=False).running
    assert not presence([], {"agentid-system/agentid-webhook": False}, url_webhooks=True).running
    assert presence([], {}, url_webhooks=True).running  # an operator outside the cluster cannot be seen
    gone = presence([], {}, url_webhooks=False)  # `helm uninstall` ran first
    assert not gone.running
    assert gone.why == "no operator Deployment and no agentid webhook configuration found"
