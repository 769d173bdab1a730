"""Fixtures for tests on a real node: a cluster with a LocalNode, the agentid image imported into it, and the Helm
chart installed with that image (operator, webhook and token service in Pods).

Node tests skip only where the host cannot run a node at all (not root, no cgroup filesystem, the node's binaries
or Debian packages missing — ``make test`` builds and installs them); the skip message says which. Each test module
gets its own cluster and node (one node per machine: the next module's starts after this one's stopped), separate
from the session cluster where the in-process operator runs: here the chart's operator owns every namespace.
SIGTERM is turned into KeyboardInterrupt while a node runs, so a terminated run still tears it down.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import yaml

from agentid.devcluster import chartrelease, hostnet, images
from agentid.devcluster import node as devnode
from agentid.devcluster.cluster import LocalCluster
from tests.support.clusters import ClusterHandle, external_kubeconfig

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TOP_LEVEL = ("/run", "/var/lib", "/var/log", "/etc", "/opt")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.node)
            item.add_marker(pytest.mark.timeout(600))  # a cold image build and a node start come first


@dataclass
class NodeEnv:
    cluster: ClusterHandle
    local: LocalCluster
    node: devnode.LocalNode
    issuer: chartrelease.Issuer  # the in-cluster token service, for kube-apiserver and Pods: a gateway forward
    agentid_image: images.ImageArchive
    busybox_image: images.ImageArchive
    timings: dict[str, float] = field(default_factory=dict)

    def kubectl(self, *args: str, input_text: str | None = None, check: bool = True) -> str:
        return self.cluster.kubectl(*args, input_text=input_text, check=check).stdout

    def apply(self, *documents: dict[str, Any]) -> None:
        self.cluster.kubectl("apply", "--server-side", "-f", "-", input_text=yaml.safe_dump_all(documents))


def host_state() -> dict[str, Any]:
    """Everything a node could leave on the host, to compare before and after."""
    return {
        "links": sorted(Path("/sys/class/net").iterdir()),
        "routes": hostnet.run("ip", "route", "show").splitlines(),
        "chains4": hostnet.owned_chains("iptables"),
        "chains6": hostnet.owned_chains("ip6tables"),
        "nft_tables": hostnet.nft_tables(),
        "cgroups": hostnet.owned_cgroups(),
        "sysctls": hostnet.read_sysctls(),
        "netns": sorted(Path("/run/netns").iterdir()) if Path("/run/netns").is_dir() else [],
        "host_paths": [path for path in devnode.HOST_PATHS if path.exists()],
        "record": (devnode.STATE_DIR / "node.json").exists(),
        "node_processes": hostnet.processes_mentioning("/agentid-node-"),
        # Whatever a component might create outside the node's folder shows up here.
        "top_level": {
            folder: sorted(set(os.listdir(folder)) - {devnode.STATE_DIR.name})  # the lock file stays, by design
            for folder in TOP_LEVEL
            if os.path.isdir(folder)
        },
    }


def node_skip_reason() -> str | None:
    if external_kubeconfig() is not None:
        return "node tests run their own embedded control plane and node (AGENTID_TEST_KUBECONFIG is set)"
    return devnode.unavailable_reason()


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (as Ctrl-C does), so fixture teardown still runs."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def running_node(*, with_images: bool = True) -> Iterator[NodeEnv]:
    """A fresh cluster prepared for a node, the node, and the images imported; everything stopped afterwards."""
    reason = node_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    timings: dict[str, float] = {}
    started = time.monotonic()
    agentid = images.agentid_image(REPO)
    busybox = images.busybox_image()
    timings["images_ready_s"] = time.monotonic() - started
    local = LocalCluster()
    issuer = chartrelease.trust_in_cluster_issuer(local)
    devnode.prepare(local)
    with sigterm_interrupts():
        node = devnode.LocalNode(local)
        try:
            started = time.monotonic()
            local.start()
            node.start()
            timings["cluster_and_node_up_s"] = time.monotonic() - started
            if with_images:
                timings["agentid_image_import_s"] = node.import_image(agentid)
                node.import_image(busybox)
            yield NodeEnv(
                cluster=ClusterHandle(kubeconfig=local.kubeconfig, local=local),
                local=local,
                node=node,
                issuer=issuer,
                agentid_image=agentid,
                busybox_image=busybox,
                timings=timings,
            )
        finally:
            node.stop()
            local.stop()


@pytest.fixture(scope="module")
def node_env() -> Iterator[NodeEnv]:
    with running_node() as env:
        yield env
