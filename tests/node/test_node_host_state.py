"""The node's footprint on the host: Pods have no way off the machine, ClusterIPs and Pod IPs route to the bridge,
and after the node stops nothing survives — no process, mount, network namespace, bridge, route, iptables chain
(IPv4 or IPv6), cgroup or changed kernel setting. Also when the node's owner was SIGKILLed: the next node cleans up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agentid.devcluster import hostnet
from agentid.devcluster import node as devnode
from agentid.devcluster.processes import pid_alive, wait_dead
from tests.node.conftest import NodeEnv, host_state, node_skip_reason, running_node
from tests.support.polling import eventually

BRIDGE = devnode.NETWORK.bridge


def _busybox_pod_and_service(env: NodeEnv) -> tuple[str, str]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": "default", "labels": {"app": "probe"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "httpd",
                    "image": env.busybox_image.name,
                    "imagePullPolicy": "Never",
                    "command": ["httpd", "-f", "-p", "8080", "-h", "/etc"],
                }
            ],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "probe", "namespace": "default"},
        "spec": {"selector": {"app": "probe"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    env.apply(pod, service)

    def pod_ip() -> str:
        body = json.loads(env.kubectl("get", "pod", "probe", "-o", "json"))
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in body["status"].get("conditions", []))
        return str(body["status"].get("podIP", "")) if ready else ""

    ip = eventually(pod_ip, timeout=60, what="busybox Pod Ready")
    return ip, env.kubectl("get", "service", "probe", "-o", "jsonpath={.spec.clusterIP}")


def test_pods_route_only_to_the_bridge_and_a_stopped_node_leaves_nothing() -> None:
    before = host_state()
    with running_node() as env:
        workdir = env.node.workdir
        pod_ip, service_ip = _busybox_pod_and_service(env)
        # On the host: a ClusterIP and a Pod IP resolve to the bridge (never the default route).
        assert hostnet.route_device(service_ip) == BRIDGE
        assert hostnet.route_device(pod_ip) == BRIDGE
        # In the Pod: routes to the pod and service ranges only; no default route, so nothing leaves the machine.
        routes = env.kubectl("exec", "probe", "--", "ip", "route").splitlines()
        assert not any(line.startswith("default") for line in routes), routes
        assert {line.split()[0] for line in routes} == {devnode.NETWORK.pod_cidr, devnode.NETWORK.service_cidr}
        # kube-proxy's rules work from a Pod (Pod -> ClusterIP -> Pod, hairpin) and logs/exec reach the kubelet.
        fetched = env.kubectl("exec", "probe", "--", "wget", "-q", "-O-", f"http://{service_ip}/hostname")
        assert fetched.strip() == "probe"
        pids = [process.pid for process in env.node.processes]
        pids += [int(path.read_text()) for path in (workdir / "containerd" / "state").rglob("shim.pid")]
        pids += sorted(hostnet.cgroup_pids(hostnet.owned_cgroups()))
        assert hostnet.owned_chains("iptables")  # the node did program rules, so their absence later means something
    assert wait_dead(pids, timeout=10) == []
    assert hostnet.mounts_under(workdir) == []
    assert not workdir.exists()
    assert hostnet.route_device(service_ip) != BRIDGE
    assert hostnet.routes_via(BRIDGE) == []
    assert host_state() == before


def _dev_up_with_node(tmp_path: Path) -> tuple[subprocess.Popen[str], list[str]]:
    """`agentid dev up --with-node` in the background, once it says it is running."""
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    up = subprocess.Popen(
        [sys.executable, "-m", "agentid", "dev", "up", "--with-node", "--workdir", str(tmp_path / "cluster")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert up.stdout is not None
    lines = []
    for line in up.stdout:
        lines.append(line)
        if line.startswith("running"):
            break
    assert any(f"node {devnode.NODE_NAME} Ready" in line for line in lines), "".join(lines)
    assert Path(f"/sys/class/net/{BRIDGE}").exists()
    return up, lines


@pytest.mark.skipif(node_skip_reason() is not None, reason=str(node_skip_reason()))
def test_ctrl_c_on_dev_up_with_node_leaves_nothing(tmp_path: Path) -> None:
    before = host_state()
    up, _ = _dev_up_with_node(tmp_path)
    up.send_signal(signal.SIGINT)
    assert up.wait(timeout=90) == 0
    assert host_state() == before


@pytest.mark.skipif(node_skip_reason() is not None, reason=str(node_skip_reason()))
def test_a_node_whose_owner_was_killed_is_cleaned_up_by_the_next_one(tmp_path: Path) -> None:
    """`agentid dev up --with-node` SIGKILLed: its shims, bridge and chains stay until the next node starts."""
    before = host_state()
    up, _ = _dev_up_with_node(tmp_path)
    up.send_signal(signal.SIGKILL)
    up.wait(timeout=30)
    assert (devnode.STATE_DIR / "node.json").exists()  # the record of what to clean
    with running_node(with_images=False):
        pass
    assert host_state() == before
    assert not any(pid_alive(pid) for pid in hostnet.cgroup_pids(hostnet.owned_cgroups()))
