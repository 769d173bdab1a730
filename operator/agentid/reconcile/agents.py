"""The level-triggered reconciliation of one AgentIdentity: gather -> plan -> apply -> status -> announce.

gather reads (the view; live lookups only for what the watch cannot show; SubjectAccessReviews under an owner
ceiling); plan is pure (``_plan``: objects, deletions via ``lifecycle.removal``, the key step); apply writes (the
key first, then deletes, then objects) and never re-plans: a stranger found by a create ends the pass, and the next
one plans with it; status and Events come from the pure ``lifecycle`` functions.

Called only by ``agentid.reconcile.controller``, for a key off its work queue: every trigger (the agent's watch
events, drift on its objects, ClusterRole, policy and namespace changes, its timers, retries) comes that way.
Create, resume, update, timers and drift repair are all this one path. The queue never runs two passes of one
agent at once; passes for different agents run concurrently. A pass returns when it wants the next one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pydantic

from agentid import audit, metrics
from agentid.api.v1alpha1 import AgentIdentity, Phase, SupervisionMode
from agentid.domain import (
    admitted,
    attribution,
    conditions,
    desired,
    keyring,
    keys,
    lifecycle,
    naming,
    ownership,
    policy,
    projections,
    reasons,
    teardown,
    unparsed,
)
from agentid.domain import clock as wall_clock
from agentid.domain.keyring import KeyAction, ObservedKey
from agentid.domain.lifecycle import DELETE_ORDER, ObjectPlan, ObjectRef, Observed
from agentid.domain.ownership import ObjectName, Owner
from agentid.domain.settings import OperatorSettings
from agentid.domain.supervision import NO_ACCESS, Access
from agentid.kube import errors, resources
from agentid.kube.client import KubeClient
from agentid.kube.events import EventRecorder
from agentid.reconcile.ceiling import OwnerCeiling
from agentid.reconcile.view import AgentKey, ClusterView

logger = logging.getLogger(__name__)
DELETED_NOTE = "deleted: bindings, keys and ServiceAccount removed"
Body = Mapping[str, Any]
Manifest = dict[str, Any]


class AgentReconciler:
    def __init__(
        self,
        *,
        client: KubeClient,
        view: ClusterView,
        events: EventRecorder,
        settings: OperatorSettings,
        ceiling: OwnerCeiling | None = None,
        clock: Callable[[], dt.datetime] = wall_clock.now_in_seconds,
    ) -> None:
        self.client = client
        self.ceiling = ceiling
        self.view = view
        self.events = events
        self.settings = settings
        self.clock = clock
        self._latest: dict[str, Body] = {}  # the agent as our own last write returned it
        # agent UID -> derived names a stranger's object holds that the watch does not show (found by a create's
        # 409): checked again live on every pass of that agent, and on a backoff until freed
        self._taken: dict[str, set[ObjectName]] = {}
        self._taken_checks: dict[str, int] = {}
        self._random = random.Random()  # noqa: S311 - jitter, not crypto

    # -- entry points ---------------------------------------------------------------------------------------

    async def reconcile(self, body: Body) -> float | None:
        """One pass (the controller never runs two for one agent at once). Returns the seconds until the agent's
        next pass (its next rotation, retirement or expiry, else a jittered resync), None once it is gone. An API
        error is recorded where the user can see it, then raised: the controller retries with backoff."""
        metadata = body["metadata"]
        uid = metadata["uid"]
        body = self._freshest(body)
        started = time.monotonic()
        try:
            wakeup = await self._pass(body)
        except errors.ApiError as error:
            metrics.RECONCILES.labels(result="error").inc()
            metrics.API_ERRORS.labels(reason=error.reason).inc()
            if not error.retryable and not metadata.get("deletionTimestamp"):
                await self._record_failure(body, str(error)[:1024])
            raise
        else:
            metrics.RECONCILES.labels(result="success").inc()
        finally:
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
        if metadata.get("deletionTimestamp") and wakeup is None:
            self._forget(body)
            return None
        return self._delay(self._recheck(uid, wakeup))

    def _recheck(self, uid: str, wakeup: dt.datetime | None) -> dt.datetime | None:
        """A stranger's object the watch does not show is looked at again on a backoff, so the agent gets its
        name once the stranger is gone."""
        if uid not in self._taken:
            return wakeup
        checks = self._taken_checks[uid] = self._taken_checks.get(uid, 0) + 1
        timings = self.settings.timings
        recheck: dt.datetime = self.clock() + min(timings.retry_initial * 2 ** min(checks - 1, 16), timings.retry_max)
        return recheck if wakeup is None else min(wakeup, recheck)

    def _freshest(self, body: Body) -> Body:
        """Events queued before our own writes carry older bodies; what our last write returned is newer."""
        latest = self._latest.get(body["metadata"]["uid"])
        if latest is not None and projections.resource_version(latest) > projections.resource_version(body):
            return latest
        self._latest.pop(body["metadata"]["uid"], None)
        return body

    def _remember(self, written: Body) -> Body:
        self._latest[written["metadata"]["uid"]] = projections.compact_agent(written)
        return written

    # -- one pass -------------------------------------------------------------------------------------------

    async def _pass(self, body: Body) -> dt.datetime | None:
        if body["metadata"].get("deletionTimestamp"):
            await self._finalize(body)  # before parsing: an agent this version cannot read is deleted all the same
            return None
        try:
            agent = AgentIdentity.from_body(body)
        except pydantic.ValidationError as error:
            await self._write_status(body, _invalid_status(body, error, self.clock()))
            return None
        body = await self._ensure_finalizer(body)
        owner = Owner.of(body)
        now = self.clock()
        gathered = await self._gather(agent, owner, now)
        key_action = _key_step(agent, gathered, now)
        started = time.monotonic()
        try:
            # The key first: the ServiceAccount the plan writes mirrors the keys the Secret then holds.
            gathered = await self._apply_key(agent, owner, gathered, key_action, now)
            plan = _plan(agent, gathered, now)
            service_account_uid = await self._execute(agent, owner, plan, gathered.observed)
        except _NameTakenError as taken:
            # A name the watch did not show is a stranger's (nothing of it was written). The pass ends here and the
            # next one, at once, plans with it held: withdrawing any access bound to that name, reporting it.
            self._taken.setdefault(agent.metadata.uid, set()).add(taken.name)
            return now
        withdrawal = _withdrawal_kind(agent, gathered.terminal)
        if withdrawal is not None and any(ref.kind == "RoleBinding" for ref in plan.deletes):
            metrics.REVOCATION_SECONDS.labels(kind=withdrawal).observe(time.monotonic() - started)
        outcome = self._outcome(agent, gathered, plan, service_account_uid, now)
        status = lifecycle.compute_status(agent, outcome, agent_id=gathered.agent_id, now=now)
        await self._write_status(body, status.model_dump(mode="json", by_alias=True, exclude_none=True))
        events = lifecycle.transition_events(agent, status, outcome, actor=status.last_changed_by)
        await self._announce(body, events, agent_id=gathered.agent_id, now=now)
        return lifecycle.next_wakeup(agent, status)

    async def _gather(self, agent: AgentIdentity, owner: Owner, now: dt.datetime) -> Gathered:
        """What the cluster holds and what the policies (and, under an owner ceiling, the owner's rights) allow.
        Reads only: the view, and live lookups of what the watch cannot show (strangers, unlabelled objects)."""
        observed = self.view.observe((agent.namespace, agent.name), owner)
        governing = self.view.policy_for(agent.namespace)
        gathered = Gathered(
            agent_id=naming.agent_id(self.settings.trust_domain, agent.namespace, agent.name),
            terminal=lifecycle.terminal_phase(agent, now),
            observed=observed,
            governing=governing,
            key=observed.key,
            taken=frozenset(observed.strangers | await self._still_taken(agent, owner)),
        )
        if gathered.terminal is not None:
            if agent.status.phase.terminal:
                return gathered
            names = naming.derived(agent.name, agent.spec.cluster_role_refs)
            unlisted = await self._unlisted((agent.namespace, agent.name), names, owner, observed, gathered.taken)
            return dataclasses.replace(gathered, unlisted=unlisted)
        cluster_roles = self.view.cluster_roles(agent.spec.cluster_role_refs)
        proof = admitted.parse(agent.metadata.annotations)
        access = policy.governed_access(agent.spec, governing, cluster_roles, now, proof)
        if governing.owner_ceiling and self.ceiling is not None and not access.empty:
            access = await self.ceiling.restrict(agent.spec, agent.namespace, access, cluster_roles)
        return _held(agent, dataclasses.replace(gathered, access=access), gathered.taken)

    async def _apply_key(
        self, agent: AgentIdentity, owner: Owner, gathered: Gathered, action: KeyAction | None, now: dt.datetime
    ) -> Gathered:
        """The first write of a pass: the planned key step (the key itself is generated here, and its Secret is the
        source of truth for everything after). Raises ``_NameTakenError`` if the key Secret's name is a stranger's."""
        if action is None:
            return gathered
        key, action = await self._ensure_key(agent, owner, gathered.observed, action, now)
        return dataclasses.replace(gathered, key=key, key_action=action)

    async def _still_taken(self, agent: AgentIdentity, owner: Owner) -> set[ObjectName]:
        """Of the names a stranger held at an earlier pass (unwatched objects), those it still holds. Checked live;
        rare (only for agents in conflict)."""
        remembered = self._taken.get(agent.metadata.uid)
        if not remembered:
            return set()
        for kind, name in sorted(remembered):
            live = await self.client.get(resources.BY_KIND[kind], name, agent.namespace)
            if live is None or ownership.owns(owner, live):
                remembered.discard((kind, name))
        if not remembered:
            self._taken.pop(agent.metadata.uid, None)
            self._taken_checks.pop(agent.metadata.uid, None)
        return set(remembered)

    async def _unlisted(
        self,
        agent_key: AgentKey,
        names: Iterable[ObjectName],
        owner: Owner,
        observed: Observed,
        taken: frozenset[ObjectName],
    ) -> tuple[ObjectRef, ...]:
        """Revocation and deletion must leave nothing of the agent behind, also objects that lost their labels
        (and so the watch): every derived name (``names``) the watch does not show is looked up, and deleted if
        the agent owns it. A stranger's object of such a name is left alone."""
        found: list[ObjectRef] = []
        for kind, name in names:
            if observed.get(kind, name) is not None or (kind, name) in taken:
                continue
            live = await self.client.get(resources.BY_KIND[kind], name, agent_key[0])
            if live is not None and ownership.owns(owner, live):
                found.append(ObjectRef(kind, name, str(live["metadata"]["uid"])))
        return tuple(found)

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
            keys=tuple(keyring.key_statuses(gathered.key, now=now)) if gathered.key is not None and live else (),
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

    # -- keys -----------------------------------------------------------------------------------------------

    async def _ensure_key(
        self, agent: AgentIdentity, owner: Owner, objects: Observed, action: KeyAction, now: dt.datetime
    ) -> tuple[ObservedKey, KeyAction]:
        """The agent's key, made or kept as planned (a key Secret of its own found on creating it is adopted); a
        key Secret name held by a stranger raises ``_NameTakenError``."""
        credentials = agent.spec.credentials
        observed = objects.key
        if action is KeyAction.KEEP and observed is not None:
            summary = objects.get("Secret", naming.key_secret(agent.name))
            if summary is not None and not lifecycle.contains(summary, _key_secret_shape(agent, observed)):
                live = await self.client.get(resources.SECRETS, naming.key_secret(agent.name), agent.namespace)
                if live is not None and ownership.owns(owner, live):
                    await self._apply_key_secret(agent, live, observed)  # labels, annotations put back
            return observed, action
        signing_key = keys.generate(credentials.key_algorithm)
        window = keyring.retirement_window(credentials, self.settings.timings.key_overlap_allowance)
        replaced = observed if action in (KeyAction.ROTATE, KeyAction.CHANGE_ALGORITHM) else None
        retiring = keyring.retiring_after(replaced, now=now, window=window)  # a lost key is not published again
        created = ObservedKey(signing_key.key_id, credentials.key_algorithm, now, dict(signing_key.jwk), retiring)
        manifest = desired.key_secret(
            agent,
            private_pem=signing_key.private_pem(),
            key_id=signing_key.key_id,
            algorithm=credentials.key_algorithm.value,
            created_at=now.isoformat(),
            retiring=retiring,
        )
        agent_key = (agent.namespace, agent.name)
        if action in (KeyAction.CREATE, KeyAction.REPLACE_LOST):
            # Create, never overwrite: the index may lag or the Secret may have lost its labels, and a second key
            # must never replace a first one on hearsay. If it exists, the key in it is adopted.
            try:
                written = await self.client.create(resources.SECRETS, manifest, agent.namespace)
            except errors.Conflict:
                live = await self.client.get(resources.SECRETS, naming.key_secret(agent.name), agent.namespace)
                if live is None or not ownership.owns(owner, live):  # (gone again: the next pass creates it)
                    raise _NameTakenError(("Secret", naming.key_secret(agent.name))) from None
                recovered = projections.observed_key(live)
                if recovered is not None:
                    await self._apply_key_secret(agent, live, recovered)  # labels put back if removed
                    action = keyring.key_action(credentials, recovered, had_keys=True, now=now)
                    if action is KeyAction.KEEP:
                        return recovered, action
                written = await self.client.apply(resources.SECRETS, _pinned(manifest, live))  # unusable, or due
            self.view.record_written(agent_key, "Secret", written, created)
            return created, action
        current = objects.get("Secret", naming.key_secret(agent.name))  # rotation: the new key replaces the old
        written = await self.client.apply(resources.SECRETS, _pinned(manifest, current))
        self.view.record_written(agent_key, "Secret", written, created)
        return created, action

    async def _apply_key_secret(self, agent: AgentIdentity, live: Body, key: ObservedKey) -> None:
        manifest = {**_key_secret_shape(agent, key), "data": dict(live.get("data") or {})}  # the live key, unchanged
        if lifecycle.contains(live, manifest):
            return
        written = await self.client.apply(resources.SECRETS, _pinned(manifest, live))
        self.view.record_written((agent.namespace, agent.name), "Secret", written, key)

    # -- writes ---------------------------------------------------------------------------------------------

    async def _execute(self, agent: AgentIdentity, owner: Owner, plan: ObjectPlan, observed: Observed) -> str | None:
        """Deletes first (access shrinks before anything grows), stage by stage; then SA and Role, then bindings."""
        agent_key = (agent.namespace, agent.name)
        await self._remove(agent_key, plan.deletes)
        service_account = observed.get("ServiceAccount", naming.service_account(agent.name))
        uid = str(service_account["metadata"].get("uid")) if service_account else None
        for kinds in (("ServiceAccount", "Role"), ("RoleBinding",)):
            stage = [manifest for manifest in plan.applies if manifest["kind"] in kinds]
            written = await asyncio.gather(*(self._write(agent, owner, m, observed) for m in stage))
            for manifest, body in zip(stage, written, strict=True):
                self.view.record_written(agent_key, manifest["kind"], body)
                if manifest["kind"] == "ServiceAccount":
                    uid = str(body["metadata"]["uid"])
        deleted_service_account = any(ref.kind == "ServiceAccount" for ref in plan.deletes)
        return None if deleted_service_account else uid

    async def _write(self, agent: AgentIdentity, owner: Owner, manifest: Manifest, observed: Observed) -> Body:
        """Objects the index does not know are created (cheaper for the apiserver than an apply, and a name taken
        by someone else shows as a conflict); the agent's own are server-side applied, pinned to their UID."""
        resource = resources.BY_KIND[manifest["kind"]]
        current = observed.get(manifest["kind"], manifest["metadata"]["name"])
        if current is not None:
            return await self.client.apply(resource, _pinned(manifest, current))
        try:
            return await self.client.create(resource, manifest, agent.namespace)
        except errors.Conflict:
            live = await self.client.get(resource, manifest["metadata"]["name"], agent.namespace)
            if live is None or not ownership.owns(owner, live):
                raise _NameTakenError((manifest["kind"], manifest["metadata"]["name"])) from None
            return await self.client.apply(resource, _pinned(manifest, live))  # ours, unknown to the index

    async def _remove(self, agent_key: AgentKey, deletes: Iterable[ObjectRef]) -> None:
        """The planned deletes, stage by stage in ``DELETE_ORDER``: access first, then keys, then the identity."""
        deletes = tuple(deletes)
        for kind in DELETE_ORDER:
            refs = [ref for ref in deletes if ref.kind == kind]
            await asyncio.gather(*(self._delete(agent_key, ref) for ref in refs))

    async def _delete(self, agent_key: AgentKey, ref: ObjectRef) -> None:
        """Only ever the agent's own object: the UID precondition fails if a stranger's took its name since."""
        if ref.uid is None:
            raise ValueError(f"refusing to delete {ref.kind} {ref.name} without knowing it is the agent's")
        await self.client.delete(resources.BY_KIND[ref.kind], ref.name, agent_key[0], uid=ref.uid)
        self.view.record_deleted(agent_key, ref.kind, ref.name)

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

    async def _finalize(self, body: Body) -> None:
        """Removes what the agent owns, then lets it go. Metadata and the view are all it reads (the spec is never
        parsed: an agent whose spec this version cannot read is finalised like any other).

        The Deleted Event (and audit record) follows the finalizer's removal, and only this pass's own: a pass that
        ran on an older body (queued before the removal) finds the object gone (404) or changed (409, retried on
        the fresh body, which has no finalizer left) and announces nothing. So one deletion is announced at most
        once; should the process die between the removal and the Event, that Event is lost. Events are best effort
        (a failed post is dropped, they expire), and a second Deleted for one agent would be false."""
        metadata = body["metadata"]
        remaining = teardown.without_our_finalizer(body)
        if remaining is None:
            return
        agent_key: AgentKey = (metadata["namespace"], metadata["name"])
        owner = Owner.of(body)
        observed = self.view.observe(agent_key, owner)
        names = naming.derived(metadata["name"], unparsed.cluster_roles(body))
        unlisted = await self._unlisted(agent_key, names, owner, observed, observed.strangers)
        await self._remove(agent_key, lifecycle.removal(observed, unlisted).deletes)
        patch = {"metadata": {"finalizers": remaining, "resourceVersion": metadata["resourceVersion"]}}
        try:
            await self.client.patch(resources.AGENT_IDENTITIES, metadata["name"], patch, metadata["namespace"])
        except errors.NotFound:
            return  # gone: our finalizer was removed already (and the deletion announced by whoever removed it)
        deleted = lifecycle.EventSpec("Normal", reasons.EVENT_DELETED, DELETED_NOTE, "Delete")
        agent_id = naming.agent_id(self.settings.trust_domain, *agent_key)
        await self._announce(body, [deleted], agent_id=agent_id, now=self.clock())

    def _forget(self, body: Body) -> None:
        metadata = body["metadata"]
        self._taken.pop(metadata["uid"], None)
        self._taken_checks.pop(metadata["uid"], None)
        self._latest.pop(metadata["uid"], None)
        self.view.forget((metadata["namespace"], metadata["name"]))

    # -- failure, scheduling, announcements -----------------------------------------------------------------

    async def _record_failure(self, body: Body, message: str) -> None:
        """Ready=False/ApplyFailed with the apiserver's message (and one Event per distinct message)."""
        current = body.get("status") or {}
        previous: Mapping[str, Any] = next(
            (c for c in current.get("conditions") or [] if c.get("type") == reasons.READY), {}
        )
        if previous.get("reason") == reasons.APPLY_FAILED and previous.get("message") == message:
            return
        status = conditions.set_in_status(
            current,
            type_=reasons.READY,
            status_="False",
            reason=reasons.APPLY_FAILED,
            message=message,
            generation=body["metadata"].get("generation", 0),
            now=self.clock(),
        )
        try:
            await self._write_status(body, status)
        except errors.ApiError as status_error:
            logger.warning("could not record the failure in status: %s", status_error)
        now = self.clock()
        await self.events.post(
            body, type_="Warning", reason=reasons.EVENT_RECONCILE_FAILED, note=message, action="Reconcile", now=now
        )

    def _delay(self, wakeup: dt.datetime | None) -> float:
        timings = self.settings.timings
        jitter = self._random.uniform(0, timings.resync_jitter.total_seconds())
        delay = timings.resync_interval.total_seconds() + jitter
        if wakeup is not None:
            delay = min(delay, (wakeup - self.clock()).total_seconds() + 0.05)
        return max(delay, 0.0)

    async def _announce(
        self, body: Body, events: list[lifecycle.EventSpec], *, agent_id: str, now: dt.datetime
    ) -> None:
        """Each Event with its audit record (read from the stored object: a deletion has no parsed spec)."""
        subject = unparsed.audit_subject(body)
        for event in events:
            audit.record(event.reason, agent_id=agent_id, **subject, message=event.message)
            await self.events.post(
                body, type_=event.type, reason=event.reason, note=event.message, action=event.action, now=now
            )


def _invalid_status(body: Body, error: pydantic.ValidationError, now: dt.datetime) -> dict[str, Any]:
    """A spec the API server accepted but agentid cannot parse (e.g. a newer schema): say so, grant nothing new."""
    first = error.errors()[0] if error.errors() else {"loc": (), "msg": str(error)}
    where = ".".join(str(part) for part in first.get("loc", ()))
    return conditions.set_in_status(
        body.get("status") or {},
        type_=reasons.READY,
        status_="False",
        reason=reasons.INVALID_SPEC,
        message=f"{where}: {first.get('msg')}"[:1024],
        generation=body["metadata"].get("generation", 0),
        now=now,
    )


class _NameTakenError(Exception):
    """A create found the name held by an object this agent does not own."""

    def __init__(self, name: ObjectName) -> None:
        super().__init__(f"{name[0]} {name[1]} is not this agent's")
        self.name = name


def _pinned(manifest: Manifest, current: Body | None) -> Manifest:
    """An apply that only succeeds on the object we looked at: should a stranger's object have taken the name
    since, the UID differs and the apiserver refuses (the next pass sees the stranger)."""
    uid = ((current or {}).get("metadata") or {}).get("uid")
    if not uid:
        return manifest
    return {**manifest, "metadata": {**manifest["metadata"], "uid": uid}}


def _held(agent: AgentIdentity, gathered: Gathered, taken: Iterable[ObjectName]) -> Gathered:
    """The pass as it must go when strangers hold some of the agent's names (see ``ownership.withhold``)."""
    taken = frozenset(taken)
    access = ownership.withhold(gathered.access, ownership.conflicts(agent, taken))
    return dataclasses.replace(gathered, taken=taken, access=access)


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
    taken: frozenset[ObjectName] = frozenset()  # derived names held by strangers
    unlisted: tuple[ObjectRef, ...] = ()  # the agent's own objects the watch does not show (revocation only)


def _key_step(agent: AgentIdentity, gathered: Gathered, now: dt.datetime) -> KeyAction | None:
    """Pure: the key step (None: none, the agent is terminal or its key Secret's name is a stranger's)."""
    if gathered.terminal is not None or ("Secret", naming.key_secret(agent.name)) in gathered.taken:
        return None
    had_keys = bool(agent.status.keys)
    return keyring.key_action(agent.spec.credentials, gathered.observed.key, had_keys=had_keys, now=now)


def _plan(agent: AgentIdentity, gathered: Gathered, now: dt.datetime) -> ObjectPlan:
    """Pure: what to write and delete for what was gathered (after the key step: the ServiceAccount mirrors the
    keys the key Secret publishes)."""
    if gathered.terminal is not None:
        return lifecycle.removal(gathered.observed, gathered.unlisted)
    published = keyring.key_statuses(gathered.key, now=now) if gathered.key is not None else []
    plan = lifecycle.plan_objects(
        agent, gathered.observed, access=gathered.access, agent_id=gathered.agent_id, terminal=False,
        published=published,
    )  # fmt: skip
    return lifecycle.without_applies_to(plan, gathered.taken)


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
