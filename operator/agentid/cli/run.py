"""``agentid run``: the operator, with the project's Kopf settings, logging and namespace selection."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from agentid.client import environment  # the Pod environment contract: standard library only
from agentid.domain.shards import DEFAULT_LEASE
from agentid.tokens.defaults import DEFAULT_NAMESPACE

if TYPE_CHECKING:
    from agentid.domain.podidentity import InjectionSettings
    from agentid.domain.shards import ElectionSettings
    from agentid.tokens.settings import TokenServiceSettings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser("run", help="run the operator (reconciles AgentIdentities)")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], dest="namespaces",
                       help="watch this namespace (repeatable; Kopf globs such as 'team-*' work)")  # fmt: skip
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    run.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    run.add_argument("--liveness", default=None, metavar="URL",
                     help="serve liveness/readiness probes, e.g. http://0.0.0.0:8080/healthz")  # fmt: skip
    run.add_argument("--log-format", choices=["plain", "full", "json"], default="full")
    run.add_argument("--audit-log", metavar="PATH", help="write audit records here (default: stdout)")
    run.add_argument("--verbose", action="store_true", help="debug logging (never shows keys or tokens)")
    run.add_argument("--trust-domain", default="cluster.local", help="trust domain of agent IDs (spiffe://<td>/...)")
    run.add_argument("--resync-seconds", type=float, default=60.0,
                     help="periodic drift check per agent (plus up to 25%% jitter)")  # fmt: skip
    run.add_argument("--key-overlap-seconds", type=float, default=360.0,
                     help="how long past an agent's tokenTTL a replaced key stays published")  # fmt: skip
    run.add_argument("--max-in-flight", type=int, default=64, help="concurrent API requests")
    run.add_argument("--webhook-port", type=int, help="serve the admission webhook (TLS) on this port")
    run.add_argument("--webhook-cert", default="/tls/tls.crt", help="webhook serving certificate (PEM)")
    run.add_argument("--webhook-key", default="/tls/tls.key", help="webhook serving key (PEM)")
    run.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    election = run.add_argument_group(
        "leader election (replicas: every one watches and admits, Lease holders reconcile)"
    )
    election.add_argument("--leader-election", action="store_true",
                          help="reconcile only while holding a coordination.k8s.io Lease (chart: on)")  # fmt: skip
    election.add_argument("--leader-election-namespace", metavar="NAMESPACE",
                          help=f"the Leases' namespace (default: $POD_NAMESPACE or {DEFAULT_NAMESPACE})")  # fmt: skip
    election.add_argument("--leader-election-name", default=DEFAULT_LEASE, metavar="NAME",
                          help="the Lease's name (with --shards N: NAME-shard-0..N-1)")  # fmt: skip
    election.add_argument("--shards", type=int, default=1, metavar="N",
                          help="N shards by namespace hash, a Lease each (docs/sharding.md)")  # fmt: skip
    election.add_argument("--lease-duration", type=float, default=15.0, metavar="SECONDS",
                          help="how long others wait for a silent holder before taking its Lease")  # fmt: skip
    election.add_argument("--renew-deadline", type=float, default=10.0, metavar="SECONDS",
                          help="a holder that could not renew for this long stops reconciling")  # fmt: skip
    election.add_argument("--retry-period", type=float, default=2.0, metavar="SECONDS",
                          help="how often Leases are renewed and free ones tried")  # fmt: skip
    embedded = run.add_argument_group("embedded token service (instead of a separate `agentid serve`)")
    embedded.add_argument("--token-service-issuer", metavar="URL", help="serve agent tokens in this process as URL")
    embedded.add_argument("--token-service-port", type=int, default=8443)
    embedded.add_argument("--token-service-tls-cert", type=Path, help="its serving certificate (PEM)")
    embedded.add_argument("--token-service-tls-key", type=Path, help="its serving key (PEM)")
    embedded.add_argument("--token-service-namespace", default=DEFAULT_NAMESPACE, help="namespace of its key Secret")
    embedded.add_argument("--token-service-access-token-audience", action="append", default=[], metavar="AUD",
                          help="mint tokens for AUD as RFC 9068 access tokens (typ at+jwt; repeatable)")  # fmt: skip
    pods = run.add_argument_group("Pod identity injection (Pods labelled agentid.dev/agent; needs --webhook-port)")
    pods.add_argument("--pod-token-issuer", metavar="URL", help="the token service's issuer: enables injection")
    pods.add_argument("--pod-token-url", metavar="URL", help="the token service as Pods reach it (default: issuer)")
    pods.add_argument("--pod-token-audience", metavar="AUD",
                      help="audience of the injected ServiceAccount token (default: the issuer)")  # fmt: skip
    pods.add_argument("--pod-token-ca", type=Path, metavar="FILE", help="the token service's CA bundle (PEM)")
    pods.add_argument("--pod-token-expiration", type=int, default=600, metavar="SECONDS",
                      help="lifetime of the injected ServiceAccount token (kubelet minimum 600)")  # fmt: skip
    pods.add_argument("--pod-sidecar-image", metavar="IMAGE",
                      help="image of the token sidecar (agentid token-agent); unset: no sidecar")  # fmt: skip
    pods.add_argument("--pod-sidecar-health-port", type=int, default=environment.DEFAULT_HEALTH_PORT, metavar="PORT",
                      help="the sidecar's health endpoint (kubelet probes)")  # fmt: skip
    run.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `agentid --help` must not pay for Kopf and the Kubernetes client.
    import asyncio

    import kopf

    from agentid import audit
    from agentid.domain.settings import OperatorSettings, Timings
    from agentid.handlers.runtime import OperatorConfig, WebhookConfig, run_operator

    token_service = _token_service_settings(args)
    problem = token_service.tls_problem() if token_service is not None else None
    if problem is not None:
        print(f"{problem} (--token-service-tls-cert/--token-service-tls-key)", file=sys.stderr)
        return 2
    try:
        election = _election_settings(args)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    pod_identity = _pod_identity_settings(args)
    if pod_identity is not None and not args.webhook_port:
        print("--pod-token-issuer needs the webhook (--webhook-port)", file=sys.stderr)
        return 2
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat[args.log_format.upper()])
    audit.configure(args.audit_log)
    resync = dt.timedelta(seconds=args.resync_seconds)
    config = OperatorConfig(
        kubeconfig=args.kubeconfig,
        namespaces=tuple(args.namespaces),
        all_namespaces=not args.namespaces,
        liveness_endpoint=args.liveness,
        settings=OperatorSettings(
            trust_domain=args.trust_domain,
            timings=Timings(
                resync_interval=resync,
                resync_jitter=resync / 4,
                key_overlap_allowance=dt.timedelta(seconds=args.key_overlap_seconds),
            ),
        ),
        max_in_flight=args.max_in_flight,
        webhook=WebhookConfig(args.webhook_port, args.webhook_cert, args.webhook_key) if args.webhook_port else None,
        metrics_port=args.metrics_port,
        token_service=token_service,
        pod_identity=pod_identity,
        election=election,
    )
    asyncio.run(run_operator(config))
    return 0


def _election_settings(args: argparse.Namespace) -> ElectionSettings | None:
    """Raises ValueError (``shards.ElectionError``) with a message for the command line."""
    import os

    from agentid.domain.shards import ElectionSettings, ElectionTimings

    if not args.leader_election:
        if args.shards != 1:
            raise ValueError("--shards needs --leader-election (each shard is a Lease)")
        return None
    return ElectionSettings(
        namespace=args.leader_election_namespace or os.environ.get("POD_NAMESPACE") or DEFAULT_NAMESPACE,
        name=args.leader_election_name,
        shards=args.shards,
        timings=ElectionTimings(
            lease_duration=args.lease_duration, renew_deadline=args.renew_deadline, retry_period=args.retry_period
        ),
    )


def _token_service_settings(args: argparse.Namespace) -> TokenServiceSettings | None:
    from agentid.tokens.settings import TLS, TokenServiceSettings

    if not args.token_service_issuer:
        return None
    tls = None
    if args.token_service_tls_cert and args.token_service_tls_key:
        tls = TLS(args.token_service_tls_cert, args.token_service_tls_key)
    return TokenServiceSettings(
        issuer=args.token_service_issuer.rstrip("/"),
        host="0.0.0.0",  # noqa: S104 - a Pod serves its Service
        port=args.token_service_port,
        tls=tls,
        namespace=args.token_service_namespace,
        trust_domain=args.trust_domain,
        access_token_audiences=tuple(args.token_service_access_token_audience),
    )


def _pod_identity_settings(args: argparse.Namespace) -> InjectionSettings | None:
    from agentid.domain.podidentity import InjectionSettings, SidecarSettings

    if not args.pod_token_issuer:
        return None
    if args.pod_token_ca is None:
        raise SystemExit("--pod-token-issuer needs --pod-token-ca (the CA Pods trust the token service with)")
    issuer = args.pod_token_issuer.rstrip("/")
    sidecar = None
    if args.pod_sidecar_image:
        sidecar = SidecarSettings(image=args.pod_sidecar_image, health_port=args.pod_sidecar_health_port)
    return InjectionSettings(
        issuer=issuer,
        url=(args.pod_token_url or issuer).rstrip("/"),
        audience=args.pod_token_audience or issuer,
        ca_pem=_read_ca(args.pod_token_ca),
        token_expiration_seconds=args.pod_token_expiration,
        sidecar=sidecar,
    )


def _read_ca(path: Path) -> str:
    try:
        pem = path.read_text()
    except OSError as error:
        raise SystemExit(f"--pod-token-ca {path}: {error.strerror}") from None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise SystemExit(f"--pod-token-ca {path}: not a PEM certificate bundle")
    return pem
