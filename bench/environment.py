"""What every benchmark runs on: a local control plane, the CRDs, and the operator and token service as processes.

Called by ``bench.__main__`` (one ``BenchCluster`` per run, shared by the sub-benchmarks) and by each benchmark
(``OperatorProcess`` and ``TokenServiceProcess`` are started and stopped around what they measure). Everything is a
real process talking to a real kube-apiserver: the operator is ``python -m agentid run`` exactly as deployed, the
token service is ``TokenService`` in its own process (``bench.tokenservice``), so their CPU and memory are theirs.
The apiserver trusts the token service's issuer (``--authentication-config``), so agent JWTs can call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from agentid.api import v1alpha1
from agentid.devcluster import assets
from agentid.devcluster.cluster import LocalCluster
from agentid.devcluster.ports import free_port
from agentid.devcluster.processes import ManagedProcess
from agentid.domain import naming
from agentid.kube import resources, watch
from agentid.kube.client import KubeClient
from agentid.tokens import authnconfig

REPO = Path(__file__).resolve().parent.parent
KUBE_AUDIENCE = authnconfig.DEFAULT_KUBE_AUDIENCE
TOKEN_NAMESPACE = "agentid-system"  # noqa: S105 - a namespace name
BENCH_FIELD_MANAGER = "agentid-bench"  # the user agent of the benchmark's own requests (never counted as operator's)
CONFIGMAP_RULE = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}


class BenchError(RuntimeError):
    """Something the benchmark needs did not happen in time (the message says what)."""


@dataclass(frozen=True)
class IssuerEndpoint:
    """Where the token service listens and the TLS material the apiserver trusts it with."""

    port: int
    cert: str
    key: str
    ca: str

    @property
    def issuer(self) -> str:
        return f"https://127.0.0.1:{self.port}"


class BenchCluster:
    """A LocalCluster (audit log on) that trusts the benchmark's token issuer, with the CRDs installed."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.local = LocalCluster(workdir=workdir, audit=True)
        serving = self.local.ca.serving("token-service", "127.0.0.1", "localhost")
        self.endpoint = IssuerEndpoint(
            port=free_port(), cert=str(serving.cert), key=str(serving.key), ca=str(self.local.ca.cert_path)
        )
        config = authnconfig.authentication_configuration(
            self.endpoint.issuer, audiences=[KUBE_AUDIENCE], ca_pem=self.local.ca.pem.decode()
        )
        path = self.local.write_file("authentication-config.yaml", yaml.safe_dump(config, sort_keys=False))
        self.local.apiserver_args.append(f"--authentication-config={path}")

    @property
    def kubeconfig(self) -> Path:
        return self.local.kubeconfig

    @property
    def workdir(self) -> Path:
        return self.local.workdir

    @property
    def audit_log(self) -> Path:
        assert self.local.audit_log is not None
        return self.local.audit_log

    def start(self) -> BenchCluster:
        self.local.start()
        try:
            self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
            self.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
            self.kubectl("create", "namespace", TOKEN_NAMESPACE)
        except BaseException:
            self.local.stop()
            raise
        return self

    def stop(self) -> None:
        self.local.stop()

    def kubectl(self, *args: str, input_text: str | None = None) -> str:
        try:
            binary = str(assets.find_binary("kubectl"))
        except assets.AssetsNotFound:
            binary = "kubectl"
        result = subprocess.run(
            [binary, f"--kubeconfig={self.kubeconfig}", *args],
            input=input_text,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            raise BenchError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def control_plane_pids(self) -> list[int]:
        return self.local.pids

    async def client(self, max_in_flight: int = 64) -> KubeClient:
        return await KubeClient.connect(
            str(self.kubeconfig), field_manager=BENCH_FIELD_MANAGER, max_in_flight=max_in_flight
        )

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts the cluster CA (apiserver and token service), presents no client certificate."""
        return ssl.create_default_context(cafile=str(self.local.ca.cert_path))


# -- processes ------------------------------------------------------------------------------------------------------


class Child(ManagedProcess):
    """A child process (own process group, killed with the benchmark), measurable with psutil."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        cpus: Iterable[int] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(name, argv, log_path=log_path, env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))
        self.process = psutil.Process(self.pid)
        if cpus is not None:
            self.process.cpu_affinity(list(cpus))

    def rss_mb(self) -> float:
        return float(self.process.memory_info().rss) / 2**20

    def peak_rss_mb(self) -> float:
        """VmHWM: the highest RSS the process ever had."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return self.rss_mb()

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def tail(self, lines: int = 40) -> str:
        return self.log_tail(lines)

    def stop(self, timeout: float = 60.0) -> float:  # type: ignore[override]
        """SIGTERM and wait (SIGKILL past ``timeout``); how long the shutdown took."""
        started = time.monotonic()
        super().stop(timeout)
        return time.monotonic() - started


class OperatorProcess(Child):
    """``python -m agentid run`` scoped to the benchmark's namespaces, with liveness and metrics endpoints."""

    def __init__(
        self,
        cluster: BenchCluster,
        namespaces: Sequence[str],
        *,
        label: str,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.liveness_port = free_port()
        self.metrics_port = free_port()
        argv = [
            sys.executable,
            "-m",
            "agentid",
            "run",
            f"--kubeconfig={cluster.kubeconfig}",
            "--log-format=plain",
            f"--liveness=http://127.0.0.1:{self.liveness_port}/healthz",
            f"--metrics-port={self.metrics_port}",
            f"--audit-log={cluster.workdir / f'operator-{label}.audit.log'}",
            *(f"--namespace={namespace}" for namespace in namespaces),
            *extra_args,
        ]
        super().__init__(f"operator-{label}", argv, cluster.workdir / f"operator-{label}.log", env=env)

    def wait_live(self, timeout: float = 60.0) -> None:
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        wait_for(lambda: self._http_ok(url), timeout=timeout, what="operator liveness", process=self)

    def _http_ok(self, url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback http
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    async def metric(self, name: str) -> float | None:
        """Sum of every sample of one metric family on /metrics (None when the family is not exposed)."""
        return await asyncio.to_thread(self._metric, name)

    def _metric(self, name: str) -> float | None:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except (urllib.error.URLError, OSError):
            return None
        values = [
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith((name + " ", name + "{"))
        ]
        return sum(values) if values else None


class TokenServiceProcess(Child):
    """``TokenService`` in its own process (``bench.tokenservice``), optionally pinned to CPUs.

    Every replica serves the cluster's one issuer (same keys, shared state through the apiserver); a second one
    listens on its own ``port`` (the issuer's by default)."""

    def __init__(
        self,
        cluster: BenchCluster,
        *,
        label: str,
        review_cache_seconds: float = 10.0,
        cpus: Iterable[int] | None = None,
        port: int | None = None,
    ) -> None:
        self.endpoint = cluster.endpoint
        self.port = port if port is not None else self.endpoint.port
        settings = {
            "issuer": self.endpoint.issuer,
            "port": self.port,
            "cert": self.endpoint.cert,
            "key": self.endpoint.key,
            "namespace": TOKEN_NAMESPACE,
            "review_cache_seconds": review_cache_seconds,
            "kubeconfig": str(cluster.kubeconfig),
        }
        argv = [sys.executable, "-m", "bench.tokenservice", json.dumps(settings)]
        super().__init__(f"tokens-{label}", argv, cluster.workdir / f"tokens-{label}.log", cpus=cpus)

    @property
    def url(self) -> str:
        """Where this replica answers (the issuer's host, this replica's port)."""
        return f"https://127.0.0.1:{self.port}"

    def wait_ready(self, context: ssl.SSLContext, timeout: float = 60.0) -> None:
        url = f"{self.url}/readyz"

        def ready() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310 - https
                    return bool(response.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        wait_for(ready, timeout=timeout, what="token service ready", process=self)

    def kill(self) -> None:
        """SIGKILL, as when a Pod's container is killed: no shutdown, no goodbye to clients (``stop`` reaps it)."""
        self.popen.kill()


def wait_for(check: Any, *, timeout: float, what: str, process: Child | None = None, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if process is not None and not process.alive():
            raise BenchError(f"{process.name} exited while waiting for {what}:\n{process.tail()}")
        if time.monotonic() > deadline:
            tail = f"\n{process.tail()}" if process is not None else ""
            raise BenchError(f"not within {timeout}s: {what}{tail}")
        time.sleep(interval)


# -- agents ---------------------------------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def agent_manifest(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """An Autonomous agent that may read ConfigMaps and get agent tokens for the apiserver."""
    base: dict[str, Any] = {
        "purpose": "benchmark agent",
        "owner": {"kind": "User", "name": "bench@example.com"},
        "supervision": {"mode": "Autonomous"},
        "permissions": [dict(CONFIGMAP_RULE)],
        "credentials": {"audiences": [KUBE_AUDIENCE]},
    }
    base.update(spec)
    return {
        "apiVersion": v1alpha1.API_VERSION,
        "kind": v1alpha1.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": base,
    }


def is_ready(body: dict[str, Any]) -> bool:
    """Ready=True for the current generation (what ``kubectl wait --for=condition=Ready`` waits for)."""
    generation = (body.get("metadata") or {}).get("generation")
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True" and condition.get("observedGeneration") == generation)
    return False


async def create_namespace(client: KubeClient, name: str) -> None:
    await client.create(resources.NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


async def create_agents(client: KubeClient, namespace: str, names: Sequence[str], **spec: Any) -> None:
    await asyncio.gather(
        *(
            client.create(resources.AGENT_IDENTITIES, agent_manifest(name, namespace, **spec), namespace)
            for name in names
        )
    )


class ReadyWatch:
    """Watches the AgentIdentities of a namespace and records when each first became Ready (monotonic clock)."""

    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.ready_at: dict[str, float] = {}
        self.bodies: dict[str, dict[str, Any]] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()

    async def __aenter__(self) -> ReadyWatch:
        self._task = asyncio.create_task(self._run())
        await self._synced.wait()
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        selector = watch.Selector(namespace=self.namespace)
        async for event in watch.informer(self.client, resources.AGENT_IDENTITIES, selector, project=watch.unchanged):
            now = time.monotonic()
            items = event.items if isinstance(event, watch.Listed) else [event.object]
            for body in items:
                name = body["metadata"]["name"]
                self.bodies[name] = body
                if is_ready(body):
                    self.ready_at.setdefault(name, now)
            self._synced.set()
            self._changed.set()

    async def wait_ready(self, names: Iterable[str], within: float) -> None:
        wanted = set(names)
        deadline = time.monotonic() + within
        while not wanted <= self.ready_at.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sorted(wanted - self.ready_at.keys())
                raise BenchError(f"{len(missing)} agents not Ready within {within}s, e.g. {missing[:3]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 1.0)):
                    await self._changed.wait()


@contextlib.contextmanager
def running_operator(
    cluster: BenchCluster, namespaces: Sequence[str], *, label: str, extra_args: Sequence[str] = ()
) -> Iterator[OperatorProcess]:
    operator = OperatorProcess(cluster, namespaces, label=label, extra_args=extra_args)
    try:
        operator.wait_live()
        yield operator
    finally:
        operator.stop()


async def provision(
    client: KubeClient, namespace: str, names: Sequence[str], *, within: float = 300, **spec: Any
) -> None:
    """Create agents and wait until they are Ready (an operator must be running for the namespace)."""
    async with ReadyWatch(client, namespace) as ready:
        await create_agents(client, namespace, names, **spec)
        await ready.wait_ready(names, within=within)


async def service_account_token(
    client: KubeClient, namespace: str, agent: str, *, audience: str | None = None, seconds: int = 3600
) -> str:
    """A token of the agent's ServiceAccount (TokenRequest), for ``audience`` (default: the apiserver)."""
    spec: dict[str, Any] = {"expirationSeconds": seconds}
    if audience is not None:
        spec["audiences"] = [audience]
    path = resources.SERVICE_ACCOUNTS.path(namespace, naming.service_account(agent), "token")
    response = await client.request("POST", path, body={"apiVersion": "authentication.k8s.io/v1", "spec": spec})
    return str(response["status"]["token"])
