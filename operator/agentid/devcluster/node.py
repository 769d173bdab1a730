"""A real node for a LocalCluster: containerd + runc + the CNI bridge, kubelet, kube-proxy and kube-scheduler.

Used by ``agentid dev up --with-node``, the node tests and ``make demo``: Pods run on this machine, Helm charts run
for real. Call ``prepare(cluster)`` before ``cluster.start()`` (controllers, serving names, kubelet client
certificate), then ``LocalNode(cluster).start()``. One node per machine at a time (a lock under /run): its ports,
bridge and iptables chains are global. ``stop()`` removes every trace on the host (processes, shims, mounts,
network namespaces, the bridge and its routes, iptables chains v4/v6, cgroups, kernel settings); a node whose
owner died is cleaned by the next ``start()`` from the record it left next to the lock.

Network safety: the pod range and the cluster's service range are routed to the bridge before anything starts,
Pods get routes to those two ranges only (no default route, no masquerading), and FORWARD drops anything that
comes from the bridge and would leave through another interface.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml

from agentid.devcluster import assets, hostnet, images
from agentid.devcluster.cluster import KUBERNETES_SERVICE_IP, SERVICE_CIDR, ClusterStartError, LocalCluster
from agentid.devcluster.processes import ManagedProcess, wait_dead

NODE_NAME = "agentid-node"
NETWORK = hostnet.Network(bridge="agentid0", pod_cidr="10.89.0.0/24", gateway="10.89.0.1", service_cidr=SERVICE_CIDR)
STATE_DIR = Path("/run/agentid-node")
NO_REGISTRY = "https://127.0.0.1:9"  # discard port, nothing listens: the node never pulls
NODE_CONTROLLERS = (
    "node-lifecycle-controller",  # lifts the not-ready taint once the kubelet reports Ready
    "endpointslice-controller",  # what kube-proxy programs Services from
    "deployment-controller",
    "replicaset-controller",
    "disruption-controller",  # PodDisruptionBudgets
)
# Host paths containerd, the CNI library and kubelet create outside the node's folder whatever they are told (shim
# sockets, CNI result cache, container log links); removed when the node created them.
HOST_PATHS = tuple(
    Path(path)
    for path in (
        "/run/containerd", "/var/lib/cni", "/var/log/containers", "/var/lib/kubelet", "/var/log/pods",
        "/opt/containerd", "/etc/cni", "/opt/cni",
    )
)  # fmt: skip


class NodeUnavailable(RuntimeError):
    """This host cannot run a node; the message says why (tests skip with it)."""


def unavailable_reason() -> str | None:
    """Why this host cannot run a node, or None when it can."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "a local node needs Linux and root (kubelet, containerd, bridges and iptables)"
    if not hostnet.CGROUP_ROOT.is_dir() or not any(hostnet.CGROUP_ROOT.iterdir()):
        return "a local node needs a cgroup filesystem at /sys/fs/cgroup"
    return _missing_tool()


def _missing_tool() -> str | None:
    for tool in ("runc", "iptables", "ip6tables", "ip", "conntrack", "nft", "umoci", "skopeo"):
        if shutil.which(tool) is None:
            return f"{tool} is missing: `make node-prereqs` installs the node's Debian packages"
    if not Path("/usr/lib/cni/bridge").exists():
        return "the CNI plugins are missing (/usr/lib/cni): `make node-prereqs`"
    for name in ("kubelet", "kube-proxy", "kube-scheduler", "containerd", "containerd-shim-runc-v2", "ctr", "pause"):
        try:
            assets.find_node_binary(name)
        except assets.AssetsNotFound as error:
            return str(error)
    return None


