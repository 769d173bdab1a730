"""`make demo`: the agentid story on the embedded control plane, narrated step by step, finishing on its own.

1. A real control plane starts (etcd, kube-apiserver, kube-controller-manager) that trusts agentid's token
   issuer; the CRDs go in; the operator runs as a real process (`agentid run`) with its admission webhook and
   the token service embedded.
2. The example agents and policies are applied and provisioned; `kubectl agentid list` shows them.
3. An agent acts with its own identity; a human switches it to Supervised (attributed to that human) and its
   write is denied within a second; back to Autonomous it works again.
4. The identity bridge: the agent's ServiceAccount token is exchanged for an agent JWT (RFC 8693) that the
   apiserver itself accepts; a delegated token shows its `act` chain; suspension refuses the exchange at once
   and makes introspection inactive.
5. Tools enforce agent identity: an MCP server (official SDK, examples/mcp-server) admits agents by their agent
   tokens; with the official MCP client the read tool works, the write tool is refused while Supervised,
   everything is refused while Suspended, and a delegated call shows the act chain in the tool's audit.
6. A workload runs as an agent with nothing hand-written: a labelled Pod is given the agent's identity by the
   webhook; the token sidecar it gets holds a fresh agent token, removed when the agent is suspended, back on resume.
7. Guardrails: a namespace editor cannot hand an agent what a policy forbids or what they do not hold.
8. One agent is revoked: bindings, key and ServiceAccount disappear; un-revoking is refused.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import httpx2
import requests
import uvicorn
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import TextContent

from agentid.client import environment as agent_env
from agentid.devcluster import assets
from agentid.devcluster.cluster import LocalCluster
from agentid.devcluster.ports import free_port
from agentid.devcluster.processes import ManagedProcess
from agentid.domain import claims
from agentid.tokens import authnconfig
from agentid.verify import InvalidToken, JWKSCache, JWTVerifier, SignalReceiver, Verifier
from agentid.verify.introspection import ClientCredentials
from agentid.webhooks.configuration import pod_identity_configuration, webhook_configurations

REPO = Path(__file__).resolve().parent.parent
TTY = sys.stdout.isatty()
BOLD, DIM, GREEN, RED, RESET = ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m") if TTY else ("",) * 5
KUBE_AUDIENCE = authnconfig.DEFAULT_KUBE_AUDIENCE
TOKEN_NAMESPACE = "agentid-system"  # noqa: S105 - a namespace name
MCP_EXAMPLE = REPO / "examples" / "mcp-server" / "server.py"


def step(title: str) -> None:
    print(f"\n{BOLD}== {title}{RESET}", flush=True)


def say(text: str) -> None:
    print(f"   {text}", flush=True)


def show(output: str, limit: int = 40) -> None:
    lines = output.splitlines()
    for line in lines[:limit]:
        print(f"     {line}")
    if len(lines) > limit:
        print(f"     {DIM}... ({len(lines) - limit} more lines){RESET}")


def wait_until(what: str, check: Callable[[], bool], timeout: float = 60) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not within {timeout}s: {what}")
        time.sleep(0.1)
    return time.monotonic() - started


class Demo:
    def __init__(self, cluster: LocalCluster, scratch: Path) -> None:
        self.cluster = cluster
        self.scratch = scratch
        self.env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
        bin_dirs = [str(Path(sys.executable).parent)]  # kubectl-agentid (the plugin) lives next to python
        if (control_plane := assets.bin_dir_for_path()) is not None:
            bin_dirs.insert(0, str(control_plane))
        self.env["PATH"] = os.pathsep.join([*bin_dirs, self.env.get("PATH", "")])
        self.token_port = free_port()
        self.webhook_port = free_port()
        self.issuer = f"https://127.0.0.1:{self.token_port}"
        self.introspection_caller: str | None = None

    # -- running commands -----------------------------------------------------------------------------------

    def run(
        self,
        argv: list[str],
        *,
        shown: str,
        check: bool = True,
        quiet: bool = False,
        stdin: str | None = None,
        limit: int = 40,
    ) -> str:
        result = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=120, env=self.env, input=stdin
        )
        output = (result.stdout + result.stderr).strip()
        if not quiet:
            print(f"   {DIM}$ {shown}{RESET}")
            show(output, limit)
        if check and result.returncode != 0:
            raise RuntimeError(f"{shown} failed: {output}")
        return result.stdout.strip() if quiet else output

    def kubectl(self, *args: str, check: bool = True, quiet: bool = False, stdin: str | None = None) -> str:
        return self.run(["kubectl", *args], shown="kubectl " + " ".join(args), check=check, quiet=quiet, stdin=stdin)

    def agentid(self, *args: str, check: bool = True, quiet: bool = False) -> str:
        return self.run(
            [sys.executable, "-m", "agentid", *args], shown="agentid " + " ".join(args), check=check, quiet=quiet
        )

    # -- facts about agents ---------------------------------------------------------------------------------

    def agent(self, namespace: str, name: str) -> dict:
        return json.loads(self.kubectl("get", "agentid", name, "-n", namespace, "-o", "json", quiet=True))

    def phase(self, namespace: str, name: str) -> str:
        body = self.agent(namespace, name)
        status = body.get("status", {})
        current = status.get("observedGeneration") == body["metadata"]["generation"]
        return str(status.get("phase")) if current else "-"

    def token_kubeconfig(self, namespace: str, service_account: str) -> Path:
        token = self.kubectl("create", "token", service_account, "-n", namespace, "--duration=1h", quiet=True)
        return self._kubeconfig(f"{service_account}.kubeconfig", token, namespace)

    def _kubeconfig(self, filename: str, token: str, namespace: str) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "c",
                    "cluster": {"server": self.cluster.server, "certificate-authority": str(self.cluster.ca.cert_path)},
                }
            ],
            "users": [{"name": "agent", "user": {"token": token}}],
            "contexts": [{"name": "agent", "context": {"cluster": "c", "user": "agent", "namespace": namespace}}],
            "current-context": "agent",
        }
        path = self.scratch / filename
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def can(self, kubeconfig: Path, verb: str, resource: str) -> str:
        return self.run(
            ["kubectl", f"--kubeconfig={kubeconfig}", "auth", "can-i", verb, resource],
            shown="",
            check=False,
            quiet=True,
        )

    def exchange(self, subject: str, **form: str) -> requests.Response:
        data = {
            "grant_type": claims.GRANT_TOKEN_EXCHANGE,
            "subject_token": subject,
            "subject_token_type": claims.TOKEN_TYPE_JWT,
            **form,
        }
        return requests.post(f"{self.issuer}/token", data=data, verify=str(self.cluster.ca.cert_path), timeout=10)

    def subject_token(self, service_account: str, namespace: str = "finance-agents") -> str:
        """An agent's ServiceAccount token for the token service (what its workload would mount)."""
        return self.kubectl(
            "create", "token", service_account, "-n", namespace, f"--audience={self.issuer}", quiet=True
        )

    def tool_token(self, service_account: str) -> str:
        """A token of a tool's own ServiceAccount in the token service's namespace, for the issuer audience."""
        self.kubectl("create", "serviceaccount", service_account, "-n", TOKEN_NAMESPACE, check=False, quiet=True)
        return self.kubectl(
            "create", "token", service_account, "-n", TOKEN_NAMESPACE, f"--audience={self.issuer}", quiet=True
        )

    def introspect(self, token: str) -> dict:
        """RFC 7662 §2.1: the caller authenticates, here as a tool's ServiceAccount."""
        if self.introspection_caller is None:
            self.introspection_caller = self.tool_token("demo-tool")
        response = requests.post(
            f"{self.issuer}/introspect",
            data={"token": token},
            headers={"Authorization": f"Bearer {self.introspection_caller}"},
            verify=str(self.cluster.ca.cert_path),
            timeout=10,
        )
        return dict(response.json())


