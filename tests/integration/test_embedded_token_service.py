"""`agentid run --token-service-issuer ...`: the token service inside the operator process works end to end."""

from __future__ import annotations

from pathlib import Path

import jwt
import kubernetes
import pytest
import requests

from agentid.devcluster.ports import free_port
from agentid.domain import claims
from tests.support.agents import create_agent
from tests.support.clusters import ClusterHandle
from tests.support.operator import OperatorProcess
from tests.support.polling import eventually

pytestmark = pytest.mark.cluster


def test_the_operator_can_serve_agent_tokens_itself(
    cluster: ClusterHandle, own_operator_namespace: str, tmp_path: Path
) -> None:
    if cluster.local is None:
        pytest.skip("needs a serving certificate from the embedded control plane's CA")
    port = free_port()
    serving = cluster.local.ca.serving("embedded-tokens", "127.0.0.1")
    issuer = f"https://127.0.0.1:{port}"
    operator = OperatorProcess(
        cluster.kubeconfig,
        namespaces=[own_operator_namespace],
        log_path=tmp_path / "operator.log",
        extra_args=[
            f"--token-service-issuer={issuer}",
            f"--token-service-port={port}",
            f"--token-service-tls-cert={serving.cert}",
            f"--token-service-tls-key={serving.key}",
            f"--token-service-namespace={own_operator_namespace}",
        ],
    )
    try:
        agent = create_agent(
            cluster, own_operator_namespace, "inside", credentials={"audiences": ["https://mcp.example"]}
        )
        status = agent.wait_ready()
        core = kubernetes.client.CoreV1Api(cluster.admin())
        subject = core.create_namespaced_service_account_token(
            "inside-agent", own_operator_namespace, {"spec": {"audiences": [issuer], "expirationSeconds": 600}}
        ).status.token
        form = {
            "grant_type": claims.GRANT_TOKEN_EXCHANGE,
            "subject_token": subject,
            "subject_token_type": claims.TOKEN_TYPE_JWT,
            "audience": "https://mcp.example",
        }
        ca = str(cluster.local.ca.cert_path)

        def exchanged() -> requests.Response | None:
            response = requests.post(f"{issuer}/token", data=form, verify=ca, timeout=5)
            return response if response.status_code == 200 else None

        response = eventually(exchanged, timeout=60, what="embedded token service exchanges")
        token = response.json()["access_token"]
        jwks = requests.get(f"{issuer}/jwks.json", verify=ca, timeout=5).json()
        key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == jwt.get_unverified_header(token)["kid"]))
        decoded = jwt.decode(token, key, algorithms=[key.algorithm_name], audience="https://mcp.example", issuer=issuer)
        assert decoded["sub"] == status["agentID"]
        assert decoded["agent"]["owner"] == {"kind": "User", "name": "alice@example.com"}
    finally:
        operator.stop()
    assert "Traceback" not in operator.output()