def prepare(cluster: LocalCluster) -> None:
    """What the control plane needs for a node; call before ``cluster.start()``."""
    cluster.controllers += [name for name in NODE_CONTROLLERS if name not in cluster.controllers]
    cluster.serving_hosts += [KUBERNETES_SERVICE_IP, NETWORK.gateway, "kubernetes", "kubernetes.default"]
    client = cluster.ca.issue(
        "apiserver-kubelet-client",
        common_name="kube-apiserver-kubelet-client",
        organization="system:masters",
        client=True,
    )
    cluster.apiserver_args += [
        f"--kubelet-client-certificate={client.cert}",
        f"--kubelet-client-key={client.key}",
        f"--kubelet-certificate-authority={cluster.ca.cert_path}",
        "--kubelet-preferred-address-types=InternalIP",
        # The apiserver dials webhook and aggregated-API Pods on the bridge directly, not a ClusterIP.
        "--enable-aggregator-routing=true",
    ]


class LocalNode:
    """The node's processes and host state; ``start()`` and ``stop()`` are exact opposites."""

    def __init__(self, cluster: LocalCluster, *, log: Callable[[str], None] | None = None) -> None:
        self.cluster = cluster
        self.network = NETWORK
        self.name = NODE_NAME
        self.workdir = Path(tempfile.mkdtemp(prefix="agentid-node-"))
        self.containerd_dir = self.workdir / "containerd"
        self.kubelet_dir = self.workdir / "kubelet"
        self.socket = self.containerd_dir / "containerd.sock"
        self.processes: list[ManagedProcess] = []
        self._lock: IO[str] | None = None
        self._log = log or (lambda message: None)
        self.timings: dict[str, float] = {}

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> LocalNode:
        reason = unavailable_reason()
        if reason is not None:
            raise NodeUnavailable(reason)
        started = time.monotonic()
        deadline = started + timeout
        self._acquire_lock()
        try:
            self._record()
            hostnet.create_bridge(self.network)  # routes first: nothing may send before they exist
            self._start_containerd(deadline)
            self.import_image(images.pause_image())
            self._start_kubelet()
            self._start_proxy()
            self._start_scheduler()
            self._start_apiserver_forward()
            self._publish_kubernetes_endpoints()
            self._wait_ready(deadline)
        except BaseException:
            self.stop()
            raise
        self.timings["up"] = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Pods first (so CNI DEL and volume unmounts happen), then every process, then the host state."""
        if self._lock is None:
            return
        with contextlib.suppress(Exception):
            self._drain_pods(timeout=20.0)
        for process in reversed(self.processes):
            process.stop(timeout=10.0)
        self.processes.clear()
        cleanup_host(self.workdir, self._load_record())
        shutil.rmtree(self.workdir, ignore_errors=True)
        self._release_lock()

    def __enter__(self) -> LocalNode:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the lock and the record a crashed owner leaves ---------------------------------------------------------

    def _acquire_lock(self) -> None:
        lock = _take_lock()
        if lock is None:
            owner = _read_json(STATE_DIR / "node.json").get("pid", "?")
            raise NodeUnavailable(f"another local node runs on this machine (pid {owner}); one at a time")
        self._lock = lock
        if _clean_stale(self._log):
            self._log("cleaned up after a node whose owner died without stopping it")

    def _record(self) -> None:
        record = {
            "pid": os.getpid(),
            "workdir": str(self.workdir),
            "bridge": self.network.bridge,
            "sysctls": hostnet.read_sysctls(),
            "host_paths_before": [str(path) for path in HOST_PATHS if path.exists()],
            "nft_tables_before": hostnet.nft_tables(),
        }
        (STATE_DIR / "node.json").write_text(json.dumps(record))

    def _load_record(self) -> dict[str, Any]:
        return _read_json(STATE_DIR / "node.json")

    def _release_lock(self) -> None:
        (STATE_DIR / "node.json").unlink(missing_ok=True)
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    # -- components -------------------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> ManagedProcess:
        process = ManagedProcess(name, argv, log_path=self.workdir / f"{name}.log", cwd=self.workdir, env=env)
        self.processes.append(process)
        return process

    def _kubeconfig(self, stem: str, common_name: str, organization: str | None) -> Path:
        return self.cluster.client_kubeconfig(self.workdir / f"{stem}.kubeconfig", common_name, organization)

    def _start_containerd(self, deadline: float) -> None:
        cni_dir = self.workdir / "cni"
        (cni_dir / "net.d").mkdir(parents=True)
        (cni_dir / "net.d" / "10-agentid.conflist").write_text(json.dumps(self._cni_config(cni_dir), indent=2))
        self.containerd_dir.mkdir()
        # Images are imported, never pulled: every registry resolves to a closed loopback port, so a Pod naming an
        # image the node lacks fails at once (ErrImagePull) instead of sending anything off the machine.
        default_hosts = self.containerd_dir / "registries" / "_default"
        default_hosts.mkdir(parents=True)
        (default_hosts / "hosts.toml").write_text(f'server = "{NO_REGISTRY}"\n')
        config = self.containerd_dir / "config.toml"
        config.write_text(self._containerd_config(cni_dir))
        shim_dir = assets.find_node_binary("containerd-shim-runc-v2").parent
        env = {**os.environ, "PATH": f"{shim_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}
        process = self._spawn("containerd", [str(assets.find_node_binary("containerd")), f"--config={config}"], env)
        self._poll(process, deadline, lambda: self._ctr_ok("version"))

    def _cni_config(self, cni_dir: Path) -> dict[str, Any]:
        """bridge + host-local: routes to the pod and service ranges only, no masquerading, no default route."""
        return {
            "cniVersion": "1.0.0",
            "name": "agentid",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.network.bridge,
                    "isGateway": True,
                    "isDefaultGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.network.pod_cidr, "gateway": self.network.gateway}]],
                        "routes": [{"dst": self.network.service_cidr, "gw": self.network.gateway}],
                        "dataDir": str(cni_dir / "ipam"),
                    },
                }
            ],
        }

    def _containerd_config(self, cni_dir: Path) -> str:
        runtime = 'plugins."io.containerd.cri.v1.runtime"'
        return f"""version = 3
