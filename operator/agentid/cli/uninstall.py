"""``agentid uninstall``: remove every agent, its access and its objects, the issuer keys and the CRDs, in order.

Registered by ``agentid.cli.agents``. The order, each step idempotent (run it again after an interruption):

1. every agent is suspended with a kill-switch write (admitted even with the webhook down), and, while an
   operator runs, the CLI waits until it reports each one without access — nothing keeps live access during
   teardown;
2. every AgentPolicy and AgentIdentity is deleted; a running operator removes the agents' objects and its
   finalizer (the CLI waits, up to ``--timeout``);
3. what is left — the operator is gone (``--operator-gone``, or nothing of it is ready: ``domain.teardown``) or
   did not finish in time — the CLI removes itself: only objects the agent provably owns, access first, then
   agentid's finalizer and never another;
4. the token service's issuer key Secrets (unless a token service still runs: it would write them again),
   agentid's webhook configurations (unless an operator still runs: it still needs admission), then the CRDs
   (``--keep-crds`` keeps them; kept too while an agent is still there, e.g. held by another controller's
   finalizer: the command then names it and exits 1).

``--dry-run`` prints what would be done and changes nothing. Every action is one line naming its object.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agentid.api import crdgen, v1alpha1
from agentid.cli import output
from agentid.cli.agents import EXIT_ERROR, EXIT_OK
from agentid.cli.commands import CommandError, run_with_client
from agentid.domain import naming, teardown
from agentid.domain.teardown import Presence
from agentid.kube import errors, resources
from agentid.kube.client import KubeClient
from agentid.tokens.settings import KEYRING_SECRET_TYPE

POLL_INTERVAL = 0.5
FINALIZER_RETRIES = 5
CHART_SELECTOR = "app.kubernetes.io/part-of=agentid,app.kubernetes.io/component="
TOKEN_SERVICE_COMPONENT = "token-service"  # noqa: S105 - the chart's component label, not a secret
WEBHOOK_NAME_SUFFIX = f".{v1alpha1.GROUP}"  # every agentid webhook is named <what>.agentid.dev
OWNED_KINDS = ("ServiceAccount", "Secret", "Role", "RoleBinding")
RIGHTS = (
    "uninstall needs to list, patch and delete AgentIdentities and AgentPolicies everywhere, to list and delete "
    "ServiceAccounts, Secrets, Roles and RoleBindings in agent namespaces, and to delete webhook configurations "
    "and CRDs: run it as a cluster administrator"
)
Body = dict[str, Any]


@dataclass
class Run:
    """One uninstall: its options, what is decided so far, and what it could not finish."""

    client: KubeClient
    dry_run: bool
    timeout: float
    presence: Presence  # as found at the start: a running operator's webhook configurations are kept
    waiting: bool = False  # for the operator: while it is there and keeps within --timeout
    unfinished: list[str] = field(default_factory=list)  # agents still there at the end, and why

    def say(self, line: str) -> None:
        print(line, flush=True)

    def act(self, line: str) -> bool:
        """Print what is being done (``would ...`` in a dry run); True when it should actually be done."""
        self.say(f"would {line}" if self.dry_run else line)
        return not self.dry_run


def uninstall_command(args: argparse.Namespace) -> int:
    async def command(client: KubeClient) -> int:
        try:
            return await uninstall(client, args)
        except errors.Forbidden as error:
            raise CommandError(f"not allowed: {output.one_line(error.message)} ({RIGHTS})") from None

    return run_with_client(args, command, require_crds=False)


async def uninstall(client: KubeClient, args: argparse.Namespace) -> int:
    if args.operator_gone:
        presence = Presence(False, "--operator-gone")
    else:
        presence = await detect_operator(client)
    run = Run(client, dry_run=args.dry_run, timeout=args.timeout, presence=presence, waiting=presence.running)
    state = "running: it cleans up, within --timeout" if presence.running else "gone: this command cleans up"
    run.say(f"operator {state} ({presence.why})")
    if await _served(client):
        await remove_agents(run)
    else:
        run.say(f"no agents: {v1alpha1.API_VERSION} is not served (the CRDs are gone)")
    await remove_issuer_keys(run)
    await remove_webhook_configurations(run)
    if args.keep_crds:
        run.say("kept the CRDs (--keep-crds)")
    elif run.unfinished:
        run.say("kept the CRDs: deleting them would wait for the agents still there")
    else:
        await remove_crds(run)
    if run.unfinished:
        run.say(
            f"not finished: {'; '.join(run.unfinished)}. Another controller's finalizer is its to remove; "
            "run this command again once they are gone"
        )
        return EXIT_ERROR
    run.say("dry run: nothing was changed" if run.dry_run else "uninstalled")
    return EXIT_OK


# -- is an operator there? ------------------------------------------------------------------------------------------


async def detect_operator(client: KubeClient) -> Presence:
    deployments = await _visible(client, resources.DEPLOYMENTS, label_selector=CHART_SELECTOR + "operator")
    services: dict[str, bool] = {}
    by_url = False
    for _, configuration in await _webhook_configurations(client, looking=True):
        for webhook in configuration.get("webhooks") or []:
            service = (webhook.get("clientConfig") or {}).get("service")
            if service is None:
                by_url = True
                continue
            key = f"{service['namespace']}/{service['name']}"
            if key not in services:
                services[key] = await _has_ready_endpoint(client, service["namespace"], service["name"])
    return teardown.operator_presence(deployments, services, by_url)


async def _has_ready_endpoint(client: KubeClient, namespace: str, service: str) -> bool:
    slices = await _visible(
        client, resources.ENDPOINT_SLICES, namespace, label_selector=f"kubernetes.io/service-name={service}"
    )
    return any(
        (endpoint.get("conditions") or {}).get("ready") is not False
        for endpoint_slice in slices
        for endpoint in endpoint_slice.get("endpoints") or []
    )


async def _visible(
    client: KubeClient, resource: resources.Resource, namespace: str | None = None, *, label_selector: str
) -> list[Body]:
    """What the caller may see: a look that RBAC refuses tells nothing, so it counts as nothing found."""
    try:
        return await client.list(resource, namespace, label_selector=label_selector)
    except (errors.Forbidden, errors.NotFound):
        return []


async def _served(client: KubeClient) -> bool:
    try:
        await client.request("GET", f"/apis/{v1alpha1.API_VERSION}")
    except errors.NotFound:
        return False
    return True


# -- 1-3: agents and policies ---------------------------------------------------------------------------------------


async def remove_agents(run: Run) -> None:
    client = run.client
    agents = await client.list(resources.AGENT_IDENTITIES)
    suspended = [agent for agent in agents if await _suspend(run, agent)]
    if suspended and run.waiting and not run.dry_run:
        await _wait_without_access(run, suspended)
    for policy in await client.list(resources.AGENT_POLICIES):
        name = policy["metadata"]["name"]
        if run.act(f"delete agentpolicy {name}"):
            await client.delete(resources.AGENT_POLICIES, name, uid=policy["metadata"]["uid"])
    for agent in agents:
        metadata = agent["metadata"]
        if metadata.get("deletionTimestamp"):
            continue
        if run.act(f"delete agentidentity {_key(agent)}"):
            await client.delete(
                resources.AGENT_IDENTITIES, metadata["name"], metadata["namespace"], uid=metadata["uid"]
            )
    if run.dry_run:
        if run.waiting:
            run.say("the operator would remove their objects; if it did not within --timeout, this command would:")
        await _take_over(run, agents)
        return
    if run.waiting:
        remaining = await _wait_gone(run)
        if not remaining:
            if agents:
                run.say("the operator removed every agent's objects and its finalizer")
            return
        run.say(f"the operator did not finish within {run.timeout:g}s: this command removes what is left")
    await _take_over(run, await client.list(resources.AGENT_IDENTITIES))
    for agent in await _wait_gone(run, final=True):
        finalizers = teardown.foreign_finalizers(agent)
        why = f"held by {', '.join(finalizers)}" if _held(agent) else f"still there after {run.timeout:g}s"
        run.unfinished.append(f"agentidentity {_key(agent)} ({why})")


async def _suspend(run: Run, agent: Body | None) -> bool:
    """Step 1 for one agent; True when it was (or would be) suspended now."""
    for _ in range(FINALIZER_RETRIES):
        patch = teardown.suspension(agent) if agent is not None else None
        if agent is None or patch is None:
            return False
        if not run.act(f"suspend agentidentity {_key(agent)}"):
            return True
        name, namespace = agent["metadata"]["name"], agent["metadata"]["namespace"]
        try:
            await run.client.patch(resources.AGENT_IDENTITIES, name, patch, namespace)
        except errors.Conflict:
            agent = await run.client.get(resources.AGENT_IDENTITIES, name, namespace)
            continue
        except errors.NotFound:
            return False
        except errors.Invalid as error:  # e.g. a spec this cluster's CRD no longer accepts: deletion follows anyway
            run.say(f"could not suspend {_key(agent)} (it is deleted next): {output.one_line(error.message)}")
            return False
        return True
    return False


async def _wait_without_access(run: Run, suspended: list[Body]) -> None:
    """Until the operator reports every suspended agent without access. Past the deadline the deletion goes on:
    waiting for the operator if it suspended any (an agent it cannot report on, say one whose spec it cannot
    read, must not make the CLI do all the work), without it if it suspended none (the CLI, taking over, removes
    RoleBindings first)."""
    waiting = {_key(agent) for agent in suspended}
    deadline = time.monotonic() + run.timeout
    while waiting and time.monotonic() < deadline:
        for agent in await run.client.list(resources.AGENT_IDENTITIES):
            if _key(agent) in waiting and teardown.access_removed(agent):
                waiting.discard(_key(agent))
                run.say(f"access removed: agentidentity {_key(agent)} is {agent['status']['phase']}")
        if waiting:
            await asyncio.sleep(POLL_INTERVAL)
    if not waiting:
        return
    late = ", ".join(sorted(waiting))
    if len(waiting) < len(suspended):  # it is there (it suspended the others): it also finalises what it can
        run.say(f"the operator did not report {late} without access within {run.timeout:g}s: going on")
    else:
        run.waiting = False
        run.say(f"the operator did not suspend {late} within {run.timeout:g}s: going on without it")


async def _wait_gone(run: Run, *, final: bool = False) -> list[Body]:
    """Agents still there after ``--timeout``. At the end (``final``), agents held only by another controller's
    finalizer are not waited for: nothing this command may do frees them."""
    deadline = time.monotonic() + run.timeout
    while True:
        remaining = await run.client.list(resources.AGENT_IDENTITIES)
        only_held = final and all(_held(agent) for agent in remaining)
        if not remaining or only_held or time.monotonic() >= deadline:
            return remaining
        await asyncio.sleep(POLL_INTERVAL)


def _held(agent: Body) -> bool:
    """Deleted, agentid's finalizer gone, and still there: another controller's finalizer keeps it."""
    deleting = bool(agent["metadata"].get("deletionTimestamp"))
    return deleting and teardown.without_our_finalizer(agent) is None and bool(teardown.foreign_finalizers(agent))


async def _take_over(run: Run, agents: Iterable[Body]) -> None:
    """Step 3: each agent's own objects (access first), then agentid's finalizer. Objects are listed once per
    namespace and kept only if ``ownership.owns`` says they are the agent's."""
    pending = [agent for agent in agents if teardown.without_our_finalizer(agent) is not None]
    listed: dict[str, list[tuple[str, Body]]] = {}
    for agent in pending:
        namespace = agent["metadata"]["namespace"]
        if namespace not in listed:
            listed[namespace] = await _candidates(run.client, namespace)
        for ref in teardown.owned_deletions(agent, listed[namespace]):
            if run.act(f"delete {ref.kind.lower()} {namespace}/{ref.name} (agentidentity {_key(agent)}'s)"):
                await run.client.delete(resources.BY_KIND[ref.kind], ref.name, namespace, uid=ref.uid)
        await _remove_finalizer(run, agent)


