"""``kubectl agentid check``: is this installation whole? One line per piece, each broken piece on its own line.

Checks, in order (a later check that depends on an earlier broken piece is skipped, and says why):

1. the two CRDs exist, are Established and serve ``v1alpha1``;
   the chart's Deployments (operator, token service) have their Pods ready, and run this CLI's version;
2. admission webhooks are configured for AgentIdentities (validating: ceilings and policies; mutating:
   attribution and the cleanup finalizer) and answer: a server-side dry-run create goes through them;
3. the token service answers discovery (directly with ``--issuer``, else through the API server's Service
   proxy) and publishes a JWKS;
4. with ``--agent``: the API server authenticates that agent's exchanged token (structured authentication is
   configured for the issuer) — a TokenRequest, an exchange and a SelfSubjectReview, nothing is stored.

Exit code 0 when nothing failed, 1 otherwise (WARN and SKIP do not fail). docs/troubleshooting.md explains each
failure line; ``-o json`` prints the findings for scripts.
"""

from __future__ import annotations

import argparse
import enum
import secrets
import ssl
import sys
import urllib.parse
from dataclasses import dataclass
from typing import Any

import aiohttp

from agentid import __version__
from agentid.api import crdgen, v1alpha1
from agentid.cli import commands, output
from agentid.cli.agents import EXIT_ERROR, EXIT_OK
from agentid.domain import claims, naming
from agentid.kube import errors, resources
from agentid.kube.client import KubeClient, load_configuration

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)
TOKEN_SERVICE_COMPONENT = "token-service"  # noqa: S105 - the chart's app.kubernetes.io/component of the token Service


class Status(enum.StrEnum):
    OK = "ok"
    FAIL = "FAIL"
    WARN = "WARN"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Finding:
    status: Status
    piece: str
    detail: str

    def line(self) -> str:
        return f"{self.status.value:<5} {self.piece}: {self.detail}"

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status.value, "piece": self.piece, "detail": self.detail}


def check_command(args: argparse.Namespace) -> int:
    async def command(client: KubeClient) -> int:
        findings = await run_checks(client, args)
        if args.output == "json":
            output.print_json([finding.as_dict() for finding in findings])
        else:
            for finding in findings:
                print(finding.line())
        failed = sum(finding.status is Status.FAIL for finding in findings)
        if failed:
            print(f"{failed} problem(s); docs/troubleshooting.md explains each line", file=sys.stderr)
            return EXIT_ERROR
        return EXIT_OK

    return commands.run_with_client(args, command, require_crds=False)


async def run_checks(client: KubeClient, args: argparse.Namespace) -> list[Finding]:
    findings = await check_crds(client)
    crds_ok = all(finding.status is Status.OK for finding in findings)
    findings += await check_deployments(client, args.operator_namespace)
    findings += await check_webhooks(client, commands.namespace_of(args), crds_ok=crds_ok)
    discovery, issuer_findings = await check_token_service(client, args)
    findings += issuer_findings
    findings.append(await check_authentication(client, args, discovery, crds_ok=crds_ok))
    return findings


# -- CRDs -----------------------------------------------------------------------------------------------------------


async def check_crds(client: KubeClient) -> list[Finding]:
    findings = []
    for definition in crdgen.DEFINITIONS:
        piece = f"CRD {definition.name}"
        crd = await client.get(resources.CUSTOM_RESOURCE_DEFINITIONS, definition.name)
        if crd is None:
            findings.append(Finding(Status.FAIL, piece, "not installed (install the chart, or `agentid crds`)"))
            continue
        conditions = {c.get("type"): c for c in (crd.get("status") or {}).get("conditions") or []}
        established = conditions.get("Established") or {}
        served = [v["name"] for v in crd["spec"].get("versions", []) if v.get("served")]
        if established.get("status") != "True":
            why = f"{established.get('reason', 'no condition yet')}: {established.get('message', '')}".rstrip(": ")
            findings.append(Finding(Status.FAIL, piece, f"not Established ({why})"))
        elif definition.version not in served:
            findings.append(Finding(Status.FAIL, piece, f"does not serve {definition.version} (serves {served})"))
        else:
            findings.append(Finding(Status.OK, piece, f"Established, serves {', '.join(served)}"))
    return findings


