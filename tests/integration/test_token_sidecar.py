"""``agentid token-agent`` as a process against the real token service: one file per audience, refreshed before
expiry, gone within a poll of a suspension or revocation, back on resume, healthy/ready as it should be, and never
a token in its output."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import KeySet

from agentid.client import errors
from agentid.client.credentials import Credentials
from agentid.client.sync import AgentClient
from tests.support.clusters import ClusterHandle
from tests.support.polling import eventually
from tests.support.sidecar import Sidecar, start_sidecar
from tests.support.tokens import MCP, TokenServiceHandle, provisioned

pytestmark = pytest.mark.cluster
KUBE = "https://kubernetes.default.svc"
SPEC: dict[str, Any] = {"credentials": {"audiences": [MCP, KUBE], "tokenTTL": "10m"}}


@pytest.fixture
def sidecars() -> Iterator[list[Sidecar]]:
    started: list[Sidecar] = []
    yield started
    for sidecar in started:
        sidecar.stop()


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def assert_no_token_in_output(sidecar: Sidecar, seen: set[str]) -> None:
    output = sidecar.output()
    for token in {*seen, sidecar.service_account_token}:
        assert token not in output
        assert token.split(".")[1] not in output  # not even the payload
    assert "eyJ" not in output  # nothing that looks like a JWT at all


def test_files_per_audience_refresh_before_expiry_and_no_token_in_the_logs(
    cluster: ClusterHandle,
    token_service: TokenServiceHandle,
    token_namespace: str,
    tmp_path: Path,
    sidecars: list[Sidecar],
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "sidecar-fresh", **SPEC)
    sidecar = start_sidecar(token_service, agent, tmp_path, (MCP, KUBE), extra_args=("--token-lifetime=6",))
    sidecars.append(sidecar)
    first = eventually(lambda: t if len(t := sidecar.tokens()) == 2 else None, what="a token file per audience")
    keys = KeySet.import_key_set(token_service.get("/jwks.json").json())
    for audience, token in first.items():  # verified by an independent JOSE library against the published JWKS
        payload = joserfc_jwt.decode(token, keys, algorithms=["ES256"]).claims
        joserfc_jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": token_service.issuer},
            aud={"essential": True, "value": audience},
            sub={"essential": True, "value": agent.agent_id},
        ).validate(payload)
        assert token_service.introspect(token)["active"] is True
    assert sorted(p.name for p in sidecar.tokens_dir.iterdir()) == [".status", "kubernetes.default.svc", "mcp.example"]
    ready = sidecar.health("/readyz")
    assert ready.status_code == 200
    assert ready.json()["state"] == "ready"
    assert set(ready.json()["audiences"]) == {MCP, KUBE}
    assert sidecar.health("/healthz").status_code == 200
    assert AgentClient(Credentials(tokens_dir=str(sidecar.tokens_dir))).token(MCP) == first[MCP]

    old = claims_of(first[MCP])
    refreshed = eventually(
        lambda: t if (t := sidecar.tokens().get(MCP)) and t != first[MCP] else None, timeout=15, what="a refresh"
    )
    seen_at = time.time()
    assert seen_at < old["exp"]  # replaced before it expired
    assert claims_of(refreshed)["iat"] >= old["iat"]
    assert_no_token_in_output(sidecar, {*first.values(), refreshed})
    assert sidecar.stop() == 0


def test_suspension_removes_the_files_and_resume_brings_them_back_revocation_for_good(
    cluster: ClusterHandle,
    token_service: TokenServiceHandle,
    token_namespace: str,
    tmp_path: Path,
    sidecars: list[Sidecar],
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "sidecar-kill", **SPEC)
    sidecar = start_sidecar(token_service, agent, tmp_path, (MCP, KUBE))
    sidecars.append(sidecar)
    held = eventually(lambda: t if len(t := sidecar.tokens()) == 2 else None, what="tokens")
    seen = set(held.values())
    file_client = AgentClient(Credentials(tokens_dir=str(sidecar.tokens_dir)))

    suspended_at = time.monotonic()
    agent.patch_spec({"supervision": {"mode": "Suspended", "reason": "incident 42"}})
    eventually(lambda: not sidecar.tokens(), timeout=5, interval=0.02, what="token files removed")
    elapsed = time.monotonic() - suspended_at
    assert elapsed < 5  # the bench measures the distribution (target p99 < 1 s)
    eventually(lambda: sidecar.status().get("state") == "suspended", what="status says suspended")
    assert sidecar.health("/readyz").status_code == 503
    assert sidecar.health("/healthz").status_code == 200
    with pytest.raises(errors.AgentSuspended):
        file_client.token(MCP)

    agent.patch_spec({"supervision": {"mode": "Autonomous", "reason": "incident closed"}})
    back = eventually(lambda: t if len(t := sidecar.tokens()) == 2 else None, timeout=30, what="tokens after resume")
    seen |= set(back.values())
    assert all(token_service.introspect(token)["active"] for token in back.values())
    assert sidecar.health("/readyz").status_code == 200

    agent.patch_spec({"revoked": True, "revocationReason": "compromised"})
    eventually(lambda: not sidecar.tokens(), timeout=5, interval=0.02, what="token files removed on revocation")
    eventually(lambda: sidecar.status().get("state") == "revoked", what="status says revoked")
    with pytest.raises(errors.AgentRevoked):
        file_client.token(KUBE)
    assert_no_token_in_output(sidecar, seen)
