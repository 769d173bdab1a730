"""Start and stop a real control plane on free loopback ports in a temporary folder.

Called by ``agentid dev up``, the pytest session fixture and the benchmarks. Each ``LocalCluster`` owns its
folder, ports and processes, so two can run side by side. Later layers (agent token authentication, the
admission webhook) hook in through ``apiserver_args`` and ``write_file`` before ``start()``.
"""

from __future__ import annotations

import json
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import yaml

from agentid.devcluster import assets, pki
from agentid.devcluster.ports import free_port
from agentid.devcluster.processes import ManagedProcess

CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",  # fills the built-in view/edit/admin ClusterRoles
)

# Metadata for everything; enough for "which agent did what" without logging request bodies (tokens, keys).
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "nonResourceURLs": ["/readyz*", "/livez*", "/healthz*", "/version"]},
        {"level": "Metadata"},
    ],
}


SERVICE_CIDR = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"  # the first address of SERVICE_CIDR: the `kubernetes` Service


class ClusterStartError(RuntimeError):
    """A component did not become ready; the message carries the tail of its log."""


class LocalCluster:
    """etcd + kube-apiserver + kube-controller-manager as child processes.

    The folder holds the PKI, a kubeconfig for an admin (system:masters), component logs and, when enabled, the
    apiserver's audit log.
    """

    def __init__(self, *, workdir: Path | None = None, audit: bool = True, keep_workdir: bool = False) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="agentid-cluster-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._owns_workdir = workdir is None and not keep_workdir
        self.versions = assets.pinned_versions()
        self.ca = pki.CertificateAuthority(self.workdir)
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.audit_log: Path | None = self.workdir / "audit.log" if audit else None
        self.apiserver_args: list[str] = []
        # A LocalNode (agentid.devcluster.node) widens these before start(): more controllers, more serving names.
        self.controllers: list[str] = list(CONTROLLERS)
        self.serving_hosts: list[str] = ["127.0.0.1", "localhost", "kubernetes.default.svc"]
        self._apiserver_argv: list[str] = []
        self.processes: list[ManagedProcess] = []
        self._admin = self.ca.issue("admin", common_name="admin", organization="system:masters", client=True)

    # -- configuration hooks (call before start) -------------------------------------------------------------

    def write_file(self, name: str, content: str | bytes) -> Path:
        """Write a file into the cluster folder, e.g. an AuthenticationConfiguration for apiserver_args."""
        path = self.workdir / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> LocalCluster:
        deadline = time.monotonic() + timeout
        try:
            self._start_etcd(deadline)
            self._start_apiserver(deadline)
            self._write_kubeconfig(self.kubeconfig, self._admin)
            self._start_controller_manager()
            self._wait_for_default_service_account(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process this cluster started (reverse order), then remove the folder it owns."""
        for process in reversed(self.processes):
            process.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    # -- components -------------------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: Sequence[str]) -> ManagedProcess:
        process = ManagedProcess(name, argv, log_path=self.workdir / f"{name}.log", cwd=self.workdir)
        self.processes.append(process)
        return process

    def _start_etcd(self, deadline: float) -> None:
        client_port, peer_port = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        process = self._spawn(
            "etcd",
            [
                str(assets.find_binary("etcd")),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd-data'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._poll(process, deadline, lambda: _http_ok(f"{self.etcd_url}/health", None))

    def _start_apiserver(self, deadline: float) -> None:
        serving = self.ca.serving("apiserver", *self.serving_hosts)
        sa_key, sa_public = self.workdir / "sa.key", self.workdir / "sa.pub"
        pki.write_service_account_keys(sa_key, sa_public)
        args = [
            str(assets.find_binary("kube-apiserver")),
            f"--etcd-servers={self.etcd_url}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--secure-port={self.port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            f"--client-ca-file={self.ca.cert_path}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--service-account-issuer={self.server}",
            f"--service-account-key-file={sa_public}",
            f"--service-account-signing-key-file={sa_key}",
            "--allow-privileged=true",
            "--profiling=false",
        ]
        if self.audit_log is not None:
            policy = self.write_file("audit-policy.yaml", yaml.safe_dump(AUDIT_POLICY))
            args += [
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxsize=100",
            ]
        self._apiserver_argv = args + self.apiserver_args
        process = self._spawn("kube-apiserver", self._apiserver_argv)
        context = self.admin_ssl_context()
        self._poll(process, deadline, lambda: _http_ok(f"{self.server}/readyz", context))

    def restart_apiserver(self, timeout: float = 60.0) -> None:
        """Stop kube-apiserver and start it again on the same port with the same state (etcd keeps running):
        what clients see during an upgrade or a crash of the control plane."""
        current = next(process for process in self.processes if process.name == "kube-apiserver")
        current.stop()
        self.processes.remove(current)
        process = self._spawn("kube-apiserver", self._apiserver_argv)
        context = self.admin_ssl_context()
        self._poll(process, time.monotonic() + timeout, lambda: _http_ok(f"{self.server}/readyz", context))

    def _start_controller_manager(self) -> None:
        cert = self.ca.issue(
            "controller-manager",
            common_name="system:kube-controller-manager",
            organization="system:masters",
            client=True,
        )
        kubeconfig = self.workdir / "controller-manager.kubeconfig"
        self._write_kubeconfig(kubeconfig, cert)
        self._spawn(
            "kube-controller-manager",
            [
                str(assets.find_binary("kube-controller-manager")),
                f"--kubeconfig={kubeconfig}",
                f"--controllers={','.join(self.controllers)}",
                f"--service-account-private-key-file={self.workdir / 'sa.key'}",
                f"--root-ca-file={self.ca.cert_path}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--secure-port=0",
            ],
        )

    def _wait_for_default_service_account(self, deadline: float) -> None:
        """The serviceaccount controller creating default/default proves the controller manager works."""
        context = self.admin_ssl_context()
        url = f"{self.server}/api/v1/namespaces/default/serviceaccounts/default"
        manager = self.processes[-1]
        self._poll(manager, deadline, lambda: _http_ok(url, context))

    # -- helpers ----------------------------------------------------------------------------------------------

    def admin_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca.cert_path))
        context.load_cert_chain(str(self._admin.cert), str(self._admin.key))
        return context

    def client_kubeconfig(self, path: Path, common_name: str, organization: str | None = None) -> Path:
        """A kubeconfig at ``path`` with a new client certificate (e.g. for a node's kubelet or kube-proxy)."""
        cert = self.ca.issue(path.stem, common_name=common_name, organization=organization, client=True)
        self._write_kubeconfig(path, cert)
        return path

    def _write_kubeconfig(self, path: Path, client: pki.CertPair) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "agentid-dev",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca.cert_path)},
                }
            ],
            "users": [
                {"name": "admin", "user": {"client-certificate": str(client.cert), "client-key": str(client.key)}}
            ],
            "contexts": [{"name": "agentid-dev", "context": {"cluster": "agentid-dev", "user": "admin"}}],
            "current-context": "agentid-dev",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    def _poll(self, process: ManagedProcess, deadline: float, ready: Callable[[], bool]) -> None:
        while True:
            if not process.alive():
                raise ClusterStartError(f"{process.name} exited during startup:\n{process.log_tail()}")
            if ready():
                return
            if time.monotonic() > deadline:
                raise ClusterStartError(f"{process.name} not ready before the deadline:\n{process.log_tail()}")
            time.sleep(0.1)

    def describe(self) -> dict[str, object]:
        """What `agentid dev up` records so that `agentid dev down` can find the processes."""
        return {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "workdir": str(self.workdir),
            "pids": self.pids,
            "kubernetesVersion": self.versions.kubernetes,
        }

    def describe_json(self) -> str:
        return json.dumps(self.describe(), indent=2)


def _http_ok(url: str, context: ssl.SSLContext | None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310 - fixed scheme
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False