def configure(cluster: LocalCluster, demo: Demo) -> None:
    """Before the apiserver starts: trust the token issuer for agent tokens (structured authentication)."""
    config = authnconfig.authentication_configuration(
        demo.issuer, audiences=[KUBE_AUDIENCE], ca_pem=cluster.ca.pem.decode()
    )
    path = cluster.write_file("authentication-config.yaml", yaml.safe_dump(config, sort_keys=False))
    cluster.apiserver_args.append(f"--authentication-config={path}")


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="   %(message)s")  # in-process servers only warn (the MCP SDK)
    step("Start a real Kubernetes control plane (no Docker): etcd + kube-apiserver + kube-controller-manager")
    with tempfile.TemporaryDirectory() as scratch:
        cluster = LocalCluster()
        demo = Demo(cluster, Path(scratch))
        configure(cluster, demo)
        with cluster:
            say(
                f"API server {cluster.server}, Kubernetes {cluster.versions.kubernetes}; it trusts agent tokens "
                f"from the issuer {demo.issuer}"
            )
            say(f"export KUBECONFIG={cluster.kubeconfig}")
            operator = start_operator(demo)
            try:
                run_story(demo)
            finally:
                operator.stop()
                audit = [line for line in operator.log_path.read_text().splitlines() if line.startswith('{"time"')]
                step(f"The operator wrote {len(audit)} structured audit records (one JSON line each), e.g.:")
                for line in audit[-3:]:
                    say(line[:220])
    step("Done: every process stopped, nothing left behind")
    return 0