# -- Deployments ----------------------------------------------------------------------------------------------------

COMPONENTS = (("operator", "operator"), (TOKEN_SERVICE_COMPONENT, "token service Pods"))


async def check_deployments(client: KubeClient, namespace: str) -> list[Finding]:
    """The chart's Deployments: Pods ready, and the version this CLI was built with (docs/upgrading.md, skew)."""
    findings = []
    for component, piece in COMPONENTS:
        selector = f"app.kubernetes.io/part-of=agentid,app.kubernetes.io/component={component}"
        deployments = await client.list(resources.DEPLOYMENTS, namespace, label_selector=selector)
        if not deployments:
            findings.append(
                Finding(Status.SKIP, piece, f"no Deployment labelled {selector} in {namespace} (running elsewhere?)")
            )
        for deployment in deployments:
            findings += _deployment_findings(deployment, piece, namespace)
    return findings


def _deployment_findings(deployment: dict[str, Any], piece: str, namespace: str) -> list[Finding]:
    name = deployment["metadata"]["name"]
    wanted = int(deployment["spec"].get("replicas", 1))
    ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
    if ready < wanted:
        hint = f"`kubectl -n {namespace} describe deployment {name}` and its Pods' events say why"
        findings = [Finding(Status.FAIL, piece, f"{name}: {ready}/{wanted} Pods ready ({hint})")]
    else:
        findings = [Finding(Status.OK, piece, f"{name}: {ready}/{wanted} Pods ready")]
    running = (deployment["metadata"].get("labels") or {}).get("app.kubernetes.io/version")
    if running and running != __version__:
        findings.append(
            Finding(
                Status.WARN,
                f"{piece} version",
                f"{name} runs agentid {running}, this CLI is {__version__} (one minor release apart is supported; "
                "docs/upgrading.md)",
            )
        )
    return findings


# -- admission webhooks ---------------------------------------------------------------------------------------------


def _covers_agents(webhook: dict[str, Any]) -> bool:
    return any(
        v1alpha1.GROUP in rule.get("apiGroups", []) and v1alpha1.PLURAL in rule.get("resources", [])
        for rule in webhook.get("rules") or []
    )


async def _webhooks(client: KubeClient, resource: resources.Resource) -> list[str]:
    names = []
    for configuration in await client.list(resource):
        names += [
            f"{configuration['metadata']['name']}/{webhook['name']}"
            for webhook in configuration.get("webhooks") or []
            if _covers_agents(webhook)
        ]
    return names


async def check_webhooks(client: KubeClient, namespace: str, *, crds_ok: bool) -> list[Finding]:
    validating = await _webhooks(client, resources.VALIDATING_WEBHOOK_CONFIGURATIONS)
    mutating = await _webhooks(client, resources.MUTATING_WEBHOOK_CONFIGURATIONS)
    findings = [
        Finding(Status.OK, "validating webhook", ", ".join(validating))
        if validating
        else Finding(
            Status.FAIL,
            "validating webhook",
            "no ValidatingWebhookConfiguration covers agentidentities: requester ceilings and policies are not "
            "enforced at admission",
        ),
        Finding(Status.OK, "mutating webhook", ", ".join(mutating))
        if mutating
        else Finding(
            Status.FAIL,
            "mutating webhook",
            "no MutatingWebhookConfiguration covers agentidentities: changes are not attributed",
        ),
    ]
    if not crds_ok:
        findings.append(Finding(Status.SKIP, "webhook reachable", "the CRDs are not ready"))
    elif validating or mutating:
        findings.append(await _dry_run(client, namespace, mutating=bool(mutating)))
    return findings


