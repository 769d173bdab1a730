"""``agentid dev up|down|env``: a local control plane for trying agentid without a cluster.

``up`` stays in the foreground until Ctrl-C (or ``agentid dev down`` from another shell) and records what it
started in a state file, so ``down`` can stop it and ``env`` can print the shell exports again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentid.devcluster import node as devnode


def state_file() -> Path:
    root = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(root) / "agentid" / "dev-cluster.json"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = subparsers.add_parser("dev", help="run a local Kubernetes control plane (etcd, apiserver, controllers)")
    actions = dev.add_subparsers(dest="dev_command", required=True)
    up = actions.add_parser("up", help="start it and stay in the foreground until Ctrl-C")
    up.add_argument("--workdir", type=Path, help="folder for PKI, kubeconfig and logs (default: a new temp dir)")
    up.add_argument(
        "--with-node",
        action="store_true",
        help="also run a node (containerd, kubelet, kube-proxy, scheduler; needs root) so Pods and charts run",
    )
    up.set_defaults(func=up_command)
    down = actions.add_parser("down", help="stop the cluster started by `agentid dev up`")
    down.set_defaults(func=down_command)
    env = actions.add_parser("env", help="print the shell exports for the running dev cluster")
    env.set_defaults(func=env_command)


def _exports(kubeconfig: str) -> str:
    from agentid.devcluster import assets  # imported by the commands: `agentid --help` stays fast

    lines = [f"export KUBECONFIG={kubeconfig}"]
    bin_dir = assets.bin_dir_for_path()
    if bin_dir is not None:
        lines.append(f'export PATH="{bin_dir}:$PATH"')
    return "\n".join(lines)


def up_command(args: argparse.Namespace) -> int:
    from agentid.devcluster import images
    from agentid.devcluster import node as devnode
    from agentid.devcluster.cluster import LocalCluster
    from agentid.devcluster.processes import pid_alive

    path = state_file()
    if path.exists():
        previous = json.loads(path.read_text())
        if pid_alive(int(previous.get("pid", 0))):
            print(f"a dev cluster is already running (pid {previous['pid']}); `agentid dev down` stops it")
            return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    cluster = LocalCluster(workdir=args.workdir)
    node: devnode.LocalNode | None = None
    if args.with_node:
        reason = devnode.unavailable_reason()
        if reason is not None:
            print(f"cannot run a node here: {reason}")
            return 1
        devnode.prepare(cluster)
    print(f"starting Kubernetes {cluster.versions.kubernetes} in {cluster.workdir} ...", flush=True)
    cluster.start()
    try:
        described = cluster.describe()
        if args.with_node:
            node = devnode.LocalNode(cluster, log=print).start()
            node.import_image(images.busybox_image())
            described["node"] = node.describe()
            print(
                f"node {node.name} Ready in {node.timings['up']:.1f}s (bridge {node.network.bridge}, "
                f"pods {node.network.pod_cidr}); images: {images.BUSYBOX_NAME} (`make image` adds the agentid image)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**described, "pid": os.getpid()}, indent=2))
        print(f"API server: {cluster.server}")
        print(f"kubeconfig: {cluster.kubeconfig}")
        print(_exports(str(cluster.kubeconfig)))
        print("running; Ctrl-C (or `agentid dev down`) stops it", flush=True)
        stop.wait()
    finally:
        print("stopping ...", flush=True)
        if node is not None:
            node.stop()
        cluster.stop()
        path.unlink(missing_ok=True)
    return 0


def down_command(args: argparse.Namespace) -> int:
    from agentid.devcluster import node as devnode
    from agentid.devcluster.processes import pid_alive, wait_dead

    path = state_file()
    if not path.exists():
        print("no dev cluster is running")
        return 0
    state = json.loads(path.read_text())
    owner = int(state.get("pid", 0))
    if pid_alive(owner):
        os.kill(owner, signal.SIGTERM)  # `up` stops its own processes and removes the state file
        # A node drains its Pods first, through the apiserver: give `up` the time before stopping anything.
        wait_dead([owner], timeout=90 if "node" in state else 20)
    for pid in state.get("pids", []):  # and if `up` died without cleaning up, stop the groups it started
        if pid_alive(int(pid)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGTERM)
    left = wait_dead([owner, *map(int, state.get("pids", []))], timeout=20)
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    if "node" in state:  # `up` was killed before it could take its node down: do it here
        devnode.clean_stale_node()
    print("dev cluster stopped")
    return 0


def env_command(args: argparse.Namespace) -> int:
    path = state_file()
    if not path.exists():
        print("no dev cluster is running; start one with `agentid dev up`")
        return 1
    print(_exports(json.loads(path.read_text())["kubeconfig"]))
    return 0