def start_operator(demo: Demo) -> ManagedProcess:
    cluster = demo.cluster
    step("Install the CRDs; run the operator with its admission webhook and the embedded token service")
    demo.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    demo.kubectl(
        "wait", "--for=condition=Established", "crd/agentidentities.agentid.dev", "crd/agentpolicies.agentid.dev"
    )
    demo.kubectl("create", "namespace", TOKEN_NAMESPACE, quiet=True)
    webhook = cluster.ca.serving("webhook", "127.0.0.1")
    tokens = cluster.ca.serving("token-service", "127.0.0.1")
    argv = [
        sys.executable,
        "-m",
        "agentid",
        "run",
        f"--kubeconfig={cluster.kubeconfig}",
        "--log-format=json",
        f"--webhook-port={demo.webhook_port}",
        f"--webhook-cert={webhook.cert}",
        f"--webhook-key={webhook.key}",
        f"--token-service-issuer={demo.issuer}",
        f"--token-service-port={demo.token_port}",
        f"--token-service-tls-cert={tokens.cert}",
        f"--token-service-tls-key={tokens.key}",
        f"--token-service-namespace={TOKEN_NAMESPACE}",
        f"--pod-token-issuer={demo.issuer}",
        f"--pod-token-ca={cluster.ca.cert_path}",
        "--pod-sidecar-image=localhost/agentid:demo",
    ]
    say("$ agentid run --webhook-port=... --token-service-issuer=" + demo.issuer + " ...")
    operator = ManagedProcess("operator", argv, log_path=demo.scratch / "operator.log", env=demo.env)
    base_url = f"https://127.0.0.1:{demo.webhook_port}"
    configurations = webhook_configurations(base_url=base_url, ca_bundle=cluster.ca.pem)
    not_system = {
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]
    }
    configurations.append(
        pod_identity_configuration(base_url=base_url, ca_bundle=cluster.ca.pem, namespace_selector=not_system)
    )
    demo.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(configurations))
    ca = str(cluster.ca.cert_path)

    def serving() -> bool:
        try:
            return requests.get(f"{demo.issuer}/healthz", verify=ca, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until("the token service answers", serving)
    return operator


def run_story(demo: Demo) -> None:
    lifecycle(demo)
    bridge(demo)
    shared_signals(demo)
    tools(demo)
    workload(demo)
    guardrails(demo)
    revocation(demo)
    step("How many agents each policy governs, and how many are out of its bounds")
    counted = ["get", "agentpolicies", "-o", "jsonpath={range .items[*]}{.status.agents}{' '}{end}"]
    wait_until("policy status", lambda: len(demo.kubectl(*counted, quiet=True).split()) == 2, timeout=30)
    demo.kubectl("get", "agentpolicies")
    step("What happened, as Events on the agents (the humans who decided are named)")
    demo.kubectl(
        "get",
        "events.events.k8s.io",
        "-A",
        "--field-selector",
        "reportingController=agentid.dev/operator",
        "--sort-by=.eventTime",
        "-o",
        "custom-columns=AGENT:.regarding.name,REASON:.reason,NOTE:.note",
    )


def lifecycle(demo: Demo) -> None:
    step("Apply the examples: agents in every supervision mode, a delegation pair, an expiring agent, two policies")
    demo.kubectl("apply", "-f", str(REPO / "examples"))
    demo.kubectl("wait", "--for=condition=Ready", "agentid", "--all", "-n", "finance-agents", "--timeout=60s")
    demo.kubectl("wait", "--for=condition=Ready", "agentid", "--all", "-n", "platform-agents", "--timeout=60s")
    demo.kubectl("agentid", "list", "-A")
    say("Each agent got its own ServiceAccount, signing key and RBAC, all owned by its AgentIdentity:")
    demo.kubectl("get", "sa,secret,role,rolebinding", "-n", "finance-agents", "-l", "agentid.dev/agent=invoice-triage")
    demo.kubectl("get", "agentpolicies")

    step("invoice-triage acts with its own identity (a ServiceAccount token, no human credentials)")
    agent = demo.token_kubeconfig("finance-agents", "invoice-triage-agent")
    say(
        f"can update configmaps? {GREEN}{demo.can(agent, 'update', 'configmaps')}{RESET}   "
        f"can read secrets? {RED}{demo.can(agent, 'get', 'secrets')}{RESET}"
    )

    step("carol (a human) puts the agent under supervision: writes stop within a second, reads continue")
    demo.kubectl(
        "create",
        "clusterrole",
        "agentid-author",
        "--verb=get,list,watch,patch,update",
        "--resource=agentidentities.agentid.dev",
        quiet=True,
    )
    demo.kubectl(
        "create",
        "rolebinding",
        "carol-authors",
        "-n",
        "finance-agents",
        "--clusterrole=agentid-author",
        "--user=carol@example.com",
        quiet=True,
    )
    demo.kubectl(
        "--as=carol@example.com",
        "patch",
        "agentid",
        "invoice-triage",
        "-n",
        "finance-agents",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"supervision": {"mode": "Supervised", "reason": "odd invoices today"}}}),
    )
    elapsed = wait_until("write denied", lambda: demo.can(agent, "update", "configmaps") == "no")
    say(
        f"write denied {elapsed * 1000:.0f} ms after the patch; "
        f"can list configmaps? {GREEN}{demo.can(agent, 'list', 'configmaps')}{RESET}"
    )
    wait_until("Supervised", lambda: demo.phase("finance-agents", "invoice-triage") == "Supervised")
    changed = demo.agent("finance-agents", "invoice-triage")["status"]["lastChangedBy"]
    say(f"status.lastChangedBy: {changed['username']} ({', '.join(changed['changes'])}) at {changed['time']}")

    step("Back to Autonomous: the same token may write again")
    demo.kubectl("agentid", "resume", "invoice-triage", "-n", "finance-agents", "--mode=Autonomous", "--wait")
    wait_until("write allowed", lambda: demo.can(agent, "update", "configmaps") == "yes")
    say(f"can update configmaps? {GREEN}{demo.can(agent, 'update', 'configmaps')}{RESET}")


