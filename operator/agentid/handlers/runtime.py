"""Run the operator: load credentials, build the registry and Kopf settings, wire the reconciler, run Kopf.

Called by ``agentid run`` and by the test suite (in a thread, with the same configuration object), so tests
exercise exactly what production runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import kopf

from agentid import metrics
from agentid.domain import naming
from agentid.domain.podidentity import InjectionSettings
from agentid.domain.settings import OperatorSettings
from agentid.domain.shards import ElectionSettings
from agentid.handlers import registrations
from agentid.handlers.state import Runtime
from agentid.kube.client import KubeClient, load_configuration
from agentid.kube.events import EventRecorder
from agentid.kube.lease import ShardElector
from agentid.reconcile.agents import AgentReconciler
from agentid.reconcile.agentwatch import AgentWatch
from agentid.reconcile.ceiling import OwnerCeiling
from agentid.reconcile.controller import Controller
from agentid.reconcile.owned import KINDS, OwnedObjects
from agentid.reconcile.policies import PolicyStatusWriter
from agentid.reconcile.references import References
from agentid.reconcile.view import AgentKey, ClusterView, Indexes
from agentid.reconcile.workqueue import WorkQueue
from agentid.tokens.service import FIELD_MANAGER as TOKEN_SERVICE_FIELD_MANAGER
from agentid.tokens.service import TokenService
from agentid.tokens.settings import TokenServiceSettings
from agentid.webhooks.admission import AgentAdmission
from agentid.webhooks.pods import PodAdmission
from agentid.webhooks.server import AdmissionServer

PERSISTENCE_PREFIX = "agentid.dev"


@dataclass(frozen=True)
class WebhookConfig:
    """Where the admission webhook listens (TLS). The webhook configurations themselves are rendered by the
    Helm chart (or ``agentid.webhooks.configuration`` for the local control plane), never by Kopf."""

    port: int
    certfile: str
    keyfile: str
    addr: str = "0.0.0.0"  # noqa: S104 - a Pod serves its Service


@dataclass(frozen=True)
class OperatorConfig:
    kubeconfig: str | None = None
    namespaces: Sequence[str] = ()  # Kopf patterns, e.g. "team-*"; empty with all_namespaces=False: all
    all_namespaces: bool = True
    liveness_endpoint: str | None = None
    settings: OperatorSettings = field(default_factory=OperatorSettings)
    max_in_flight: int = 64
    webhook: WebhookConfig | None = None
    metrics_port: int | None = None
    token_service: TokenServiceSettings | None = None  # embed the token service in the operator process
    pod_identity: InjectionSettings | None = None  # inject agent identity into labelled Pods (needs the webhook)
    instance: str = field(default_factory=lambda: os.environ.get("POD_NAME") or socket.gethostname())
    election: ElectionSettings | None = None  # None: this process reconciles every agent it watches


def kopf_settings(config: OperatorConfig) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # Own prefixes from day one (changing them later would make Kopf reprocess everything).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PERSISTENCE_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PERSISTENCE_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{PERSISTENCE_PREFIX}/kopf"  # never used: no handler needs Kopf's finalizer
    settings.posting.enabled = False  # agentid posts its own Events, with its own reasons
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.inactivity_timeout = 400
    settings.watching.chunk_size = 500  # list page by page (a cluster may have thousands of namespaces)
    settings.networking.request_timeout = 60
    settings.networking.enforce_retry_after = True
    if config.webhook is not None:
        settings.admission.server = AdmissionServer(
            addr=config.webhook.addr,
            port=config.webhook.port,
            certfile=config.webhook.certfile,
            keyfile=config.webhook.keyfile,
        )
        settings.admission.managed = None  # configurations come from the chart, not from Kopf
    return settings


async def build_runtime(config: OperatorConfig) -> Runtime:
    configuration = await load_configuration(config.kubeconfig)
    client = KubeClient(
        configuration, field_manager=naming.FIELD_MANAGER, max_in_flight=config.max_in_flight, instance=config.instance
    )
    timings = config.settings.timings
    view = ClusterView()
    ceiling = OwnerCeiling(client)
    reconciler = AgentReconciler(
        client=client,
        view=view,
        events=EventRecorder(client, instance=config.instance),
        settings=config.settings,
        ceiling=ceiling,
    )
    namespaces = list(config.namespaces)
    watches = (len(KINDS) + 1) * max(1, len(namespaces)) + 6  # owned kinds and agents per scope; the references
    # Its own connection pool: long-lived watches must never take the connections the reconciler writes with.
    watcher = KubeClient(
        copy.deepcopy(configuration),
        field_manager=naming.FIELD_MANAGER,
        max_in_flight=watches + 4,
        instance=config.instance,
    )
    queue: WorkQueue[AgentKey] = WorkQueue(
        base_delay=timings.retry_initial.total_seconds(), max_delay=timings.retry_max.total_seconds()
    )
    controller = Controller(
        view,
        reconcile=reconciler.reconcile,
        queue=queue,
        on_rbac=ceiling.invalidate,
        workers=2 * config.max_in_flight,  # a pass waits on the API about half its time
        shards=config.election.shards if config.election is not None else 1,
        elected=config.election is not None,
    )
    agents = AgentWatch(
        watcher, on_change=controller.agent, namespaces=namespaces, all_namespaces=config.all_namespaces
    )
    owned = OwnedObjects(
        watcher,
        view,
        on_drift=controller.agent,  # a burst of changes to one agent's objects is one pass
        namespaces=namespaces,
        all_namespaces=config.all_namespaces,
    )
    references = References(
        watcher,
        on_cluster_role=controller.cluster_role,
        on_policy=controller.policy,
        on_namespace=controller.namespace,
        on_rbac=controller.rbac,
    )
    view.indexes = Indexes(
        agents=agents.index,
        owned=owned.index,
        cluster_roles=references.cluster_roles.values,
        policies=references.policies.values,
        namespaces=references.namespaces.values,
    )
    return Runtime(
        configuration=configuration,
        client=client,
        watcher=watcher,
        view=view,
        reconciler=reconciler,
        admission=AgentAdmission(client),
        pods=PodAdmission(client, config.pod_identity) if config.pod_identity is not None else None,
        policy_status=PolicyStatusWriter(
            client=client,
            view=view,
            clock=reconciler.clock,
            interval=timings.policy_status_interval.total_seconds(),
            active=lambda: controller.holds(0),
        ),
        controller=controller,
        agents=agents,
        owned=owned,
        references=references,
        elector=_elector(config, configuration, controller),
    )


def _elector(config: OperatorConfig, configuration: Any, controller: Controller) -> ShardElector | None:
    """The campaign for shard Leases, on its own small connection pool: a burst of passes holding every
    connection of the reconciler's client must never delay a renewal past the renew deadline. Five connections: the
    elector's watch of its Leases holds one for good, its rounds and hand-overs need at most a few."""
    if config.election is None:
        return None

    def acquired(shard: int) -> None:
        metrics.SHARDS_HELD.labels(shard=str(shard)).set(1)
        controller.shard_acquired(shard)

    def lost(shard: int) -> None:
        metrics.SHARDS_HELD.labels(shard=str(shard)).set(0)
        controller.shard_lost(shard)

    client = KubeClient(
        copy.deepcopy(configuration), field_manager=naming.FIELD_MANAGER, max_in_flight=5, instance=config.instance
    )
    return ShardElector(
        client,
        config.election,
        instance=config.instance,
        on_acquired=acquired,
        on_lost=lost,
        before_release=controller.idle,
        on_wait=metrics.ELECTION_WAITING.set,
    )


