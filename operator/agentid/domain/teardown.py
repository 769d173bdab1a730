"""Uninstalling agentid without its operator: what a stranger may delete in the operator's place, and nothing more.

Called by ``agentid uninstall`` (``agentid.cli.uninstall``) for agents the operator did not finalise (it is gone,
or it did not finish in time). The rules are the operator's own: an object is the agent's only by
``ownership.owns`` (a controller reference to the agent's UID on an object created no earlier than the agent),
access goes first (``lifecycle.DELETE_ORDER``), and only agentid's finalizer is ever removed: another
controller's finalizer is its business, so an agent that carries one stays until that controller lets it go.
The operator's own deletion (``agentid.reconcile.agents``) removes its finalizer by the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agentid.domain import naming, ownership
from agentid.domain.lifecycle import DELETE_ORDER, ObjectRef

Body = Mapping[str, Any]
# Phases in which an agent holds no access (what a kill-switch write waits for).
WITHOUT_ACCESS = frozenset({"Suspended", "Revoked", "Expired"})
SUSPEND_REASON = "agentid uninstall"


def owned_deletions(agent: Body, candidates: Iterable[tuple[str, Body]]) -> tuple[ObjectRef, ...]:
    """The agent's own objects among ``(kind, body)`` candidates, access first: each with its UID, so the delete
    can carry a precondition (a stranger's object that took the name since is never deleted)."""
    owner = ownership.Owner.of(agent)
    refs = {
        (kind, str(body["metadata"]["name"])): ObjectRef(kind, str(body["metadata"]["name"]), body["metadata"]["uid"])
        for kind, body in candidates
        if kind in DELETE_ORDER and ownership.owns(owner, body)
    }
    return tuple(sorted(refs.values(), key=lambda ref: (DELETE_ORDER.index(ref.kind), ref.name)))


def without_our_finalizer(agent: Body) -> list[str] | None:
    """The agent's finalizers minus agentid's, or None when agentid's is not there (nothing to remove)."""
    finalizers = list((agent.get("metadata") or {}).get("finalizers") or [])
    if naming.FINALIZER not in finalizers:
        return None
    return [name for name in finalizers if name != naming.FINALIZER]


def foreign_finalizers(agent: Body) -> list[str]:
    return [name for name in (agent.get("metadata") or {}).get("finalizers") or [] if name != naming.FINALIZER]


def suspension(agent: Body) -> dict[str, Any] | None:
    """The kill-switch write that takes an agent's access away before it is deleted, or None when it has none to
    take (being deleted, revoked, suspended already). Only ``spec.supervision`` changes and the annotations stay
    untouched, so the write is admitted even with the webhook down (docs/security.md, the kill switch)."""
    metadata = agent.get("metadata") or {}
    spec = agent.get("spec") or {}
    supervision = spec.get("supervision") or {}
    if metadata.get("deletionTimestamp") or spec.get("revoked") is True or supervision.get("mode") == "Suspended":
        return None
    return {
        "metadata": {"resourceVersion": metadata.get("resourceVersion")},
        "spec": {"supervision": {"mode": "Suspended", "reason": SUSPEND_REASON}},
    }


def access_removed(agent: Body) -> bool:
    """The operator reports, for the agent's current spec, a phase without access."""
    metadata = agent.get("metadata") or {}
    status = agent.get("status") or {}
    current = status.get("observedGeneration") == metadata.get("generation")
    return current and status.get("phase") in WITHOUT_ACCESS


@dataclass(frozen=True)
class Presence:
    """Whether an operator will finalise the agents: ``running`` (wait for it, up to a deadline) or not, and why."""

    running: bool
    why: str


def operator_presence(
    deployments: Iterable[Body], webhook_services: Mapping[str, bool], url_webhooks: bool
) -> Presence:
    """Decided from what the cluster shows: the chart's operator Deployments (ready Pods or not), the Services agentid's
    webhook configurations call (name -> has a ready endpoint), and webhooks called by URL (an operator run outside
    the cluster, as in development: it cannot be seen, so it is waited for). Nothing of it left means the
    installation is gone (``helm uninstall`` ran first)."""
    deployments = list(deployments)
    ready = [d for d in deployments if int((d.get("status") or {}).get("readyReplicas") or 0) > 0]
    if ready:
        names = ", ".join(_name(d) for d in ready)
        return Presence(True, f"Deployment {names} has ready Pods")
    if deployments:
        return Presence(False, f"Deployment {', '.join(_name(d) for d in deployments)} has no ready Pods")
    if any(webhook_services.values()):
        served = ", ".join(name for name, up in webhook_services.items() if up)
        return Presence(True, f"webhook Service {served} has ready endpoints")
    if webhook_services:
        return Presence(False, f"webhook Service {', '.join(webhook_services)} has no ready endpoints")
    if url_webhooks:
        return Presence(True, "an agentid webhook is registered by URL: an operator outside the cluster may serve it")
    return Presence(False, "no operator Deployment and no agentid webhook configuration found")


def _name(body: Body) -> str:
    metadata = body.get("metadata") or {}
    return f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