def bridge(demo: Demo) -> None:
    step("The identity bridge: exchange the agent's ServiceAccount token for an agent JWT (RFC 8693)")
    subject = demo.kubectl(
        "create", "token", "invoice-triage-agent", "-n", "finance-agents", f"--audience={demo.issuer}", quiet=True
    )
    say("$ kubectl create token invoice-triage-agent --audience=<issuer>   # proves: I run as this ServiceAccount")
    response = demo.exchange(subject, audience=KUBE_AUDIENCE)
    jwt_token = response.json()["access_token"]
    say(f"POST {demo.issuer}/token -> {response.status_code}, expires_in {response.json()['expires_in']} s")
    demo.run(
        [
            sys.executable,
            "-m",
            "agentid",
            "verify",
            jwt_token,
            "--issuer",
            demo.issuer,
            "--cacert",
            str(demo.cluster.ca.cert_path),
        ],
        shown="agentid verify <jwt> --issuer <issuer>",
        limit=16,
    )

    step("kube-apiserver itself accepts the agent JWT: it knows which agent, whose, under what supervision")
    jwt_config = demo._kubeconfig("agent-jwt.kubeconfig", jwt_token, "finance-agents")
    whoami = ["kubectl", f"--kubeconfig={jwt_config}", "auth", "whoami"]
    wait_until(  # the apiserver fetches the issuer's discovery document and keys in the background
        "the apiserver authenticates agent tokens",
        lambda: "agent:" in demo.run(whoami, shown="", check=False, quiet=True),
        timeout=90,
    )
    demo.run(whoami, shown="kubectl auth whoami   # with the agent JWT as bearer token")
    say(f"with the agent JWT: can update configmaps? {GREEN}{demo.can(jwt_config, 'update', 'configmaps')}{RESET}")

    step("Delegation: the month-end orchestrator acts on behalf of the ledger reconciler (act chain)")
    orchestrator = demo.exchange(
        demo.kubectl(
            "create",
            "token",
            "month-end-orchestrator-agent",
            "-n",
            "finance-agents",
            f"--audience={demo.issuer}",
            quiet=True,
        )
    ).json()["access_token"]
    ledger_subject = demo.kubectl(
        "create", "token", "ledger-reconciler-agent", "-n", "finance-agents", f"--audience={demo.issuer}", quiet=True
    )
    delegated = demo.exchange(
        ledger_subject,
        audience="https://ledger.finance.example.com",
        actor_token=orchestrator,
        actor_token_type=claims.TOKEN_TYPE_JWT,
    ).json()["access_token"]
    demo.run(
        ["kubectl", "agentid", "explain-token", "-"],
        shown="kubectl agentid explain-token -   # the token on stdin",
        stdin=delegated,
    )

    step("Suspend the agent: the exchange is refused and its live token turns inactive, at once")
    before = demo.introspect(jwt_token)
    say(f"introspection before: active={before['active']}, supervision={before.get('agent', {}).get('supervision')}")
    demo.kubectl("agentid", "suspend", "invoice-triage", "-n", "finance-agents", "--reason=demo: kill switch")
    elapsed = wait_until("exchange refused", lambda: demo.exchange(subject, audience=KUBE_AUDIENCE).status_code != 200)
    refused = demo.exchange(subject, audience=KUBE_AUDIENCE)
    say(f"exchange refused {elapsed * 1000:.0f} ms after the patch: {refused.status_code} {refused.json()}")
    say(f"introspection now: {demo.introspect(jwt_token)}")
    wait_until("JWT denied", lambda: demo.can(jwt_config, "update", "configmaps") == "no")
    denied = demo.can(jwt_config, "update", "configmaps")
    say(f"the apiserver with the agent JWT: can update configmaps? {RED}{denied}{RESET}")
    demo.kubectl(
        "agentid", "resume", "invoice-triage", "-n", "finance-agents", "--mode=Autonomous", "--wait", quiet=True
    )