root = "{self.containerd_dir / "root"}"
state = "{self.containerd_dir / "state"}"
disabled_plugins = [
  "io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"
]

[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{images.PAUSE_NAME}"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{self.containerd_dir / "registries"}"

[{runtime}]
  # root here lacks CAP_SYS_RESOURCE: runc cannot give sandboxes a negative oom_score_adj
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  disable_apparmor = true
  [{runtime}.containerd]
    default_runtime_name = "runc"
    [{runtime}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{runtime}.containerd.runtimes.runc.options]
        BinaryName = "{shutil.which("runc")}"
        SystemdCgroup = false
  [{runtime}.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{cni_dir / "net.d"}"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""

    def _start_kubelet(self) -> None:
        serving = self.cluster.ca.serving("kubelet-serving", NODE_NAME, self.network.gateway)
        kubeconfig = self._kubeconfig("kubelet", f"system:node:{NODE_NAME}", "system:nodes")
        config: dict[str, Any] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.network.gateway,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.cluster.ca.cert_path)},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(serving.cert),
            "tlsPrivateKeyFile": str(serving.key),
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "cgroupDriver": "cgroupfs",
            "podLogsDir": str(self.workdir / "pod-logs"),
            "failSwapOn": False,
            "resolvConf": "",
            "registerNode": True,
            "serializeImagePulls": False,
            # Images are imported, never pulled: nothing may be garbage-collected, nothing evicted for disk.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "nodeStatusUpdateFrequency": "2s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "shutdownGracePeriod": "0s",
        }
        if not (hostnet.CGROUP_ROOT / "cgroup.controllers").exists():
            config["failCgroupV1"] = False  # kubelet >= 1.35 refuses cgroup v1 hosts unless told
        path = self.workdir / "kubelet-config.yaml"
        path.write_text(yaml.safe_dump(config))
        self._spawn(
            "kubelet",
            [
                str(assets.find_node_binary("kubelet")),
                f"--config={path}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.kubelet_dir}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={self.network.gateway}",
                "--v=1",
            ],
        )

    def _start_proxy(self) -> None:
        kubeconfig = self._kubeconfig("kube-proxy", "system:kube-proxy", None)
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "mode": "iptables",
            "clusterCIDR": self.network.pod_cidr,
            "hostnameOverride": NODE_NAME,
            "bindAddress": self.network.gateway,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            "nodePortAddresses": [f"{self.network.gateway}/32"],
            # Leave the host's conntrack sizing and route_localnet alone.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "iptables": {"localhostNodePorts": False},
        }
        path = self.workdir / "kube-proxy-config.yaml"
        path.write_text(yaml.safe_dump(config))
        self._spawn("kube-proxy", [str(assets.find_node_binary("kube-proxy")), f"--config={path}"])

    def _start_scheduler(self) -> None:
        kubeconfig = self._kubeconfig("kube-scheduler", "system:kube-scheduler", "system:masters")
        self._spawn(
            "kube-scheduler",
            [
                str(assets.find_node_binary("kube-scheduler")),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
            ],
        )

    def _start_apiserver_forward(self) -> None:
        self.forward(self.cluster.port, "127.0.0.1", self.cluster.port)

    def forward(self, listen_port: int, target_host: str, target_port: int) -> None:
        """Listen on the bridge gateway and copy to ``target_host:target_port`` (from Pods and the host)."""
        self._spawn(
            f"forward-{listen_port}",
            [
                sys.executable,
                "-m",
                "agentid.devcluster.forward",
                self.network.gateway,
                str(listen_port),
                target_host,
                str(target_port),
            ],
        )

    def _publish_kubernetes_endpoints(self) -> None:
        """The ``kubernetes`` Service's EndpointSlice: the gateway, where the forward to the apiserver listens."""
        slice_ = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "kubernetes"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [self.network.gateway], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": self.cluster.port, "protocol": "TCP"}],
        }
        self.kubectl("apply", "--server-side", "-f", "-", input_text=json.dumps(slice_))

    def _wait_ready(self, deadline: float) -> None:
        kubelet = next(process for process in self.processes if process.name == "kubelet")

        def ready() -> bool:
            result = self.kubectl(
                "get", "node", NODE_NAME, "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}', check=False
            )
            return result.stdout.strip() == "True"

        self._poll(kubelet, deadline, ready)

    # -- images and Pods --------------------------------------------------------------------------------------

    def import_image(self, archive: images.ImageArchive) -> float:
        """Load a docker-archive into the node's image store (what kubelet runs with pullPolicy Never)."""
        return import_image(self.socket, archive)

    def running_tasks(self) -> list[str]:
        """Containers (sandboxes included) with a live process on the node; [] when containerd is gone."""
        try:
            return self._ctr("tasks", "list", "-q").split()
        except (ClusterStartError, subprocess.TimeoutExpired):
            return []

    def _ctr(self, *args: str) -> str:
        return _ctr(self.socket, *args)

    def _ctr_ok(self, *args: str) -> bool:
        try:
            self._ctr(*args)
        except (ClusterStartError, subprocess.TimeoutExpired):
            return False
        return True

    def kubectl(
        self, *args: str, input_text: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(assets.find_binary("kubectl")), f"--kubeconfig={self.cluster.kubeconfig}", *args],
            input=input_text,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def _drain_pods(self, timeout: float) -> None:
        """Cordon, delete every Pod on the node at once, and wait until the kubelet has torn their sandboxes down
        (CNI DEL, volume unmounts): nothing of theirs is left for the host cleanup to force."""
        if not any(process.name == "kubelet" and process.alive() for process in self.processes):
            return
        self.kubectl("cordon", NODE_NAME, "--request-timeout=10s", check=False)
        self.kubectl(
            "delete", "pods", "--all-namespaces", "--all", "--grace-period=1", "--wait=false",
            f"--field-selector=spec.nodeName={NODE_NAME}", "--request-timeout=10s", check=False,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        pods = self.kubelet_dir / "pods"
        while time.monotonic() < deadline:
            if not self.running_tasks() and not (pods.is_dir() and any(pods.iterdir())):
                return
            time.sleep(0.2)

    def _poll(
        self, process: ManagedProcess, deadline: float, ready: Callable[[], bool], interval: float = 0.25
    ) -> None:
        while True:
            if not process.alive():
                raise ClusterStartError(f"{process.name} exited during startup:\n{process.log_tail()}")
            if ready():
                return
            if time.monotonic() > deadline:
                raise ClusterStartError(f"{process.name} not ready before the deadline:\n{process.log_tail()}")
            time.sleep(interval)

    def https_context(self) -> ssl.SSLContext:
        return self.cluster.admin_ssl_context()

    def describe(self) -> dict[str, object]:
        return {
            "node": NODE_NAME,
            "workdir": str(self.workdir),
            "bridge": self.network.bridge,
            "podCIDR": self.network.pod_cidr,
            "serviceCIDR": self.network.service_cidr,
            "pids": [process.pid for process in self.processes],
            "containerdSocket": str(self.socket),
        }


def import_image(socket: Path, archive: images.ImageArchive) -> float:
    """``ctr images import`` into the CRI namespace of the containerd at ``socket``; returns the seconds it took."""
    started = time.monotonic()
    _ctr(socket, "images", "import", str(archive.path))
    return time.monotonic() - started


def _ctr(socket: Path, *args: str) -> str:
    result = subprocess.run(
        [str(assets.find_node_binary("ctr")), f"--address={socket}", "--namespace=k8s.io", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if result.returncode != 0:
        raise ClusterStartError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


# -- host cleanup (also for a node whose owner died) ------------------------------------------------------------


def _take_lock() -> IO[str] | None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    lock = (STATE_DIR / "lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


def _clean_stale(log: Callable[[str], None]) -> bool:
    """With the lock held: undo what a node whose owner died left (its record survived it)."""
    stale = _read_json(STATE_DIR / "node.json")
    if not stale:
        return False
    log(f"cleaning up after a node that did not stop (pid {stale.get('pid')})")
    cleanup_host(Path(stale["workdir"]), stale)
    shutil.rmtree(stale["workdir"], ignore_errors=True)
    (STATE_DIR / "node.json").unlink(missing_ok=True)
    return True


def clean_stale_node(log: Callable[[str], None] = print) -> bool:
    """For ``agentid dev down``: clean up a node whose owner is gone; False when none (or one is running)."""
    lock = _take_lock()
    if lock is None:
        return False
    try:
        return _clean_stale(log)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def cleanup_host(workdir: Path, record: dict[str, Any]) -> None:
    """Remove what a node left on the host, in dependency order; safe to call twice."""
    # Every process the node started names its folder (shims outlive containerd, re-parented to init), and every
    # container process sits in the kubepods cgroups.
    for _ in range(3):
        victims = hostnet.processes_mentioning(f"{workdir}/") | hostnet.cgroup_pids(hostnet.owned_cgroups())
        victims -= {os.getpid()}
        if not victims:
            break
        hostnet.kill_pids(victims)
        wait_dead(sorted(victims), timeout=10)
    hostnet.unmount_all(workdir)
    hostnet.delete_bridge(record.get("bridge") or NETWORK.bridge)
    _proxy_cleanup()
    hostnet.remove_owned_chains()
    if "nft_tables_before" in record:
        hostnet.remove_new_empty_tables(record["nft_tables_before"])
    hostnet.remove_cgroups(hostnet.owned_cgroups())
    hostnet.restore_sysctls(record.get("sysctls", {}))
    before = set(record.get("host_paths_before", [str(path) for path in HOST_PATHS]))
    for path in HOST_PATHS:
        if str(path) not in before and path.exists():
            hostnet.unmount_all(path)
            shutil.rmtree(path, ignore_errors=True)


def _proxy_cleanup() -> None:
    with contextlib.suppress(assets.AssetsNotFound, subprocess.SubprocessError, OSError):
        subprocess.run(
            [str(assets.find_node_binary("kube-proxy")), "--cleanup"], capture_output=True, check=False, timeout=60
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
