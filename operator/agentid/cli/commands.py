"""The kubectl plugin's cluster commands for people: list, describe, suspend, resume, revoke, audit.

Parsers are registered by ``agentid.cli.agents`` (standard library only); this module is imported when one of
these commands runs. It talks to the API server through the project's kube client (plain-dict REST on
kubernetes.aio), reads agents through the API models, and changes them only by patching ``spec`` (supervision,
revocation) — the operator reconciles, nothing here writes status. What to show lives in ``agentid.cli.views``,
how to print it in ``agentid.cli.output``.

``-o json|yaml`` print the API objects as kubectl does, ``-o name`` prints ``agentidentity.agentid.dev/NAME``.
Every failure is one line on stderr with an exit code from ``agentid.cli.agents``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes
from rich.console import Console
from rich.text import Text

from agentid.api import v1alpha1
from agentid.api.v1alpha1 import AgentIdentity, SupervisionMode
from agentid.cli import output, views
from agentid.cli.agents import (
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_NOT_INSTALLED,
    EXIT_OK,
    EXIT_TERMINAL,
    RESUMABLE_MODES,
)
from agentid.kube import errors, resources
from agentid.kube.client import KubeClient, load_configuration

FIELD_MANAGER = "kubectl-agentid"
RESUME_MODE_ANNOTATION = f"{v1alpha1.GROUP}/resume-mode"  # the mode `suspend` interrupted, restored by `resume`
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
CONFLICT_RETRIES = 5
WAIT_INTERVAL = 0.5


class CommandError(Exception):
    """Stops a command with a message (stderr) and an exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