class ToolServer:
    """examples/mcp-server (official MCP SDK, streamable HTTP) under uvicorn in a thread, keeping its audit."""

    def __init__(self, demo: Demo, introspection_token_file: Path) -> None:
        spec = importlib.util.spec_from_file_location("invoices_mcp_example", MCP_EXAMPLE)
        if spec is None or spec.loader is None:
            raise RuntimeError(f"cannot load {MCP_EXAMPLE}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.port = free_port()
        self.resource = f"http://127.0.0.1:{self.port}/mcp"
        self.audit: list[dict[str, Any]] = []
        app, _ = module.build(
            demo.issuer,
            self.resource,
            ca_file=str(demo.cluster.ca.cert_path),
            introspection_token_file=str(introspection_token_file),
            audit_sink=self.audit.append,
        )
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, name="invoices-mcp", daemon=True)

    def __enter__(self) -> ToolServer:
        self._thread.start()
        wait_until("the MCP server listens", lambda: self._server.started, timeout=30)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._server.should_exit = True
        self._thread.join(30)


def call_tools(resource: str, token: str, calls: list[tuple[str, dict[str, str]]]) -> list[str]:
    """An agent calls the tools with the official MCP client over streamable HTTP; one line per call."""

    async def session() -> list[str]:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        lines = []
        async with http, Client(streamable_http_client(resource, http_client=http)) as client:
            for name, arguments in calls:
                result = await client.call_tool(name, arguments)
                text = " ".join("".join(b.text for b in result.content if isinstance(b, TextContent)).split())
                mark = f"{RED}refused{RESET}" if result.is_error else f"{GREEN}ok{RESET}"
                lines.append(f"{name}: {mark}  {text[:110]}")
        return lines

    outcome: list[str] = []
    try:
        outcome = asyncio.run(session())
    except* MCPError:
        outcome = [f"{RED}refused before any tool ran{RESET}: the MCP server answered 401 (the token is inactive)"]
    return outcome


def shared_signals(demo: Demo) -> None:
    step("Shared Signals: a tool verifying offline (JWKS only) refuses a suspended agent within a second")
    say("the tool subscribes to the token service's SSF stream (RFC 8936 long poll, SETs signed by the issuer)")
    demo.kubectl("create", "serviceaccount", "demo-signals", "-n", TOKEN_NAMESPACE, check=False, quiet=True)
    demo.kubectl(
        "create", "clusterrole", "agentid-demo-signals", "--verb=list,watch", "--resource=agentidentities.agentid.dev",
        check=False, quiet=True,
    )  # fmt: skip
    demo.kubectl(
        "create", "clusterrolebinding", "agentid-demo-signals", "--clusterrole=agentid-demo-signals",
        f"--serviceaccount={TOKEN_NAMESPACE}:demo-signals", check=False, quiet=True,
    )  # fmt: skip
    caller = demo.tool_token("demo-signals")
    token = demo.exchange(demo.subject_token("invoice-triage-agent"), audience=KUBE_AUDIENCE).json()["access_token"]
    for line in asyncio.run(_offline_verifier_story(demo, caller, token)):
        say(line)