async def _dry_run(client: KubeClient, namespace: str, *, mutating: bool) -> Finding:
    """A server-side dry-run create passes through every admission webhook and stores nothing."""
    piece = "webhook reachable"
    body = {
        "apiVersion": v1alpha1.API_VERSION,
        "kind": v1alpha1.KIND,
        "metadata": {"name": f"agentid-check-{secrets.token_hex(4)}", "namespace": namespace},
        "spec": {
            "purpose": "kubectl agentid check: a dry-run create, never stored",
            "owner": {"kind": "User", "name": "agentid-check"},
            "supervision": {"mode": "Suspended"},
        },
    }
    try:
        created = await client.request(
            "POST", resources.AGENT_IDENTITIES.path(namespace), body=body, query={"dryRun": "All"}
        )
    except errors.ApiError as error:
        message = output.one_line(error.message)
        if "failed calling webhook" in message or "failed to call webhook" in message:
            return Finding(Status.FAIL, piece, f"the API server cannot call it: {message}")
        if "admission webhook" in message and "denied the request" in message:
            return Finding(Status.OK, piece, f"it answered a dry-run create in {namespace} (and denied it: {message})")
        if isinstance(error, errors.Forbidden):
            return Finding(Status.SKIP, piece, f"you may not create agentidentities in {namespace}: {message}")
        return Finding(Status.FAIL, piece, f"dry-run create in {namespace} failed: {error.reason}: {message}")
    finalizers = (created.get("metadata") or {}).get("finalizers") or []
    if mutating and naming.FINALIZER not in finalizers:
        return Finding(
            Status.WARN,
            piece,
            f"a dry-run create in {namespace} was not mutated: the webhooks' namespaceSelector leaves {namespace} "
            "out (try -n with a namespace the operator watches)",
        )
    return Finding(Status.OK, piece, f"answered a dry-run create in {namespace}")


# -- token service --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Discovery:
    issuer: str
    document: dict[str, Any]
    direct: bool  # reached at --issuer (else through the API server's Service proxy)


async def check_token_service(client: KubeClient, args: argparse.Namespace) -> tuple[Discovery | None, list[Finding]]:
    piece = "token service"
    try:
        if args.issuer:
            issuer = args.issuer.rstrip("/")
            document = await _get_json(f"{issuer}/.well-known/openid-configuration", args.cacert)
            jwks = await _get_json(str(document.get("jwks_uri", "")), args.cacert)
            where, direct = issuer, True
        else:
            found = await _service_proxy(client, args.operator_namespace)
            if found is None:
                return None, [
                    Finding(
                        Status.FAIL,
                        piece,
                        f"no Service labelled app.kubernetes.io/component={TOKEN_SERVICE_COMPONENT} in namespace "
                        f"{args.operator_namespace} (tokenService.enabled=false? else pass --operator-namespace "
                        "or --issuer)",
                    )
                ]
            service, proxy = found
            document = await client.request("GET", f"{proxy}/.well-known/openid-configuration")
            jwks_path = urllib.parse.urlsplit(str(document.get("jwks_uri", ""))).path
            jwks = await client.request("GET", f"{proxy}{jwks_path}")
            where, direct = f"Service {service}", False
    except (errors.ApiError, aiohttp.ClientError, TimeoutError, ValueError, OSError) as error:
        return None, [Finding(Status.FAIL, piece, f"discovery does not answer: {output.one_line(error)}")]
    issuer = str(document.get("issuer", ""))
    if args.issuer and issuer != args.issuer.rstrip("/"):
        return None, [Finding(Status.FAIL, piece, f"discovery names issuer {issuer!r}, not {args.issuer!r}")]
    keys = jwks.get("keys") or []
    if not keys:
        return None, [Finding(Status.FAIL, piece, f"issuer {issuer}: the JWKS publishes no key")]
    detail = f"issuer {issuer} answers discovery ({where}); JWKS has {len(keys)} key(s)"
    return Discovery(issuer, document, direct), [Finding(Status.OK, piece, detail)]


async def _service_proxy(client: KubeClient, namespace: str) -> tuple[str, str] | None:
    """The token Service's name and the apiserver's proxy path to its https port."""
    selector = f"app.kubernetes.io/part-of=agentid,app.kubernetes.io/component={TOKEN_SERVICE_COMPONENT}"
    services = await client.list(resources.SERVICES, namespace, label_selector=selector)
    for service in services:
        ports = service["spec"].get("ports") or []
        port = next((p for p in ports if p.get("name") == "https"), None)
        if port is not None:
            name = service["metadata"]["name"]
            return name, resources.service_proxy_path(namespace, name, port["port"])
    return None