async def run_operator(
    config: OperatorConfig,
    *,
    stop_flag: Any = None,  # threading.Event / asyncio.Event / Future: set it to stop the operator
    ready_flag: Any = None,  # set by Kopf once the operator is up
) -> None:
    runtime = await build_runtime(config)
    if config.metrics_port is not None:
        metrics.serve(config.metrics_port)
    registry = kopf.OperatorRegistry()
    registrations.register(registry)
    if config.webhook is not None:
        registrations.register_admission(registry)
        if config.pod_identity is not None:
            registrations.register_pod_identity(registry)
    logging.getLogger(__name__).info(
        "agentid operator starting (instance %s, %s)",
        config.instance,
        "leader election off"
        if config.election is None
        else f"leader election: {config.election.shards} shard(s), Leases in {config.election.namespace}",
    )
    embedded = await _start_token_service(config)
    counter = asyncio.create_task(metrics.run_agent_counts(runtime.view.all_agents, interval=15), name="agent-counts")
    try:
        await kopf.operator(
            registry=registry,
            settings=kopf_settings(config),
            memo=kopf.Memo(runtime=runtime),
            standalone=True,
            clusterwide=config.all_namespaces and not config.namespaces,
            namespaces=list(config.namespaces),
            liveness_endpoint=config.liveness_endpoint,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        counter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await counter
        if embedded is not None:
            await embedded.stop()
            await embedded.client.close()
        await runtime.close()


async def _start_token_service(config: OperatorConfig) -> TokenService | None:
    """The token service in the operator's process and event loop (small installs); `agentid serve` is the
    same service on its own, for stateless replicas behind a Service."""
    if config.token_service is None:
        return None
    client = KubeClient(await load_configuration(config.kubeconfig), field_manager=TOKEN_SERVICE_FIELD_MANAGER)
    service = TokenService(config.token_service, client)
    await service.start()
    return service
