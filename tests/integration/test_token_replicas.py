"""What must hold across token-service replicas and certificate renewals: an RFC 7523 assertion is single-use
wherever it is presented (the claim lives in the Kubernetes API, not in one replica's memory), and renewed serving
certificates are served without a restart — by the token service and by the admission webhook."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import ssl
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from agentid.devcluster import pki
from agentid.domain import claims
from agentid.tokens import replay
from agentid.tokens.settings import TLS, TokenServiceSettings
from tests.support.clusters import ClusterHandle
from tests.support.operator import OperatorThread
from tests.support.polling import eventually
from tests.support.tokens import (
    MCP,
    SERVICE_NAMESPACE,
    TokenServiceHandle,
    TokenServiceThread,
    fresh_endpoint,
    provisioned,
)

pytestmark = pytest.mark.cluster
SPEC: dict[str, Any] = {"credentials": {"audiences": [MCP]}}


@pytest.fixture
def second_replica(
    cluster: ClusterHandle, token_service: TokenServiceHandle
) -> Iterator[tuple[TokenServiceThread, str]]:
    """Another replica of the session's token service: same issuer and keyring, its own port and certificate."""
    endpoint = fresh_endpoint()
    settings = TokenServiceSettings(
        issuer=token_service.issuer,
        port=endpoint.port,
        tls=TLS(Path(endpoint.cert), Path(endpoint.key)),
        namespace=SERVICE_NAMESPACE,
    )
    replica = TokenServiceThread(settings, cluster.kubeconfig).start()
    yield replica, endpoint.ca
    replica.stop()


def test_an_assertion_is_single_use_across_replicas(
    cluster: ClusterHandle,
    token_service: TokenServiceHandle,
    token_namespace: str,
    second_replica: tuple[TokenServiceThread, str],
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "replicated", **SPEC)
    replica, ca = second_replica
    service = replica.service
    eventually(
        lambda: (
            (known := service.agents.get(agent.namespace, agent.name)) is not None
            and bool(service.accounts.keys_of(known, dt.datetime.now(dt.UTC)))
        ),
        what="the second replica knows the agent and its keys",
    )
    form = {
        "grant_type": claims.GRANT_JWT_BEARER,
        "assertion": agent.assertion(f"{token_service.issuer}/token"),
        "audience": MCP,
    }
    first = token_service.post("/token", form)
    assert first.status_code == 200, first.text

    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=
    replayed = session.post(f"https://127.0.0.1:{replica.settings.port}/token", data=form, verify=ca, timeout=30)
    assert (replayed.status_code, replayed.json()["error"]) == (400, "invalid_grant"), replayed.text


def _served(port: int) -> str:
    return ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", port))))


def _replace(pair: pki.CertPair, certfile: str, keyfile: str) -> None:
    """Renew the way a kubelet updates a mounted Secret: the new files appear whole."""
    for source, target in ((pair.key, keyfile), (pair.cert, certfile)):
        staged = f"{target}.new"
        shutil.copyfile(source, staged)
        os.replace(staged, target)


def test_renewed_serving_certificates_are_served_without_a_restart(
    cluster: ClusterHandle, token_service: TokenServiceHandle, operator: OperatorThread
) -> None:
    folder = Path(tempfile.mkdtemp(prefix="agentid-renewal-"))
    ca = pki.CertificateAuthority(folder)
    first, renewed = ca.serving("first", "127.0.0.1"), ca.serving("renewed", "127.0.0.1")
    certfile, keyfile = str(folder / "tls.crt"), str(folder / "tls.key")
    _replace(first, certfile, keyfile)
    settings = TokenServiceSettings(
        issuer=token_service.issuer,
        port=fresh_endpoint().port,
        tls=TLS(Path(certfile), Path(keyfile)),
        namespace=SERVICE_NAMESPACE,
    )
    replica = TokenServiceThread(settings, cluster.kubeconfig).start()
    try:
        assert _served(settings.port) == first.cert.read_text()
        _replace(renewed, certfile, keyfile)
        eventually(lambda: _served(settings.port) == renewed.cert.read_text(), what="token service serves the renewal")
    finally:
        replica.stop()

    webhook = operator.config.webhook
    if webhook is None or cluster.local is None:
        pytest.skip("the session operator serves no webhook on an existing cluster")
    renewal = cluster.local.ca.serving("webhook-renewed", "127.0.0.1")
    _replace(renewal, webhook.certfile, webhook.keyfile)
    eventually(lambda: _served(webhook.port) == renewal.cert.read_text(), what="the webhook serves the renewal")


def test_expired_assertion_claims_are_swept(token_service: TokenServiceHandle) -> None:
    service = token_service.service
    an_hour_ago = replay.SharedReplayGuard(
        service.client, namespace=SERVICE_NAMESPACE, clock=lambda: time.time() - 3600
    )
    jti = uuid.uuid4().hex
    assert token_service.thread.run(an_hour_ago.first_use("spiffe://sweep/test", jti, time.time() - 3590))
    assert token_service.thread.run(service.replay.sweep()) >= 1
    # Gone from the API: a replica that never saw it (no local memory) may claim the name again.
    fresh = replay.SharedReplayGuard(service.client, namespace=SERVICE_NAMESPACE)
    assert token_service.thread.run(fresh.first_use("spiffe://sweep/test", jti, time.time() + 60))
    assert not token_service.thread.run(service.replay.first_use("spiffe://sweep/test", jti, time.time() + 60))