# -- plumbing -------------------------------------------------------------------------------------------------------


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def run_with_client(
    args: argparse.Namespace, command: Callable[[KubeClient], Awaitable[int]], *, require_crds: bool = True
) -> int:
    """Load the kubeconfig, check the CRDs are served, run, close: every failure is one line and an exit code."""

    async def main() -> int:
        configuration = await load_configuration(args.kubeconfig, args.context)  # KubeconfigError: see main
        client = KubeClient(configuration, field_manager=FIELD_MANAGER, max_in_flight=8)
        try:
            if require_crds:
                await ensure_installed(client)
            return await command(client)
        finally:
            await client.close()

    try:
        return asyncio.run(main())
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code
    except errors.NotFound as error:
        print(f"error: {error.message or 'not found'}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except errors.Unreachable as error:
        print(f"error: cannot reach the API server: {output.one_line(error.message)}", file=sys.stderr)
        return EXIT_ERROR
    except errors.ApiError as error:
        print(f"error: the API server refused: {error.reason}: {output.one_line(error.message)}", file=sys.stderr)
        return EXIT_ERROR
    except (aiohttp.ClientError, OSError) as error:
        print(f"error: cannot reach the API server: {output.one_line(error)}", file=sys.stderr)
        return EXIT_ERROR


async def ensure_installed(client: KubeClient) -> None:
    """The API group answers 404 until the CRDs are installed: say that, not "agent not found"."""
    try:
        await client.request("GET", f"/apis/{v1alpha1.API_VERSION}")
    except errors.NotFound:
        raise CommandError(
            f"the agentid CRDs are not installed ({v1alpha1.API_VERSION} is not served by this cluster): "
            "install the Helm chart, or `agentid crds | kubectl apply --server-side -f -`",
            EXIT_NOT_INSTALLED,
        ) from None


def namespace_of(args: argparse.Namespace) -> str:
    """-n, else the kubeconfig context's namespace, else the Pod's own namespace in-cluster, else default."""
    if getattr(args, "namespace", None):
        return str(args.namespace)
    environ = os.environ
    if args.kubeconfig is None and environ.get("KUBERNETES_SERVICE_HOST") and not environ.get("KUBECONFIG"):
        return IN_CLUSTER_NAMESPACE.read_text().strip() if IN_CLUSTER_NAMESPACE.exists() else "default"
    try:
        contexts, active = kubernetes.config.list_kube_config_contexts(config_file=args.kubeconfig)
    except (kubernetes.config.ConfigException, OSError):
        return "default"
    chosen = next((c for c in contexts if c.get("name") == args.context), None) if args.context else active
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


async def _get_agent(client: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    body = await client.get(resources.AGENT_IDENTITIES, name, namespace)
    if body is None:
        raise CommandError(f'agentidentity "{name}" not found in namespace "{namespace}"', EXIT_NOT_FOUND)
    return body


def _parsed(body: Mapping[str, Any]) -> AgentIdentity:
    agent = views.parse_agent(body)
    if agent is None:
        raise CommandError(f"{body['metadata']['name']}: this agent's spec is not one this agentid version understands")
    return agent


def _object_name(body: Mapping[str, Any]) -> str:
    """-o name: ``agentidentity.agentid.dev/NAME``, as ``kubectl get -o name`` prints it."""
    return f"{v1alpha1.KIND.lower()}.{v1alpha1.GROUP}/{(body.get('metadata') or {}).get('name', '')}"


def _as_list(bodies: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The items with apiVersion and kind (a list response leaves them out), in a v1 List like kubectl's."""
    items = [{"apiVersion": v1alpha1.API_VERSION, "kind": v1alpha1.KIND, **body} for body in bodies]
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


# -- list, describe -------------------------------------------------------------------------------------------------


def list_command(args: argparse.Namespace) -> int:
    async def command(client: KubeClient) -> int:
        namespace = None if args.all_namespaces else namespace_of(args)
        bodies = sorted(
            await client.list(resources.AGENT_IDENTITIES, namespace),
            key=lambda body: (body["metadata"].get("namespace", ""), body["metadata"]["name"]),
        )
        if args.output in ("json", "yaml"):
            output.print_document(_as_list(bodies), args.output)
            return EXIT_OK
        if args.output == "name":
            for body in bodies:
                print(_object_name(body))
            return EXIT_OK
        if not bodies:
            where = "any namespace" if namespace is None else f"namespace {namespace}"
            output.console(sys.stderr).print(f"No agents found in {where}.")
            return EXIT_OK
        wide = args.output == "wide"
        rows = views.agent_rows(bodies, now())
        table = output.table(
            *(("NAMESPACE",) if namespace is None else ()),
            *views.LIST_COLUMNS,
            *(views.WIDE_COLUMNS if wide else ()),
        )
        for row in rows:
            output.add_row(table, row.cells(with_namespace=namespace is None, wide=wide))
        output.print_table(output.console(), table)
        return EXIT_OK

    return run_with_client(args, command)


def describe_command(args: argparse.Namespace) -> int:
    async def command(client: KubeClient) -> int:
        namespace = namespace_of(args)
        body = await _get_agent(client, namespace, args.name)
        if args.output in ("json", "yaml"):
            output.print_document({"apiVersion": v1alpha1.API_VERSION, "kind": v1alpha1.KIND, **body}, args.output)
            return EXIT_OK
        if args.output == "name":
            print(_object_name(body))
            return EXIT_OK
        agent = _parsed(body)
        moment = now()
        out = output.console()
        output.print_lines(out, views.describe_agent(agent, moment))
        for title, columns, rows in (
            ("Permissions (declared)", ("API GROUPS", "RESOURCES", "VERBS", "NAMES"), views.permission_rows(agent)),
            ("Keys (public)", ("KEY ID", "ALGORITHM", "STATE", "CREATED", "RETIRES"), views.key_rows(agent)),
            (
                "Conditions",
                ("TYPE", "STATUS", "REASON", "MESSAGE", "GENERATION", "AGE"),
                views.condition_rows(agent, moment),
            ),
        ):
            out.print(f"\n[bold]{title}:[/bold]" + ("" if rows else " none"))
            if rows:
                table = output.table(*columns)
                for row in rows:
                    output.add_row(table, row)
                output.print_table(out, table)
        entries = views.timeline(await _events(client, namespace, args.name))[-10:]
        out.print("\n[bold]Recent events:[/bold]" + ("" if entries else " none"))
        if entries:
            _print_timeline(out, entries, agent.metadata.uid)
        return EXIT_OK

    return run_with_client(args, command)


# -- supervision and revocation ---------------------------------------------------------------------------------------


def suspend_command(args: argparse.Namespace) -> int:
    def change(agent: AgentIdentity) -> dict[str, Any] | None:
        if agent.spec.supervision.mode is SupervisionMode.SUSPENDED:
            return None
        return {
            "metadata": {"annotations": {RESUME_MODE_ANNOTATION: agent.spec.supervision.mode.value}},
            "spec": {"supervision": {"mode": SupervisionMode.SUSPENDED.value, "reason": args.reason}},
        }

    return _change(args, change, verb="suspended", wait_phase=v1alpha1.Phase.SUSPENDED)


def resume_command(args: argparse.Namespace) -> int:
    chosen: dict[str, str] = {}

    def change(agent: AgentIdentity) -> dict[str, Any] | None:
        remembered = agent.metadata.annotations.get(RESUME_MODE_ANNOTATION)
        mode = args.mode or (remembered if remembered in _RESUMABLE else SupervisionMode.SUPERVISED.value)
        chosen["mode"] = mode
        if agent.spec.supervision.mode is not SupervisionMode.SUSPENDED and args.mode is None:
            return None
        if agent.spec.supervision.mode.value == mode:
            return None
        return {
            "metadata": {"annotations": {RESUME_MODE_ANNOTATION: None}},
            "spec": {"supervision": {"mode": mode, "reason": args.reason}},
        }

    def phase() -> v1alpha1.Phase:
        return v1alpha1.Phase.ACTIVE if chosen.get("mode") == "Autonomous" else v1alpha1.Phase.SUPERVISED

    return _change(args, change, verb="resumed", wait_phase=phase)


_RESUMABLE = set(RESUMABLE_MODES)


def revoke_command(args: argparse.Namespace) -> int:
    def change(agent: AgentIdentity) -> dict[str, Any] | None:
        if agent.spec.revoked:
            return None
        return {"spec": {"revoked": True, "revocationReason": args.reason}}

    return _change(args, change, verb="revoked", wait_phase=v1alpha1.Phase.REVOKED, allow_terminal=True)


def _change(
    args: argparse.Namespace,
    change: Callable[[AgentIdentity], dict[str, Any] | None],
    *,
    verb: str,
    wait_phase: v1alpha1.Phase | Callable[[], v1alpha1.Phase],
    allow_terminal: bool = False,
) -> int:
    """Read, decide, patch with the read resourceVersion (a concurrent write is retried from fresh state)."""

    async def command(client: KubeClient) -> int:
        namespace = namespace_of(args)
        for _ in range(CONFLICT_RETRIES):
            body = await _get_agent(client, namespace, args.name)
            agent = _parsed(body)
            if agent.metadata.deletion_timestamp is not None:
                raise CommandError(f"{namespace}/{args.name} is being deleted", EXIT_TERMINAL)
            if not allow_terminal and (agent.spec.revoked or agent.status.phase.terminal):
                state = "revoked" if agent.spec.revoked else agent.status.phase.value.lower()
                raise CommandError(f"{namespace}/{args.name} is {state}: that is terminal", EXIT_TERMINAL)
            patch = change(agent)
            if patch is None:
                print(f"agentidentity {namespace}/{args.name} already {verb}")
                break
            patch.setdefault("metadata", {})["resourceVersion"] = agent.metadata.resource_version
            try:
                await client.patch(resources.AGENT_IDENTITIES, args.name, patch, namespace)
            except errors.Conflict:
                continue
            print(f"agentidentity {namespace}/{args.name} {verb}")
            break
        else:
            raise CommandError(f"{namespace}/{args.name} kept changing; try again")
        if args.wait:
            target = wait_phase() if callable(wait_phase) else wait_phase
            try:
                async with asyncio.timeout(args.timeout):
                    await _wait_for_phase(client, namespace, args.name, target)
            except TimeoutError:
                raise CommandError(
                    f"{namespace}/{args.name} did not reach {target.value} within {args.timeout:g}s"
                ) from None
        return EXIT_OK

    return run_with_client(args, command)


async def _wait_for_phase(client: KubeClient, namespace: str, name: str, phase: v1alpha1.Phase) -> None:
    """Until the operator reports ``phase`` for the current generation (Expired also ends a wait for Revoked)."""
    accepted = {phase, v1alpha1.Phase.EXPIRED} if phase is v1alpha1.Phase.REVOKED else {phase}
    while True:
        agent = _parsed(await _get_agent(client, namespace, name))
        if views.is_current(agent) and agent.status.phase in accepted:
            print(f"agentidentity {namespace}/{name} is {agent.status.phase.value}")
            return
        await asyncio.sleep(WAIT_INTERVAL)


# -- audit ----------------------------------------------------------------------------------------------------------


async def _events(client: KubeClient, namespace: str, name: str) -> list[dict[str, Any]]:
    selector = f"regarding.kind={v1alpha1.KIND},regarding.name={name}"
    page = await client.request("GET", resources.EVENTS.path(namespace), query={"fieldSelector": selector})
    items = page.get("items", [])
    return [item for item in items if isinstance(item, dict)]


def _print_timeline(out: Console, entries: Sequence[views.TimelineEntry], uid: str | None) -> None:
    table = output.table("TIME", "TYPE", "REASON", "MESSAGE")
    for row in views.timeline_rows(entries, current_uid=uid):
        output.add_row(table, row)
    output.print_table(out, table)


def audit_command(args: argparse.Namespace) -> int:
    async def command(client: KubeClient) -> int:
        namespace = namespace_of(args)
        body = await client.get(resources.AGENT_IDENTITIES, args.name, namespace)
        entries = views.timeline(await _events(client, namespace, args.name))
        if body is None and not entries:
            raise CommandError(
                f'agentidentity "{args.name}" not found in namespace "{namespace}", and no Events about it',
                EXIT_NOT_FOUND,
            )
        agent = views.parse_agent(body) if body is not None else None
        if args.output in ("json", "yaml"):
            output.print_document([entry.as_dict() for entry in entries], args.output)
            return EXIT_OK
        out = output.console()
        if agent is None:
            out.print(Text(f"{namespace}/{args.name} no longer exists; its Events remain until they expire:"))
        else:
            created = agent.status.created_by
            out.print(
                Text(
                    f"{namespace}/{args.name} (uid {agent.metadata.uid}), owner {agent.spec.owner.kind} "
                    f"{agent.spec.owner.name}" + (f", created by {created.username}" if created else "")
                )
            )
        if entries:
            _print_timeline(out, entries, agent.metadata.uid if agent else None)
        else:
            out.print("No Events (Events expire after the API server's --event-ttl, 1h by default).")
        return EXIT_OK

    return run_with_client(args, command)
