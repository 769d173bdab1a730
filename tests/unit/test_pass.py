"""One pass of the reconciler, orchestrated against a recording fake of the API client: what it writes, what it never
touches, what it reports. (Behaviour against the real apiserver: tests/integration/test_ownership.py and others.)"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
from typing import Any

from agentid.domain import naming
from agentid.domain.settings import OperatorSettings
from agentid.kube import errors, resources
from agentid.kube.resources import Resource
from agentid.reconcile.agents import AgentReconciler
from agentid.reconcile.view import ClusterView
from tests.support.agents import agent_manifest

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
CREATED = "2026-01-01T11:00:00Z"
Key = tuple[str, str | None, str]  # (plural, namespace, name)


class FakeClient:
    """Objects by (plural, namespace, name); every write recorded as "verb plural/name"."""

    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.writes: list[str] = []
        self._versions = itertools.count(100)

    def put(self, resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
        metadata = body.setdefault("metadata", {})
        metadata.setdefault("uid", f"uid-{metadata['name']}-{next(self._versions)}")
        metadata.setdefault("creationTimestamp", "2026-01-01T11:30:00Z")
        metadata["resourceVersion"] = str(next(self._versions))
        self.objects[(resource.plural, metadata.get("namespace"), metadata["name"])] = body
        return copy.deepcopy(body)

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        found = self.objects.get((resource.plural, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def create(self, resource: Resource, body: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        self.writes.append(f"create {resource.plural}/{body['metadata']['name']}")
        if (resource.plural, namespace, body["metadata"]["name"]) in self.objects:
            raise errors.Conflict(409, "AlreadyExists", "exists")
        return self.put(resource, copy.deepcopy(body))

    async def apply(self, resource: Resource, manifest: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        metadata = manifest["metadata"]
        self.writes.append(f"apply {resource.plural}/{metadata['name']}")
        key = (resource.plural, metadata.get("namespace"), metadata["name"])
        current = self.objects.get(key)
        if current is not None and metadata.get("uid") not in (None, current["metadata"]["uid"]):
            raise errors.Invalid(422, "Invalid", "metadata.uid: field is immutable")
        merged = copy.deepcopy(current or {})
        merged.update({k: v for k, v in copy.deepcopy(manifest).items() if k != "metadata"})
        merged.setdefault("metadata", {}).update({k: v for k, v in metadata.items() if k != "uid"})
        return self.put(resource, merged)

    async def patch(
        self, resource: Resource, name: str, patch: Any, namespace: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        self.writes.append(f"patch {resource.plural}/{name}" + (f"/{kwargs['subresource']}" if kwargs else ""))
        current = copy.deepcopy(self.objects[(resource.plural, namespace, name)])
        for part, value in patch.items():
            if isinstance(value, dict):
                current.setdefault(part, {}).update(value)
            else:
                current[part] = value
        return self.put(resource, current)

    async def delete(
        self, resource: Resource, name: str, namespace: str | None = None, *, uid: str | None = None
    ) -> bool:
        self.writes.append(f"delete {resource.plural}/{name}")
        key = (resource.plural, namespace, name)
        if key not in self.objects or (uid is not None and self.objects[key]["metadata"]["uid"] != uid):
            return False
        del self.objects[key]
        return True


class Events:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str, str]] = []

    async def post(self, regarding: Any, *, type_: str, reason: str, note: str, **_: Any) -> None:
        self.posted.append((type_, reason, note))


def _reconciler() -> tuple[AgentReconciler, FakeClient, Events]:
    client, events = FakeClient(), Events()
    reconciler = AgentReconciler(
        client=client,  # type: ignore[arg-type]
        view=ClusterView(),
        events=events,  # type: ignore[arg-type]
        settings=OperatorSettings(),
        clock=lambda: NOW,
    )
    return reconciler, client, events


def _agent(client: FakeClient, **spec: Any) -> dict[str, Any]:
    body = agent_manifest("ci", "team", **spec)
    body["metadata"].update({"uid": "uid-ci", "generation": 1, "creationTimestamp": CREATED})
    return client.put(resources.AGENT_IDENTITIES, body)


async def test_a_first_pass_creates_the_objects_writes_ready_and_asks_for_its_resync() -> None:
    reconciler, client, events = _reconciler()
    body = _agent(client)
    delay = await reconciler.reconcile(body)
    assert delay is not None
    assert 59 < delay < 80  # the default resync with its jitter
    assert sorted(w for w in client.writes if w.startswith("create")) == [
        "create rolebindings/ci-agent",
        "create roles/ci-agent",
        "create secrets/ci-agent-key",
        "create serviceaccounts/ci-agent",
    ]
    status = client.objects[("agentidentities", "team", "ci")]["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Provisioned")
    assert [reason for _, reason, _ in events.posted] == ["Provisioned"]


async def test_a_strangers_role_is_never_written_and_the_agent_reports_the_conflict() -> None:
    reconciler, client, events = _reconciler()
    stranger = {"metadata": {"name": "ci-agent", "namespace": "team"}, "rules": [{"verbs": ["get"]}]}
    client.put(resources.ROLES, stranger)
    before = copy.deepcopy(client.objects[("roles", "team", "ci-agent")])
    body = _agent(client)
    first = await reconciler.reconcile(body)
    assert first is not None
    assert first < 1  # the create found a stranger: that pass ends, and the next one plans with it at once
    second = await reconciler.reconcile(copy.deepcopy(client.objects[("agentidentities", "team", "ci")]))
    assert second is not None
    assert second < 5  # the stranger is looked at again on a backoff (it is not watched)
    assert client.objects[("roles", "team", "ci-agent")] == before
    assert not [w for w in client.writes if w in ("apply roles/ci-agent", "delete roles/ci-agent")]
    assert "create rolebindings/ci-agent" not in client.writes  # nothing is bound while the Role is a stranger's
    status = client.objects[("agentidentities", "team", "ci")]["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NameConflict")
    assert any(reason == "NameConflict" and "Role ci-agent" in note for _, reason, note in events.posted)

    # Revocation deletes what the agent owns and nothing of the stranger's.
    client.writes.clear()
    revoked = client.objects[("agentidentities", "team", "ci")]
    revoked["spec"]["revoked"] = True
    revoked["metadata"]["generation"] = 2
    await reconciler.reconcile(copy.deepcopy(revoked))
    assert ("roles", "team", "ci-agent") in client.objects
    assert "delete roles/ci-agent" not in client.writes
    assert ("serviceaccounts", "team", naming.service_account("ci")) not in client.objects