async def _offline_verifier_story(demo: Demo, caller: str, token: str) -> list[str]:
    lines: list[str] = []
    context = ssl.create_default_context(cafile=str(demo.cluster.ca.cert_path))
    async with httpx.AsyncClient(verify=context, trust_env=False, timeout=10) as http:
        keys = JWKSCache(demo.issuer, http=http)
        credentials = ClientCredentials(headers={"Authorization": f"Bearer {caller}"}, form={})
        receiver = SignalReceiver(demo.issuer, http=http, keys=keys, credentials=lambda: credentials, name="demo")
        listening = asyncio.create_task(receiver.run())
        async with asyncio.timeout(30):
            await receiver.connected.wait()
        local = JWTVerifier(issuer=demo.issuer, audience=KUBE_AUDIENCE, keys=keys)
        guarded, offline = Verifier(jwt=local, signals=receiver), Verifier(jwt=local)

        async def verdict(verifier: Verifier) -> str:
            try:
                principal = await verifier.verify(token)
            except InvalidToken as invalid:
                return f"{RED}refused{RESET} ({invalid.reason})"
            left = principal.expires_at - time.time()
            return f"{GREEN}accepted{RESET} ({principal.supervision.value}, expires in {left:.0f} s)"

        async def until(word: str, within: float) -> None:
            deadline = time.perf_counter() + within
            while time.perf_counter() < deadline:
                if word in await verdict(guarded):
                    return
                await asyncio.sleep(0.001)

        lines.append(f"before: with the receiver {await verdict(guarded)}; JWKS only {await verdict(offline)}")
        await asyncio.to_thread(
            demo.kubectl, "agentid", "suspend", "invoice-triage", "-n", "finance-agents", "--reason=demo: signals"
        )
        started = time.perf_counter()  # the suspension is in the apiserver once the command returns
        await until("refused", 10)
        elapsed = time.perf_counter() - started
        lines.append(
            f"kubectl agentid suspend → the offline verifier refuses {elapsed * 1000:.0f} ms after it returned"
        )
        lines.append(f"  with the receiver: {await verdict(guarded)}")
        lines.append(f"  JWKS only (no receiver): {await verdict(offline)}   # until the token expires")
        await asyncio.to_thread(
            demo.kubectl, "agentid", "resume", "invoice-triage", "-n", "finance-agents", "--mode=Autonomous", "--wait"
        )
        await until("accepted", 30)
        listening.cancel()
        lines.append(f"after kubectl agentid resume: with the receiver {await verdict(guarded)}")
    return lines


def tools(demo: Demo) -> None:
    step("Tools enforce agent identity: an MCP server (official SDK) admits agents by their agent tokens")
    token_file = demo.scratch / "invoices-mcp.token"
    token_file.write_text(demo.tool_token("invoices-mcp"))  # the tool's own ServiceAccount, for introspection
    with ToolServer(demo, token_file) as server:
        say(f"examples/mcp-server at {server.resource}: read tools for Autonomous and Supervised agents,")
        say("approve_payment for Autonomous agents of cost center 4711; live supervision via introspection (5 s cache)")
        for agent in ("invoice-triage", "ledger-reconciler"):
            patch = [{"op": "add", "path": "/spec/credentials/audiences/-", "value": server.resource}]
            demo.kubectl("patch", "agentid", agent, "-n", "finance-agents", "--type=json", "-p", json.dumps(patch))
        subject = demo.subject_token("invoice-triage-agent")
        wait_until(
            "the token service sees the new audience",
            lambda: demo.exchange(subject, resource=server.resource).status_code == 200,
            timeout=30,
        )
        token = demo.exchange(subject, resource=server.resource).json()["access_token"]
        say("POST /token with resource=<the MCP server> (RFC 8707): a token for exactly that one tool")
        calls = [("read_invoice", {"invoice_id": "INV-1"}), ("approve_payment", {"invoice_id": "INV-1"})]
        for line in call_tools(server.resource, token, calls):
            say(line)

        demo.kubectl(
            "--as=carol@example.com", "patch", "agentid", "invoice-triage", "-n", "finance-agents", "--type=merge",
            "-p", json.dumps({"spec": {"supervision": {"mode": "Supervised", "reason": "odd invoices today"}}}),
        )  # fmt: skip
        say("carol puts invoice-triage under supervision; the same token, a few seconds later:")
        wait_until(
            "the write tool refused",
            lambda: "refused" in call_tools(server.resource, token, calls[1:])[0],
            timeout=30,
        )
        for line in call_tools(server.resource, token, calls):
            say(line)

        demo.kubectl("agentid", "suspend", "invoice-triage", "-n", "finance-agents", "--reason=demo: kill switch")
        wait_until(
            "everything refused",
            lambda: "before any tool" in call_tools(server.resource, token, calls[:1])[0],
            timeout=30,
        )
        for line in call_tools(server.resource, token, calls):
            say(line)
        demo.kubectl(
            "agentid", "resume", "invoice-triage", "-n", "finance-agents", "--mode=Autonomous", "--wait", quiet=True
        )

        step("A delegated call: the month-end orchestrator reads an invoice on behalf of the ledger reconciler")
        orchestrator = demo.exchange(demo.subject_token("month-end-orchestrator-agent")).json()["access_token"]
        ledger = demo.subject_token("ledger-reconciler-agent")
        delegated = demo.exchange(
            ledger, resource=server.resource, actor_token=orchestrator, actor_token_type=claims.TOKEN_TYPE_JWT
        ).json()["access_token"]
        for line in call_tools(server.resource, delegated, calls):
            say(line)
        say(
            "The tool's audit (one JSON record per decision; agent, owner, supervision, act chain, jti, never a token):"
        )
        for record in server.audit[-2:]:
            shown = {key: record[key] for key in ("tool", "decision", "reason", "agent", "owner", "supervision")}
            say(json.dumps(shown | {"act_chain": record["act_chain"], "jti": record["jti"]}))