def _ssl(cacert: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cacert)


async def _get_json(url: str, cacert: str | None) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session,
        session.get(url, ssl=_ssl(cacert)) as response,
    ):
        response.raise_for_status()
        document = await response.json(content_type=None)
    if not isinstance(document, dict):
        raise ValueError(f"{url} did not answer a JSON object")
    return document


# -- apiserver authentication ---------------------------------------------------------------------------------------


async def check_authentication(
    client: KubeClient, args: argparse.Namespace, discovery: Discovery | None, *, crds_ok: bool
) -> Finding:
    piece = "apiserver authentication"
    if not args.agent:
        return Finding(
            Status.SKIP,
            piece,
            "not checked: pass --agent NAMESPACE/NAME (a Ready agent whose credentials.audiences include "
            f"{args.kube_audience}) and --issuer",
        )
    if discovery is None or not discovery.direct or not crds_ok:
        return Finding(Status.SKIP, piece, "needs the CRDs and a token service reachable at --issuer")
    return await _prove_authentication(client, args, discovery)


async def _prove_authentication(client: KubeClient, args: argparse.Namespace, discovery: Discovery) -> Finding:
    piece = "apiserver authentication"
    namespace, _, name = args.agent.partition("/")
    try:
        subject = await client.request(
            "POST",
            resources.SERVICE_ACCOUNTS.path(namespace, naming.service_account(name), "token"),
            body={"spec": {"audiences": [discovery.issuer], "expirationSeconds": 600}},
        )
        agent_token = await _exchange(discovery, str(subject["status"]["token"]), args)
    except errors.ApiError as error:
        return Finding(Status.FAIL, piece, f"cannot mint {args.agent}'s ServiceAccount token: {error.message}")
    except _Refused as refused:
        return Finding(Status.FAIL, piece, f"the token service refused the exchange: {refused}")
    user = await _whoami(args, agent_token)
    expected = f"agent:{namespace}:{name}"
    if user is None:
        return Finding(
            Status.FAIL,
            piece,
            f"the API server rejects agent tokens of {discovery.issuer} (401): add the issuer to its "
            "AuthenticationConfiguration (`agentid serve --print-authentication-config`), see docs/token-service.md",
        )
    if user.get("username") != expected:
        return Finding(Status.FAIL, piece, f"an agent token authenticates as {user.get('username')!r}, not {expected}")
    return Finding(Status.OK, piece, f"the API server authenticates {args.agent}'s agent token as {expected}")


class _Refused(Exception):
    pass


async def _exchange(discovery: Discovery, subject_token: str, args: argparse.Namespace) -> str:
    endpoint = str(discovery.document.get("token_endpoint") or f"{discovery.issuer}/token")
    form = {
        "grant_type": claims.GRANT_TOKEN_EXCHANGE,
        "subject_token": subject_token,
        "subject_token_type": claims.TOKEN_TYPE_JWT,
        "audience": args.kube_audience,
    }
    async with (
        aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session,
        session.post(endpoint, data=form, ssl=_ssl(args.cacert)) as response,
    ):
        body = await response.json(content_type=None)
    if response.status != 200 or not isinstance(body, dict) or "access_token" not in body:
        error = body if isinstance(body, dict) else {}
        raise _Refused(f"{response.status} {error.get('error')}: {error.get('error_description', '')}")
    return str(body["access_token"])


async def _whoami(args: argparse.Namespace, token: str) -> dict[str, Any] | None:
    """SelfSubjectReview with only this bearer token (the kubeconfig's own credentials dropped)."""
    configuration = await load_configuration(args.kubeconfig, args.context)
    configuration.cert_file = None
    configuration.key_file = None
    configuration.refresh_api_key_hook = None
    configuration.api_key = {"BearerToken": token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    as_agent = KubeClient(configuration, field_manager=commands.FIELD_MANAGER, max_in_flight=1)
    try:
        status = await as_agent.create_review(resources.SELF_SUBJECT_REVIEWS, {})
    except errors.ApiError as error:
        if error.status == 401:
            return None
        raise
    finally:
        await as_agent.close()
    user = status.get("userInfo")
    return user if isinstance(user, dict) else {}