async def _candidates(client: KubeClient, namespace: str) -> list[tuple[str, Body]]:
    found: list[tuple[str, Body]] = []
    for kind in OWNED_KINDS:
        found += [(kind, body) for body in await client.list(resources.BY_KIND[kind], namespace)]
    return found


async def _remove_finalizer(run: Run, agent: Body) -> None:
    """Only agentid's, with the read resourceVersion: a concurrent write (the operator finishing after all) is
    re-read, and another controller's finalizer stays."""
    for _ in range(FINALIZER_RETRIES):
        remaining = teardown.without_our_finalizer(agent)
        if remaining is None:
            return
        metadata = agent["metadata"]
        if not run.act(f"remove finalizer {naming.FINALIZER} from agentidentity {_key(agent)}"):
            return
        patch = {"metadata": {"finalizers": remaining, "resourceVersion": metadata["resourceVersion"]}}
        try:
            await run.client.patch(resources.AGENT_IDENTITIES, metadata["name"], patch, metadata["namespace"])
            return
        except errors.NotFound:
            return
        except errors.Conflict:
            fresh = await run.client.get(resources.AGENT_IDENTITIES, metadata["name"], metadata["namespace"])
            if fresh is None:
                return
            agent = fresh
    raise CommandError(f"agentidentity {_key(agent)} kept changing; run this command again")