def workload(demo: Demo) -> None:
    step("A workload runs as the agent with nothing hand-written: its Pods carry the label agentid.dev/agent")
    deployment = yaml.safe_load((REPO / "examples" / "invoice-triage-workload.yaml").read_text())
    template = deployment["spec"]["template"]
    say(f"examples/invoice-triage-workload.yaml: labels {template['metadata']['labels']}")
    say(f"annotations {template['metadata']['annotations']}")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "generateName": "invoice-triage-"},
        "spec": template["spec"],
    }
    created = demo.kubectl(
        "create", "-n", "finance-agents", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(pod), quiet=True
    )
    spec = json.loads(created)["spec"]
    say("$ kubectl create --dry-run=server -f <the Pod of that template>   # what the webhook made of it:")
    sidecar = spec["initContainers"][0]
    app = spec["containers"][0]
    show(
        "\n".join(
            [
                f"serviceAccountName: {spec['serviceAccountName']}, automountServiceAccountToken: "
                f"{spec['automountServiceAccountToken']}",
                f"volumes: {', '.join(volume['name'] for volume in spec['volumes'])}",
                f"init container {sidecar['name']} (restartPolicy {sidecar['restartPolicy']}): {sidecar['args']}",
                f"container {app['name']} mounts: {', '.join(m['mountPath'] for m in app['volumeMounts'])}",
                f"container {app['name']} env: {', '.join(variable['name'] for variable in app['env'])}",
            ]
        )
    )

    step("The token sidecar, run as the kubelet would run it: a fresh agent token per audience, in a file")
    folder = demo.scratch / "pod"
    tokens = folder / "tokens"
    tokens.mkdir(parents=True)
    projected = demo.kubectl(
        "create", "token", spec["serviceAccountName"], "-n", "finance-agents", f"--audience={demo.issuer}", quiet=True
    )
    (folder / "token").write_text(projected)  # what the projected volume would hold
    environment = {variable["name"]: variable["value"] for variable in sidecar["env"]}
    environment |= {
        agent_env.SA_TOKEN_FILE: str(folder / "token"),
        agent_env.CA_FILE: str(demo.cluster.ca.cert_path),
        agent_env.TOKENS_DIR: str(tokens),
        agent_env.HEALTH_PORT: str(free_port()),
    }
    argv = [sys.executable, "-m", "agentid", "token-agent", "--health-host=127.0.0.1"]
    process = ManagedProcess("token-agent", argv, log_path=folder / "sidecar.log", env={**demo.env, **environment})
    try:
        token_file = tokens / agent_env.token_file_name(environment[agent_env.AUDIENCES].split(",")[0])
        wait_until("the first token file", token_file.exists, timeout=30)
        say(f"$ ls $AGENTID_TOKENS_DIR: {', '.join(sorted(path.name for path in tokens.iterdir()))}")
        demo.kubectl("agentid", "suspend", "invoice-triage", "-n", "finance-agents", "--reason=demo: sidecar")
        elapsed = wait_until("token file removed", lambda: not token_file.exists(), timeout=30)

        def sidecar_state() -> str:
            return str(json.loads((tokens / agent_env.STATUS_FILE).read_text()).get("state"))

        # Introspection going inactive removes the files first; the exchange that follows says why, in the status.
        wait_until("the sidecar's status says why", lambda: sidecar_state() == "suspended", timeout=30)
        say(f"token file removed {elapsed * 1000:.0f} ms after the suspension; the sidecar's status: {sidecar_state()}")
        demo.kubectl(
            "agentid", "resume", "invoice-triage", "-n", "finance-agents", "--mode=Autonomous", "--wait", quiet=True
        )
        elapsed = wait_until("token file back", token_file.exists, timeout=30)
        say(f"resumed: the token file is back {elapsed * 1000:.0f} ms after the resume was reconciled")
    finally:
        process.stop()


