"""`make demo`: start the embedded control plane and show that it is a real Kubernetes, then stop cleanly."""

from __future__ import annotations

import subprocess
import sys

from agentid.devcluster import assets
from agentid.devcluster.cluster import LocalCluster


def kubectl(cluster: LocalCluster, *args: str) -> str:
    result = subprocess.run(
        [str(assets.find_binary("kubectl")), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    return (result.stdout + result.stderr).strip()


def main() -> int:
    with LocalCluster() as cluster:
        print(f"== local control plane up at {cluster.server} (kubeconfig {cluster.kubeconfig})")
        print(kubectl(cluster, "version"))
        print("== RBAC is enforced: an unbound ServiceAccount may not list secrets")
        print(kubectl(cluster, "auth", "can-i", "list", "secrets", "--as=system:serviceaccount:default:default"))
    print("== stopped; no process left behind")
    return 0


if __name__ == "__main__":
    sys.exit(main())