# -- 4: what the installation leaves ----------------------------------------------------------------------------------


async def remove_issuer_keys(run: Run) -> None:
    """The token service writes its keyring Secret at start and on every refresh: while one runs, deleting it
    would only make it write a new one, so it is kept and named."""
    query = {"fieldSelector": f"type={KEYRING_SECRET_TYPE}"}
    secrets = [item async for page in run.client.pages(resources.SECRETS, None, query) for item in page["items"]]
    token_services = await _visible(
        run.client, resources.DEPLOYMENTS, label_selector=CHART_SELECTOR + TOKEN_SERVICE_COMPONENT
    )
    running = [d for d in token_services if int((d.get("status") or {}).get("readyReplicas") or 0) > 0]
    for secret in secrets:
        metadata = secret["metadata"]
        where = f"{metadata['namespace']}/{metadata['name']}"
        if running:
            names = ", ".join(f"{d['metadata']['namespace']}/{d['metadata']['name']}" for d in running)
            run.say(
                f"kept secret {where} (token issuer keys): the token service {names} still runs and would write it "
                "again; run this command again after `helm uninstall`"
            )
            continue
        if run.act(f"delete secret {where} (token issuer keys)"):
            await run.client.delete(resources.SECRETS, metadata["name"], metadata["namespace"], uid=metadata["uid"])