def guardrails(demo: Demo) -> None:
    step("Guardrails: dave may edit finance-agents, but may not hand an agent more than he holds or policy allows")
    demo.kubectl(
        "create",
        "rolebinding",
        "dave-edit",
        "-n",
        "finance-agents",
        "--clusterrole=edit",
        "--user=dave@example.com",
        quiet=True,
    )
    demo.kubectl(
        "create",
        "rolebinding",
        "dave-authors",
        "-n",
        "finance-agents",
        "--clusterrole=agentid-author",
        "--user=dave@example.com",
        quiet=True,
    )
    demo.kubectl(
        "create",
        "clusterrole",
        "agentid-creator",
        "--verb=create",
        "--resource=agentidentities.agentid.dev",
        quiet=True,
    )
    demo.kubectl(
        "create",
        "rolebinding",
        "dave-creates",
        "-n",
        "finance-agents",
        "--clusterrole=agentid-creator",
        "--user=dave@example.com",
        quiet=True,
    )
    greedy = {
        "apiVersion": "agentid.dev/v1alpha1",
        "kind": "AgentIdentity",
        "metadata": {"name": "greedy", "namespace": "finance-agents"},
        "spec": {
            "purpose": "wants everything",
            "owner": {"name": "dave@example.com"},
            "permissions": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
        },
    }
    demo.kubectl("--as=dave@example.com", "create", "-f", "-", stdin=json.dumps(greedy), check=False)
    greedy["spec"]["permissions"] = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "update"]}]
    greedy["spec"]["owner"] = {"name": "carol@example.com"}
    greedy["spec"]["supervision"] = {"mode": "Autonomous"}
    greedy["spec"]["expiresAt"] = "2030-01-01T00:00:00Z"
    say("dave holds configmap writes himself, but the owner ceiling checks the agent's owner carol, who only reads:")
    demo.kubectl("--as=dave@example.com", "create", "-f", "-", stdin=json.dumps(greedy), check=False)


def revocation(demo: Demo) -> None:
    step("Revoke code-reviewer: bindings first, then its key, then its ServiceAccount")
    reviewer = demo.token_kubeconfig("platform-agents", "code-reviewer-agent")
    demo.kubectl("agentid", "revoke", "code-reviewer", "-n", "platform-agents", "--reason=leaked its prompt")
    elapsed = wait_until("reviewer denied", lambda: demo.can(reviewer, "list", "deployments") != "yes")
    say(f"access gone {elapsed * 1000:.0f} ms after the command")
    wait_until("Revoked", lambda: demo.phase("platform-agents", "code-reviewer") == "Revoked")
    demo.kubectl("get", "agentid", "code-reviewer", "-n", "platform-agents")
    demo.kubectl("get", "sa,secret,role,rolebinding", "-n", "platform-agents", "-l", "agentid.dev/agent=code-reviewer")
    status = demo.agent("platform-agents", "code-reviewer")["status"]
    say(f"revokedKeyIDs: {status['revokedKeyIDs']}, reason: {status['revocationReason']}")
    say("Un-revoking is refused by the API server itself:")
    demo.kubectl(
        "patch",
        "agentid",
        "code-reviewer",
        "-n",
        "platform-agents",
        "--type=merge",
        "-p",
        '{"spec":{"revoked":false}}',
        check=False,
    )
    demo.kubectl("agentid", "audit", "code-reviewer", "-n", "platform-agents")


if __name__ == "__main__":
    sys.exit(main())
