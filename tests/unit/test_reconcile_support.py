"""The reconciler's read side (indexes + own writes), without a cluster."""

from __future__ import annotations

from agentid.domain.ownership import Owner
from agentid.reconcile.view import ClusterView, Indexes

OWNER = ("finance", "triage")


def _role(resource_version: str, verbs: list[str]) -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {
            "name": "triage-agent",
            "namespace": "finance",
            "resourceVersion": resource_version,
            "ownerReferences": [{"uid": "uid-triage", "controller": True}],
        },
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": verbs}],
    }


def test_own_writes_win_over_a_lagging_index_until_it_catches_up() -> None:
    index: dict = {OWNER: {"u": _role("5", ["get"])}}
    view = ClusterView(Indexes(owned={"Role": index}))
    view.record_written(OWNER, "Role", _role("9", ["get", "list"]))
    assert view.observe(OWNER, Owner("uid-triage")).get("Role", "triage-agent")["rules"][0]["verbs"] == [
        "get",
        "list",
    ]
    index[OWNER] = {"u": _role("9", ["get", "list"])}
    assert view.observe(OWNER, Owner("uid-triage")).get("Role", "triage-agent")["metadata"]["resourceVersion"] == "9"
    assert view._overlay == {}  # caught up: the memory is released


def test_a_deletion_hides_the_object_until_the_index_drops_it() -> None:
    index: dict = {OWNER: {"u": _role("5", ["get"])}}
    view = ClusterView(Indexes(owned={"Role": index}))
    view.record_deleted(OWNER, "Role", "triage-agent")
    assert view.observe(OWNER, Owner("uid-triage")).get("Role", "triage-agent") is None
    index[OWNER] = {}
    assert view.observe(OWNER, Owner("uid-triage")).get("Role", "triage-agent") is None
    assert view._overlay == {}


def test_a_watch_event_is_foreign_unless_it_echoes_our_own_last_write() -> None:
    view = ClusterView(Indexes(owned={"Role": {}}))
    assert view.changed_by_others(OWNER, "Role", "triage-agent", "9")  # never written by us (e.g. after a restart)
    view.record_written(OWNER, "Role", _role("9", ["get"]))
    assert not view.changed_by_others(OWNER, "Role", "triage-agent", "9")  # the echo of our apply
    assert view.changed_by_others(OWNER, "Role", "triage-agent", "10")  # someone wrote after us (even a removal)
    view.forget(OWNER)
    assert view.changed_by_others(OWNER, "Role", "triage-agent", "9")
