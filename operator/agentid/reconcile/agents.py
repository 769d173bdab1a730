"""The level-triggered reconciliation of one AgentIdentity: gather -> plan -> apply -> observe -> status.

Called by the Kopf handlers (every watch event of an agent, drift seen on an owned object, a ClusterRole
change) and by its own scheduler (rotation, retirement, expiry, periodic resync with jitter, retries). Create,
resume, update, timers and drift repair are all this one path. Passes for one agent never overlap (a lock per
agent UID); passes for different agents run concurrently.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import pydantic

from agentid import audit, metrics
from agentid.api.v1alpha1 import AgentIdentity, KeyStatus, Phase, SupervisionMode
from agentid.domain import (
    admitted,
    attribution,
    desired,
    keyring,
    keys,
    lifecycle,
    naming,
    policy,
    projections,
    reasons,
)
from agentid.domain.keyring import KeyAction, ObservedKey
from agentid.domain.lifecycle import DELETE_ORDER, ObjectPlan, ObjectRef, Observed
from agentid.domain.settings import OperatorSettings
from agentid.domain.supervision import NO_ACCESS, Access, Withheld
from agentid.kube import errors, resources
from agentid.kube.client import KubeClient
from agentid.kube.events import EventRecorder
from agentid.reconcile.scheduler import Scheduler
from agentid.reconcile.view import ClusterView

logger = logging.getLogger(__name__)
DELETED_NOTE = "deleted: bindings, keys and ServiceAccount removed"
Body = Mapping[str, Any]
Manifest = dict[str, Any]


def utc_now() -> dt.datetime:
    """Whole seconds: status timestamps stay readable and compare equal after a round trip."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class AgentReconciler:
    def __init__(
        self,
        *,
        client: KubeClient,
        view: ClusterView,
        events: EventRecorder,
        scheduler: Scheduler,
        settings: OperatorSettings,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.client = client
        self.view = view
        self.events = events
        self.scheduler = scheduler
        self.settings = settings
        self.clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._failures: dict[str, int] = {}
        self._latest: dict[str, Body] = {}  # the agent as our own last write returned it
        self._foreign_accounts: set[str] = set()  # agents whose ServiceAccount name is taken by a stranger
        self._random = random.Random()  # noqa: S311 - jitter, not crypto

    # -- entry points ---------------------------------------------------------------------------------------

    async def reconcile(self, body: Body) -> None:
        metadata = body["metadata"]
        uid = metadata["uid"]
        async with self._locks.setdefault(uid, asyncio.Lock()):
            body = self._freshest(body)
            started = time.monotonic()
            try:
                wakeup = await self._pass(body)
            except errors.ApiError as error:
                metrics.RECONCILES.labels(result="error").inc()
                metrics.API_ERRORS.labels(reason=error.reason).inc()
                wakeup = await self._failed(body, error)
            else:
                metrics.RECONCILES.labels(result="success").inc()
                self._failures.pop(uid, None)
            finally:
                metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
        if metadata.get("deletionTimestamp") and wakeup is None:
            self._forget(body)
        else:
            self._schedule(body, wakeup)

    def _freshest(self, body: Body) -> Body:
        """Events queued before our own writes carry older bodies; what our last write returned is newer."""
        latest = self._latest.get(body["metadata"]["uid"])
        if latest is not None and _resource_version(latest) > _resource_version(body):
            return latest
        self._latest.pop(body["metadata"]["uid"], None)
        return body

    def _remember(self, written: Body) -> Body:
        self._latest[written["metadata"]["uid"]] = projections.compact_agent(written)
        return written

    async def wake(self, namespace: str, name: str, uid: str) -> None:
        body = self.view.agent_body(namespace, name)
        if body is not None and body["metadata"]["uid"] == uid:
            await self.reconcile(body)

    # -- one pass -------------------------------------------------------------------------------------------

    async def _pass(self, body: Body) -> dt.datetime | None:
        try:
            agent = AgentIdentity.from_body(body)
        except pydantic.ValidationError as error:
            await self._write_status(body, _invalid_status(body, error, self.clock()))
            return None
        if agent.metadata.deletion_timestamp is not None:
            await self._finalize(agent, body)
            return None
        body = await self._ensure_finalizer(body)
        now = self.clock()
        gathered = await self._gather(agent, now)
        plan = _plan(agent, gathered)
        started = time.monotonic()
        try:
            service_account_uid = await self._execute(agent, plan, gathered.observed)
        except _ForeignServiceAccountError:
            # Found while creating it: plan again without it, withdrawing any access that was bound to that name.
            self._foreign_accounts.add(agent.metadata.uid)
            access = Access(withheld=(*gathered.access.withheld, _foreign_account(agent)))
            gathered = dataclasses.replace(gathered, access=access)
            plan = _plan(agent, gathered)
            service_account_uid = await self._execute(agent, plan, gathered.observed)
        withdrawal = _withdrawal_kind(agent, gathered.terminal)
        if withdrawal is not None and any(ref.kind == "RoleBinding" for ref in plan.deletes):
            metrics.REVOCATION_SECONDS.labels(kind=withdrawal).observe(time.monotonic() - started)
        outcome = self._outcome(agent, gathered, plan, service_account_uid, now)
        status = lifecycle.compute_status(agent, outcome, agent_id=gathered.agent_id, now=now)
        await self._write_status(body, status.model_dump(mode="json", by_alias=True, exclude_none=True))
        events = lifecycle.transition_events(agent, status, outcome, actor=status.last_changed_by)
        await self._announce(agent, body, events, agent_id=gathered.agent_id, now=now)
        return lifecycle.next_wakeup(agent, status)

    async def _gather(self, agent: AgentIdentity, now: dt.datetime) -> Gathered:
        """What the cluster holds and what the policies say; the key is made sure of here (it is generated, not
        planned, and its Secret is the source of truth for everything after)."""
        observed = self.view.observe(agent)
        governing = self.view.policy_for(agent.namespace)
        gathered = Gathered(
            agent_id=naming.agent_id(self.settings.trust_domain, agent.namespace, agent.name),
            terminal=lifecycle.terminal_phase(agent, now),
            observed=observed,
            governing=governing,
            key=observed.key,
        )
        if gathered.terminal is not None:
            return gathered
        cluster_roles = self.view.cluster_roles(agent.spec.cluster_role_refs)
        proof = admitted.parse(agent.metadata.annotations)
        access = policy.governed_access(agent.spec, governing, cluster_roles, now, proof)
        if agent.metadata.uid in self._foreign_accounts and await self._name_still_taken(agent):
            access = Access(withheld=(*access.withheld, _foreign_account(agent)))  # bind nothing to someone else's SA
        key, action = await self._ensure_key(agent, observed, now)
        published = tuple(keyring.key_statuses(key, now=now))
        return dataclasses.replace(gathered, access=access, key=key, key_action=action, published=published)

    def _outcome(
        self,
        agent: AgentIdentity,
        gathered: Gathered,
        plan: ObjectPlan,
        service_account_uid: str | None,
        now: dt.datetime,
    ) -> lifecycle.Outcome:
        live = gathered.terminal is None
        previous_key = gathered.observed.key
        return lifecycle.Outcome(
            phase=lifecycle.phase_for(agent, gathered.access, gathered.terminal),
            access=gathered.access,
            keys=gathered.published if live else (),
            key=gathered.key if live else None,
            service_account_uid=service_account_uid,
            key_action=gathered.key_action,
            repaired=plan.repaired,
            supervision=policy.allowed_mode(agent.spec, gathered.governing),
            token_ttl=policy.token_ttl(agent.spec, gathered.governing),
            created_by=attribution.parse(agent.metadata.annotations, attribution.CREATED_BY),
            last_changed_by=attribution.parse(agent.metadata.annotations, attribution.LAST_CHANGED_BY),
            revoked_key_ids=tuple(
                keyring.revoked_key_ids(
                    agent.status.revoked_key_ids, agent.status.keys, [previous_key.key_id] if previous_key else []
                )
            ),
        )

    def _retiring_after(self, agent: AgentIdentity, replaced: ObservedKey | None, now: dt.datetime) -> tuple[Any, ...]:
        window = keyring.retirement_window(agent.spec.credentials, self.settings.timings.key_overlap_allowance)
        return keyring.retiring_after(replaced, now=now, window=window)

    # -- keys -----------------------------------------------------------------------------------------------

    async def _ensure_key(
        self, agent: AgentIdentity, objects: Observed, now: dt.datetime
    ) -> tuple[ObservedKey, KeyAction]:
        credentials = agent.spec.credentials
        observed = objects.key
        action = keyring.key_action(credentials, observed, had_keys=bool(agent.status.keys), now=now)
        if action is KeyAction.KEEP and observed is not None:
            summary = objects.get("Secret", naming.key_secret(agent.name))
            if summary is not None and not lifecycle.contains(summary, _key_secret_shape(agent, observed)):
                live = await self.client.get(resources.SECRETS, naming.key_secret(agent.name), agent.namespace)
                if live is not None:
                    await self._apply_key_secret(agent, live, observed)  # labels, owner, annotations put back
            return observed, action
        signing_key = keys.generate(credentials.key_algorithm)
        replaced = observed if action in (KeyAction.ROTATE, KeyAction.CHANGE_ALGORITHM) else None
        retiring = self._retiring_after(agent, replaced, now)
        created = ObservedKey(signing_key.key_id, credentials.key_algorithm, now, dict(signing_key.jwk), retiring)
        manifest = desired.key_secret(
            agent,
            private_pem=signing_key.private_pem(),
            key_id=signing_key.key_id,
            algorithm=credentials.key_algorithm.value,
            created_at=now.isoformat(),
            retiring=retiring,
        )
        owner = (agent.namespace, agent.name)
        if action in (KeyAction.CREATE, KeyAction.REPLACE_LOST):
            # Create, never overwrite: the index may lag or the Secret may have lost its labels, and a second key
            # must never replace a first one on hearsay. If it exists, the key in it is adopted.
            try:
                written = await self.client.create(resources.SECRETS, manifest, agent.namespace)
            except errors.Conflict:
                live = await self.client.get(resources.SECRETS, naming.key_secret(agent.name), agent.namespace)
                recovered = projections.observed_key(live) if live is not None else None
                if live is not None and recovered is not None:
                    await self._apply_key_secret(agent, live, recovered)  # labels and owner put back if removed
                    action = keyring.key_action(credentials, recovered, had_keys=True, now=now)
                    if action is KeyAction.KEEP:
                        return recovered, action
                written = await self.client.apply(resources.SECRETS, manifest)  # unusable, or due for rotation
            self.view.record_written(owner, "Secret", written, created)
            return created, action
        written = await self.client.apply(resources.SECRETS, manifest)  # rotation: the new key replaces the old
        self.view.record_written(owner, "Secret", written, created)
        return created, action

    async def _apply_key_secret(self, agent: AgentIdentity, live: Body, key: ObservedKey) -> None:
        manifest = {**_key_secret_shape(agent, key), "data": dict(live.get("data") or {})}  # the live key, unchanged
        if lifecycle.contains(live, manifest):
            return
        written = await self.client.apply(resources.SECRETS, manifest)
        self.view.record_written((agent.namespace, agent.name), "Secret", written, key)

    # -- writes ---------------------------------------------------------------------------------------------

    async def _execute(self, agent: AgentIdentity, plan: ObjectPlan, observed: Observed) -> str | None:
        """Deletes first (access shrinks before anything grows), stage by stage; then SA and Role, then bindings."""
        owner = (agent.namespace, agent.name)
        for kind in DELETE_ORDER:
            refs = [ref for ref in plan.deletes if ref.kind == kind]
            await asyncio.gather(*(self._delete(owner, agent.namespace, ref) for ref in refs))
        service_account = observed.get("ServiceAccount", naming.service_account(agent.name))
        uid = str(service_account["metadata"].get("uid")) if service_account else None
        for kinds in (("ServiceAccount", "Role"), ("RoleBinding",)):
            stage = [manifest for manifest in plan.applies if manifest["kind"] in kinds]
            written = await asyncio.gather(*(self._write(agent, m, observed) for m in stage))
            for manifest, body in zip(stage, written, strict=True):
                self.view.record_written(owner, manifest["kind"], body)
                if manifest["kind"] == "ServiceAccount":
                    uid = str(body["metadata"]["uid"])
        deleted_service_account = any(ref.kind == "ServiceAccount" for ref in plan.deletes)
        return None if deleted_service_account else uid

    async def _name_still_taken(self, agent: AgentIdentity) -> bool:
        """For an agent whose ServiceAccount name was taken: still so? (Checked live; rare.)"""
        live = await self.client.get(resources.SERVICE_ACCOUNTS, naming.service_account(agent.name), agent.namespace)
        if live is not None and not _owned_by(live, agent):
            return True
        self._foreign_accounts.discard(agent.metadata.uid)
        return False

    async def _write(self, agent: AgentIdentity, manifest: Manifest, observed: Observed) -> Body:
        """Objects the index does not know are created (cheaper for the apiserver than an apply, and a name taken
        by someone else shows as a conflict); known ones are server-side applied."""
        resource = resources.BY_KIND[manifest["kind"]]
        if observed.get(manifest["kind"], manifest["metadata"]["name"]) is not None:
            return await self.client.apply(resource, manifest)
        try:
            return await self.client.create(resource, manifest, agent.namespace)
        except errors.Conflict:
            if manifest["kind"] == "ServiceAccount":
                live = await self.client.get(resource, manifest["metadata"]["name"], agent.namespace)
                if live is not None and not _owned_by(live, agent):
                    raise _ForeignServiceAccountError from None
            return await self.client.apply(resource, manifest)  # ours, unknown to the index (lost labels)

    async def _delete(self, owner: tuple[str, str], namespace: str, ref: ObjectRef) -> None:
        await self.client.delete(resources.BY_KIND[ref.kind], ref.name, namespace, uid=ref.uid)
        self.view.record_deleted(owner, ref.kind, ref.name)

    async def _ensure_finalizer(self, body: Body) -> Body:
        """Our finalizer goes on before any owned object exists, so deletion always runs the cleanup."""
        metadata = body["metadata"]
        finalizers = list(metadata.get("finalizers") or [])
        if naming.FINALIZER in finalizers:
            return body
        patch = {
            "metadata": {"finalizers": [*finalizers, naming.FINALIZER], "resourceVersion": metadata["resourceVersion"]}
        }
        written = await self.client.patch(resources.AGENT_IDENTITIES, metadata["name"], patch, metadata["namespace"])
        return self._remember(written)

    async def _write_status(self, body: Body, status: dict[str, Any]) -> None:
        patch = lifecycle.status_patch(body.get("status"), status)
        if patch is None:
            return
        metadata = body["metadata"]
        written = await self.client.patch(
            resources.AGENT_IDENTITIES, metadata["name"], {"status": patch}, metadata["namespace"], subresource="status"
        )
        self._remember(written)

    # -- deletion -------------------------------------------------------------------------------------------

    async def _finalize(self, agent: AgentIdentity, body: Body) -> None:
        metadata = body["metadata"]
        finalizers = list(metadata.get("finalizers") or [])
        if naming.FINALIZER not in finalizers:
            return
        observed = self.view.observe(agent)
        plan = _with_well_known_deletes(
            agent, lifecycle.plan_objects(agent, observed, access=NO_ACCESS, agent_id="", terminal=True)
        )
        await self._execute(agent, plan, observed)
        deleted = lifecycle.EventSpec("Normal", reasons.EVENT_DELETED, DELETED_NOTE, "Delete")
        await self._announce(agent, body, [deleted], agent_id=agent.status.agent_id or "", now=self.clock())
        remaining = [name for name in finalizers if name != naming.FINALIZER]
        patch = {"metadata": {"finalizers": remaining, "resourceVersion": metadata["resourceVersion"]}}
        try:
            await self.client.patch(resources.AGENT_IDENTITIES, metadata["name"], patch, metadata["namespace"])
        except errors.NotFound:
            return

    def _forget(self, body: Body) -> None:
        metadata = body["metadata"]
        self._foreign_accounts.discard(metadata["uid"])
        self.scheduler.cancel(metadata["uid"])
        self._locks.pop(metadata["uid"], None)
        self._failures.pop(metadata["uid"], None)
        self._latest.pop(metadata["uid"], None)
        self.view.forget((metadata["namespace"], metadata["name"]))

    # -- failure, scheduling, announcements -----------------------------------------------------------------

    async def _failed(self, body: Body, error: errors.ApiError) -> dt.datetime:
        metadata = body["metadata"]
        failures = self._failures[metadata["uid"]] = self._failures.get(metadata["uid"], 0) + 1
        timings = self.settings.timings
        delay = min(timings.retry_initial * 2 ** min(failures - 1, 16), timings.retry_max)
        logger.warning(
            "reconcile of %s/%s failed (attempt %d, retry in %s): %s",
            metadata["namespace"],
            metadata["name"],
            failures,
            delay,
            error,
        )
        if not error.retryable and not metadata.get("deletionTimestamp"):
            await self._record_failure(body, str(error)[:1024])
        retry_at: dt.datetime = self.clock() + delay
        return retry_at

    async def _record_failure(self, body: Body, message: str) -> None:
        """Ready=False/ApplyFailed with the apiserver's message (and one Event per distinct message)."""
        status = dict(body.get("status") or {})
        conditions = [c for c in status.get("conditions", []) if c.get("type") != reasons.READY]
        previous: dict[str, Any] = next((c for c in status.get("conditions", []) if c.get("type") == reasons.READY), {})
        if previous.get("reason") == reasons.APPLY_FAILED and previous.get("message") == message:
            return
        status["conditions"] = [
            *conditions,
            {
                "type": reasons.READY,
                "status": "False",
                "reason": reasons.APPLY_FAILED,
                "message": message,
                "observedGeneration": body["metadata"].get("generation", 0),
                "lastTransitionTime": _json_time(self.clock()),
            },
        ]
        try:
            await self._write_status(body, status)
        except errors.ApiError as status_error:
            logger.warning("could not record the failure in status: %s", status_error)
        now = self.clock()
        await self.events.post(
            body, type_="Warning", reason=reasons.EVENT_RECONCILE_FAILED, note=message, action="Reconcile", now=now
        )

    def _schedule(self, body: Body, wakeup: dt.datetime | None) -> None:
        metadata = body["metadata"]
        timings = self.settings.timings
        jitter = self._random.uniform(0, timings.resync_jitter.total_seconds())
        delay = timings.resync_interval.total_seconds() + jitter
        if wakeup is not None:
            delay = min(delay, (wakeup - self.clock()).total_seconds() + 0.05)
        namespace, name, uid = metadata["namespace"], metadata["name"], metadata["uid"]
        self.scheduler.schedule(uid, delay, lambda: self.wake(namespace, name, uid))

    async def _announce(
        self, agent: AgentIdentity, body: Body, events: list[lifecycle.EventSpec], *, agent_id: str, now: dt.datetime
    ) -> None:
        actor = attribution.parse(agent.metadata.annotations, attribution.LAST_CHANGED_BY)
        for event in events:
            audit.record(
                event.reason,
                agent_id=agent_id,
                namespace=agent.namespace,
                name=agent.name,
                uid=agent.metadata.uid,
                owner=f"{agent.spec.owner.kind}:{agent.spec.owner.name}",
                actor=actor.username if actor else None,
                supervision=agent.spec.supervision.mode.value,
                message=event.message,
            )
            await self.events.post(
                body, type_=event.type, reason=event.reason, note=event.message, action=event.action, now=now
            )


def _with_well_known_deletes(agent: AgentIdentity, plan: ObjectPlan) -> ObjectPlan:
    """Revocation and deletion also delete by name: an object that lost its labels must not survive."""
    refs = {(ref.kind, ref.name): ref for ref in plan.deletes}
    well_known = [
        ("RoleBinding", naming.role_binding(agent.name)),
        *(("RoleBinding", naming.cluster_role_binding(agent.name, role)) for role in agent.spec.cluster_role_refs),
        ("Role", naming.role(agent.name)),
        ("Secret", naming.key_secret(agent.name)),
        ("ServiceAccount", naming.service_account(agent.name)),
    ]
    for kind, name in well_known:
        refs.setdefault((kind, name), ObjectRef(kind, name))
    ordered = sorted(refs.values(), key=lambda ref: (DELETE_ORDER.index(ref.kind), ref.name))
    return ObjectPlan(applies=(), deletes=tuple(ordered), repaired=plan.repaired)


def _invalid_status(body: Body, error: pydantic.ValidationError, now: dt.datetime) -> dict[str, Any]:
    """A spec the API server accepted but agentid cannot parse (e.g. a newer schema): say so, grant nothing new."""
    first = error.errors()[0] if error.errors() else {"loc": (), "msg": str(error)}
    where = ".".join(str(part) for part in first.get("loc", ()))
    status = dict(body.get("status") or {})
    ready = {
        "type": reasons.READY,
        "status": "False",
        "reason": "InvalidSpec",
        "message": f"{where}: {first.get('msg')}"[:1024],
        "observedGeneration": body["metadata"].get("generation", 0),
        "lastTransitionTime": _json_time(now),
    }
    status["conditions"] = [c for c in status.get("conditions", []) if c.get("type") != reasons.READY] + [ready]
    return status


class _ForeignServiceAccountError(Exception):
    """The agent's ServiceAccount name is taken by a ServiceAccount this agent does not own."""


def _owned_by(body: Body, agent: AgentIdentity) -> bool:
    owners = (body.get("metadata") or {}).get("ownerReferences") or []
    return any(owner.get("uid") == agent.metadata.uid for owner in owners)


def _foreign_account(agent: AgentIdentity) -> Withheld:
    name = naming.service_account(agent.name)
    return Withheld(
        reasons.SERVICE_ACCOUNT_CONFLICT,
        f"ServiceAccount {name} exists and does not belong to this agent; delete or rename it (agentid never "
        "adopts a ServiceAccount it did not create)",
        problem=True,
    )


@dataclasses.dataclass(frozen=True)
class Gathered:
    """One pass's view of the world, before anything is written."""

    agent_id: str
    terminal: Phase | None
    observed: Observed
    governing: policy.EffectivePolicy
    access: Access = NO_ACCESS
    key: ObservedKey | None = None
    key_action: KeyAction = KeyAction.KEEP
    published: tuple[KeyStatus, ...] = ()  # from the key Secret alone


def _plan(agent: AgentIdentity, gathered: Gathered) -> ObjectPlan:
    terminal = gathered.terminal is not None
    plan = lifecycle.plan_objects(
        agent,
        gathered.observed,
        access=gathered.access,
        agent_id=gathered.agent_id,
        terminal=terminal,
        published=gathered.published,
    )
    if any(item.reason == reasons.SERVICE_ACCOUNT_CONFLICT for item in gathered.access.withheld):
        plan = lifecycle.without_applies_of(plan, "ServiceAccount")
    if terminal and not agent.status.phase.terminal:
        plan = _with_well_known_deletes(agent, plan)
    return plan


def _key_secret_shape(agent: AgentIdentity, key: ObservedKey) -> dict[str, Any]:
    """Everything of the key Secret agentid manages except its data (which only a key change rewrites)."""
    manifest = desired.key_secret(
        agent, private_pem=b"", key_id=key.key_id, algorithm=key.algorithm.value, created_at=key.created_at.isoformat()
    )
    del manifest["data"]
    return manifest


def _withdrawal_kind(agent: AgentIdentity, terminal: Phase | None) -> str | None:
    """Which kind of access withdrawal this pass performs, for the revocation-latency histogram."""
    if terminal is Phase.EXPIRED:
        return "expiry"
    if terminal is Phase.REVOKED:
        return "revoke"
    if agent.spec.supervision.mode is SupervisionMode.SUSPENDED:
        return "suspend"
    return None


def _resource_version(body: Body) -> int:
    try:
        return int(body["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


def _json_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
