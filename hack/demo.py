"""`make demo`: the agentid story on the embedded control plane, narrated step by step, finishing on its own.

1. a real control plane starts (etcd, kube-apiserver, kube-controller-manager), the CRD is installed and the
   operator runs (`agentid run`, a real process);
2. three example agents are applied (Autonomous, Supervised, Suspended) and provisioned;
3. an agent acts with its own ServiceAccount token; a human switches it to Supervised and its write is denied
   within a second; back to Autonomous it works again;
4. one agent is revoked: its bindings, key and ServiceAccount disappear and its token stops working.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from agentid.devcluster import assets
from agentid.devcluster.cluster import LocalCluster
from agentid.devcluster.processes import ManagedProcess

REPO = Path(__file__).resolve().parent.parent
BOLD, DIM, GREEN, RED, RESET = (
    ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m") if sys.stdout.isatty() else ("",) * 5
)


def step(title: str) -> None:
    print(f"\n{BOLD}== {title}{RESET}", flush=True)


def say(text: str) -> None:
    print(f"   {text}", flush=True)


class Demo:
    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.kubectl_path = str(assets.find_binary("kubectl"))

    def kubectl(self, *args: str, kubeconfig: Path | None = None, check: bool = True, show: bool = True) -> str:
        command = [self.kubectl_path, f"--kubeconfig={kubeconfig or self.cluster.kubeconfig}", *args]
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        output = (result.stdout + result.stderr).strip()
        if show:
            print(f"   {DIM}$ kubectl {' '.join(args)}{RESET}")
            for line in output.splitlines():
                print(f"     {line}")
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {output}")
        return output

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float = 60) -> float:
        started = time.monotonic()
        while not check():
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"not within {timeout}s: {what}")
            time.sleep(0.1)
        return time.monotonic() - started

    def agent(self, namespace: str, name: str) -> dict:
        return json.loads(self.kubectl("get", "agentid", name, "-n", namespace, "-o", "json", show=False))

    def phase(self, namespace: str, name: str) -> str:
        body = self.agent(namespace, name)
        status = body.get("status", {})
        current = status.get("observedGeneration") == body["metadata"]["generation"]
        return str(status.get("phase")) if current else "-"

    def token_kubeconfig(self, namespace: str, service_account: str) -> Path:
        token = self.kubectl("create", "token", service_account, "-n", namespace, "--duration=1h", show=False)
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
        path = self.cluster.workdir / f"{service_account}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def can(self, kubeconfig: Path, verb: str, resource: str) -> str:
        return self.kubectl("auth", "can-i", verb, resource, kubeconfig=kubeconfig, check=False, show=False)


def main() -> int:
    step("Start a real Kubernetes control plane (no Docker): etcd + kube-apiserver + kube-controller-manager")
    with LocalCluster() as cluster, tempfile.TemporaryDirectory() as scratch:
        demo = Demo(cluster)
        say(f"API server {cluster.server}, Kubernetes {cluster.versions.kubernetes}")
        say(f"export KUBECONFIG={cluster.kubeconfig}")

        step("Install the AgentIdentity CRD and start the operator (agentid run)")
        demo.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        demo.kubectl("wait", "--for=condition=Established", "crd/agentidentities.agentid.dev")
        log = Path(scratch) / "operator.log"
        operator = ManagedProcess(
            "operator",
            [sys.executable, "-m", "agentid", "run", f"--kubeconfig={cluster.kubeconfig}", "--log-format=json"],
            log_path=log,
            env=dict(os.environ),
        )
        try:
            run_story(demo)
        finally:
            operator.stop()
            audit = [line for line in log.read_text().splitlines() if '"audit"' in line]
            step(f"The operator wrote {len(audit)} structured audit records, e.g.:")
            for line in audit[:3]:
                say(line[:200])
    step("Done: every process stopped, nothing left behind")
    return 0


def run_story(demo: Demo) -> None:
    step("Apply the example agents: one Autonomous, one Supervised, one Suspended")
    demo.kubectl("apply", "-f", str(REPO / "examples"))
    for namespace, name in (
        ("finance-agents", "invoice-triage"),
        ("platform-agents", "code-reviewer"),
        ("platform-agents", "incident-bot"),
    ):
        demo.wait_until(f"{name} provisioned", lambda ns=namespace, n=name: demo.phase(ns, n) not in ("-", "None"))
    demo.kubectl("wait", "--for=condition=Ready", "agentid", "--all", "-A", "--timeout=60s")
    demo.kubectl("get", "agentid", "-A")
    say("Each agent got its own ServiceAccount, signing key and RBAC, all owned by the AgentIdentity:")
    demo.kubectl("get", "sa,secret,role,rolebinding", "-n", "finance-agents", "-l", "agentid.dev/agent=invoice-triage")

    step("invoice-triage acts with its own identity (a ServiceAccount token, no human credentials)")
    agent_config = demo.token_kubeconfig("finance-agents", "invoice-triage-agent")
    say(
        f"can update configmaps? {GREEN}{demo.can(agent_config, 'update', 'configmaps')}{RESET}   "
        f"can read secrets? {RED}{demo.can(agent_config, 'get', 'secrets')}{RESET}"
    )

    step("A human puts the agent under supervision: writes stop within a second, reads continue")
    demo.kubectl(
        "patch",
        "agentid",
        "invoice-triage",
        "-n",
        "finance-agents",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"supervision": {"mode": "Supervised", "reason": "odd invoices today"}}}),
    )
    elapsed = demo.wait_until("write denied", lambda: demo.can(agent_config, "update", "configmaps") == "no")
    say(
        f"write denied {elapsed * 1000:.0f} ms after the patch; "
        f"can list configmaps? {GREEN}{demo.can(agent_config, 'list', 'configmaps')}{RESET}"
    )
    demo.kubectl("get", "agentid", "invoice-triage", "-n", "finance-agents")

    step("Back to Autonomous: the same token may write again")
    demo.kubectl(
        "patch",
        "agentid",
        "invoice-triage",
        "-n",
        "finance-agents",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"supervision": {"mode": "Autonomous", "reason": "reviewed"}}}),
    )
    demo.wait_until("write allowed", lambda: demo.can(agent_config, "update", "configmaps") == "yes")
    say(f"can update configmaps? {GREEN}{demo.can(agent_config, 'update', 'configmaps')}{RESET}")

    step("Revoke code-reviewer: bindings first, then its key, then its ServiceAccount")
    reviewer_config = demo.token_kubeconfig("platform-agents", "code-reviewer-agent")
    demo.kubectl(
        "patch",
        "agentid",
        "code-reviewer",
        "-n",
        "platform-agents",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"revoked": True, "revocationReason": "leaked its prompt"}}),
    )
    elapsed = demo.wait_until("reviewer denied", lambda: demo.can(reviewer_config, "list", "deployments") != "yes")
    say(f"access gone {elapsed * 1000:.0f} ms after the patch")
    demo.wait_until("Revoked", lambda: demo.phase("platform-agents", "code-reviewer") == "Revoked")
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

    step("What happened, as Events on the agents")
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


if __name__ == "__main__":
    sys.exit(main())