async def _webhook_configurations(
    client: KubeClient, *, looking: bool = False
) -> list[tuple[resources.Resource, Body]]:
    """agentid's webhook configurations: every webhook in them is one of agentid's (named ``*.agentid.dev``).
    ``looking``: only to tell whether an operator is there (a refused list then counts as none)."""
    found = []
    for resource in (resources.VALIDATING_WEBHOOK_CONFIGURATIONS, resources.MUTATING_WEBHOOK_CONFIGURATIONS):
        listed = await (_visible(client, resource, label_selector="") if looking else client.list(resource))
        for configuration in listed:
            webhooks = configuration.get("webhooks") or []
            if webhooks and all(str(w.get("name", "")).endswith(WEBHOOK_NAME_SUFFIX) for w in webhooks):
                found.append((resource, configuration))
    return found


async def remove_webhook_configurations(run: Run) -> None:
    """Left behind by an operator run outside Helm, or by an uninstall that stopped half-way. While an operator
    runs they are kept: without them, agents created in the meantime would skip admission."""
    for resource, configuration in await _webhook_configurations(run.client):
        kind, name = resource.kind.lower(), configuration["metadata"]["name"]
        if run.presence.running:
            run.say(
                f"kept {kind} {name}: an operator may still serve it (agents created meanwhile would skip admission); "
                "`helm uninstall` removes it, else run this command again once the operator is gone (--operator-gone)"
            )
            continue
        if run.act(f"delete {kind} {name}"):
            await run.client.delete(resource, name, uid=configuration["metadata"]["uid"])


async def remove_crds(run: Run) -> None:
    names = [definition.name for definition in crdgen.DEFINITIONS]
    present = [name for name in names if await run.client.get(resources.CUSTOM_RESOURCE_DEFINITIONS, name)]
    for name in present:
        if run.act(f"delete customresourcedefinition {name}"):
            await run.client.delete(resources.CUSTOM_RESOURCE_DEFINITIONS, name)
    if run.dry_run or not present:
        return
    deadline, left = time.monotonic() + run.timeout, present
    while time.monotonic() < deadline:
        left = [name for name in present if await run.client.get(resources.CUSTOM_RESOURCE_DEFINITIONS, name)]
        if not left:
            return
        await asyncio.sleep(POLL_INTERVAL)
    raise CommandError(
        f"the CRDs {', '.join(left)} are still terminating after {run.timeout:g}s: "
        f"`kubectl get {v1alpha1.PLURAL} -A` shows what holds them (docs/troubleshooting.md)"
    )


def _key(body: Body) -> str:
    return f"{body['metadata']['namespace']}/{body['metadata']['name']}"
