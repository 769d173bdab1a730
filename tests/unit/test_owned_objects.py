"""The watch of owned objects keeps the reconciler's view and reports drift (agentid.reconcile.owned)."""

from __future__ import annotations

from typing import Any

from agentid.domain import desired
from agentid.domain.ownership import Owner
from agentid.reconcile.owned import OwnedObjects, reducer, scopes
from agentid.reconcile.view import AgentKey, ClusterView, Indexes
from tests.support.factories import agent


def _owned(namespaces: tuple[str, ...] = ()) -> tuple[OwnedObjects, ClusterView, list[AgentKey]]:
    drifted: list[AgentKey] = []

    view = ClusterView()
    owned = OwnedObjects(
        client=None,  # type: ignore[arg-type]  # listing and events are fed directly
        view=view,
        on_drift=drifted.append,
        namespaces=namespaces,
        all_namespaces=not namespaces,
    )
    view.indexes = Indexes(owned=owned.index)
    return owned, view, drifted


def _service_account(name: str, namespace: str, *, uid: str, version: str) -> dict[str, Any]:
    manifest = desired.service_account(agent(name, namespace), f"spiffe://cluster.local/ns/{namespace}/agent/{name}")
    manifest["metadata"].update({"uid": uid, "resourceVersion": version})
    return manifest


seen = reducer("ServiceAccount")


def test_exact_namespaces_are_watched_one_by_one_and_globs_cluster_wide() -> None:
    assert scopes((), all_namespaces=True) == ([None], ())
    assert scopes(("team-b", "team-a"), all_namespaces=False) == (["team-a", "team-b"], ())
    assert scopes(("team-a", "a-*"), all_namespaces=False) == ([None], ("team-a", "a-*"))


def test_a_listing_fills_the_view_and_only_changes_by_others_are_drift() -> None:
    owned, view, drifted = _owned()
    owned._replace("ServiceAccount", None, [seen(_service_account("triage", "finance", uid="u1", version="10"))])
    observed = view.observe(("finance", "triage"), Owner("uid-triage"))
    assert observed.get("ServiceAccount", "triage-agent") is not None
    assert observed.get("ServiceAccount", "triage-agent")["apiVersion"] == "v1"  # type: ignore[index]

    ours = _service_account("triage", "finance", uid="u1", version="11")
    view.record_written(("finance", "triage"), "ServiceAccount", {"apiVersion": "v1", **ours})
    owned._changed("ServiceAccount", "MODIFIED", seen(ours))
    theirs = _service_account("triage", "finance", uid="u1", version="12")
    owned._changed("ServiceAccount", "MODIFIED", seen(theirs))
    owned._changed("ServiceAccount", "DELETED", seen(theirs))

    assert drifted == [("finance", "triage"), ("finance", "triage")]
    assert view.observe(("finance", "triage"), Owner("uid-triage")).get("ServiceAccount", "triage-agent") is None


def test_glob_patterns_keep_other_namespaces_out() -> None:
    owned, view, drifted = _owned(("fin*",))
    owned._replace(
        "ServiceAccount",
        None,
        [
            seen(_service_account("triage", "finance", uid="u1", version="1")),
            seen(_service_account("triage", "sales", uid="u2", version="1")),
        ],
    )
    owned._changed("ServiceAccount", "DELETED", seen(_service_account("triage", "sales", uid="u2", version="2")))
    assert view.observe(("finance", "triage"), Owner("uid-triage")).get("ServiceAccount", "triage-agent") is not None
    assert view.observe(("sales", "triage"), Owner("uid-triage")).get("ServiceAccount", "triage-agent") is None
    assert drifted == []


def test_a_relisting_reports_what_changed_or_went_while_the_watch_was_away() -> None:
    owned, _, drifted = _owned()
    kept = seen(_service_account("triage", "finance", uid="u1", version="1"))
    gone = seen(_service_account("billing", "finance", uid="u2", version="1"))
    owned._replace("ServiceAccount", None, [kept, gone])
    owned._listed.add(("ServiceAccount", None))
    assert drifted == []  # the first listing is not drift
    changed = seen(_service_account("triage", "finance", uid="u1", version="5"))
    owned._replace("ServiceAccount", None, [changed])
    assert sorted(drifted) == [("finance", "billing"), ("finance", "triage")]
    drifted.clear()
    owned._replace("ServiceAccount", None, [changed])
    assert drifted == []
