"""`make demo` where a node can run (root): the agentid story with everything in Pods.

1. A control plane and a node start (containerd, kubelet, kube-proxy, scheduler); the agentid image, built
   without Docker, is imported into the node.
2. `helm install` of the chart: the operator (with its admission webhook) and the token service run in Pods.
3. The example agents are applied; the operator in its Pod provisions them.
4. A workload Pod runs as the invoice-triage agent: it exchanges its projected ServiceAccount token at the
   in-cluster token service (RFC 8693) and calls kube-apiserver with the agent JWT.
5. `kubectl agentid suspend`: the token it holds stops working and a new exchange is refused; `resume` restores it.
6. `helm uninstall` and the documented cleanup; the node stops and leaves nothing on the host.

Where no node can run, `make demo` tells the in-process story instead (hack/demo.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from agentid.devcluster import chartrelease, images
from agentid.devcluster import node as devnode
from agentid.devcluster.cluster import LocalCluster

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "agentid-operator"
RELEASE = chartrelease.Release(name="agentid", namespace="agentid-system")
AGENT, AGENT_NAMESPACE = "invoice-triage", "finance-agents"
TTY = sys.stdout.isatty()
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if TTY else ("",) * 3


def step(text: str) -> None:
    print(f"\n{BOLD}== {text}{RESET}", flush=True)


def say(text: str) -> None:
    print(f"   {text}", flush=True)


def shown(text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"   {DIM}{line}{RESET}", flush=True)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: {what} not within {timeout:.0f}s")
        time.sleep(0.5)


def main() -> int:
    reason = devnode.unavailable_reason()
    if reason is not None:
        print(f"no node here ({reason}); telling the in-process story instead", flush=True)
        return subprocess.call([sys.executable, str(REPO / "hack" / "demo.py")])
    step("Build the agentid image without Docker (mmdebstrap + umoci + skopeo; cached by its inputs)")
    started = time.monotonic()
    image = images.agentid_image(REPO)
    say(f"{image.name} ({image.path.stat().st_size >> 20} MiB) in {time.monotonic() - started:.0f}s")
    cluster = LocalCluster()
    issuer = chartrelease.trust_in_cluster_issuer(cluster)
    devnode.prepare(cluster)
    step("Start a control plane and a node: containerd + runc + CNI bridge, kubelet, kube-proxy, scheduler")
    with cluster, devnode.LocalNode(cluster) as node:
        say(f"node {node.name} Ready in {node.timings['up']:.1f}s; Pods on {node.network.bridge} "
            f"({node.network.pod_cidr}), no route off the machine")  # fmt: skip
        say(f"image imported in {node.import_image(image):.1f}s")
        say(f"export KUBECONFIG={cluster.kubeconfig}")
        story(node, image, issuer)
        step("Uninstall: agents first, then the release, the CRDs and the namespace (docs/helm.md)")
        node.kubectl("delete", "agentidentities", "--all", "-A", "--wait=true", "--timeout=120s")
        chartrelease.helm(cluster, "uninstall", RELEASE.name, "-n", RELEASE.namespace, "--wait")
        node.kubectl("delete", "-f", str(CHART / "crds"), "--wait=true")
        node.kubectl("delete", "namespace", RELEASE.namespace, "--wait=true", "--timeout=120s")
        shown(node.kubectl("get", "pods", "-A").stdout + node.kubectl("get", "pods", "-A").stderr)
    step("Done: the node stopped and left nothing on the host (processes, mounts, bridge, iptables, cgroups)")
    return 0


def story(node: devnode.LocalNode, image: images.ImageArchive, issuer: chartrelease.Issuer) -> None:
    step("helm install the chart with that image: operator, webhook and token service in Pods")
    values = chartrelease.values(image, issuer)
    took = chartrelease.install(node, CHART, RELEASE, values, issuer)
    say(f"$ helm install {RELEASE.name} charts/agentid-operator --set image.repository={image.repository} ...")
    say(f"installed and every Pod Ready in {took:.0f}s")
    shown(node.kubectl("get", "pods", "-n", RELEASE.namespace, "-o", "wide").stdout)

    step("Apply the example agents; the operator in its Pod provisions them (the webhook in the Pod admits them)")
    documents = [
        doc
        for path in sorted((REPO / "examples").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["kind"] != "Deployment"  # the example workload names registry images; ours comes next
    ]
    node.kubectl("apply", "--server-side", "-f", "-", input_text=yaml.safe_dump_all(documents))
    node.kubectl("wait", "--for=condition=Ready", "agentidentities", "--all", "-A", "--timeout=120s")
    shown(agentid(node, "list", "-A"))

    step(f"A workload Pod runs as the {AGENT} agent and calls kube-apiserver with an agent token")
    pod = chartrelease.agent_workload_pod(image, issuer, AGENT_NAMESPACE, f"{AGENT}-agent")
    node.kubectl("apply", "--server-side", "-f", "-", input_text=json.dumps(pod))
    node.kubectl("wait", "--for=condition=Ready", f"pod/{chartrelease.WORKLOAD_POD}", "-n", AGENT_NAMESPACE,
                 "--timeout=60s")  # fmt: skip
    say("in the Pod: projected ServiceAccount token -> RFC 8693 exchange at the token service -> GET configmaps")
    # kube-apiserver loads the new issuer's keys on its own schedule (retrying with a backoff) once the release runs.
    wait_for(lambda: in_pod(node, "exchange").get("apiserver") == 200, "the apiserver accepting agent tokens", 90)
    shown(json.dumps(in_pod(node, "exchange")))

    step(f"kubectl agentid suspend {AGENT}: the token it holds stops working, a new exchange is refused")
    shown(agentid(node, "suspend", AGENT, "-n", AGENT_NAMESPACE, "--reason", "demo", "--wait"))
    wait_for(lambda: in_pod(node, "call").get("apiserver") in (401, 403), "the held token denied", 30)
    shown(json.dumps(in_pod(node, "call")))
    shown(json.dumps(in_pod(node, "exchange")))

    step(f"kubectl agentid resume {AGENT}: it works again")
    shown(agentid(node, "resume", AGENT, "-n", AGENT_NAMESPACE, "--wait"))
    wait_for(lambda: in_pod(node, "exchange").get("apiserver") == 200, "access after resume", 30)
    shown(json.dumps(in_pod(node, "exchange")))
    node.kubectl("delete", "pod", chartrelease.WORKLOAD_POD, "-n", AGENT_NAMESPACE, "--wait=true")


def in_pod(node: devnode.LocalNode, mode: str) -> dict[str, object]:
    exec_ = ["exec", chartrelease.WORKLOAD_POD, "-n", AGENT_NAMESPACE, "--", "python", "-c"]
    output = node.kubectl(*exec_, chartrelease.WORKLOAD_SCRIPT, mode).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def agentid(node: devnode.LocalNode, *args: str) -> str:
    env = {**os.environ, "KUBECONFIG": str(node.cluster.kubeconfig)}
    done = subprocess.run([sys.executable, "-m", "agentid", *args], capture_output=True, text=True, env=env, check=True)
    return done.stdout


if __name__ == "__main__":
    sys.exit(main())
