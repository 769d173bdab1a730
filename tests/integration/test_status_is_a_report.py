"""Status is a report, never an input (security.md): whoever may write an agent's status subresource cannot plant
a key, an agent ID or a ServiceAccount UID that the token service then honours. Key material comes only from
the key Secret agentid created, which the operator mirrors onto the agent's own ServiceAccount."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import jwt
import kubernetes
import pytest

from agentid.api import v1alpha1
from agentid.api.v1alpha1 import KeyAlgorithm
from agentid.domain import claims, keys, naming
from tests.support.clusters import ClusterHandle
from tests.support.polling import eventually
from tests.support.tokens import MCP, ProvisionedAgent, TokenServiceHandle, provisioned

pytestmark = pytest.mark.cluster
SPEC: dict[str, Any] = {"credentials": {"audiences": [MCP]}}


def _patch_status(cluster: ClusterHandle, agent: ProvisionedAgent, status: dict[str, Any]) -> None:
    kubernetes.client.CustomObjectsApi(cluster.admin()).patch_namespaced_custom_object_status(
        v1alpha1.GROUP, v1alpha1.VERSION, agent.namespace, v1alpha1.PLURAL, agent.name, {"status": status}
    )


def _assertion(agent_id: str, key: keys.SigningKey, audience: str) -> str:
    now = int(dt.datetime.now(dt.UTC).timestamp())
    payload = {"iss": agent_id, "sub": agent_id, "aud": audience, "iat": now, "exp": now + 60, "jti": uuid.uuid4().hex}
    return jwt.encode(payload, key.private_key, algorithm=key.jws_algorithm, headers={"kid": key.key_id})


def test_a_key_planted_in_status_verifies_nothing_and_is_published_nowhere(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "planted", **SPEC)
    genuine = agent.signing_key()
    planted = keys.generate(KeyAlgorithm.ED25519)
    record = {
        "keyID": planted.key_id,
        "algorithm": "Ed25519",
        "createdAt": dt.datetime.now(dt.UTC).isoformat(),
        "state": "Active",
        "jwk": keys.public_only(planted.jwk),
    }
    _patch_status(cluster, agent, {"keys": [record, *agent.agent.status()["keys"]]})

    form = {"grant_type": claims.GRANT_JWT_BEARER, "audience": MCP}
    endpoint = f"{token_service.issuer}/token"
    forged = token_service.post("/token", {**form, "assertion": _assertion(agent.agent_id, planted, endpoint)})
    assert forged.status_code in (400, 401)
    assert forged.json()["error"] == "invalid_grant"
    published = token_service.get(f"/agents/{agent.namespace}/{agent.name}/jwks.json").json()["keys"]
    assert [key["kid"] for key in published] == [genuine.key_id]

    # The agent's own key still works, and the operator's next report no longer carries the planted key.
    honest = token_service.post("/token", {**form, "assertion": agent.assertion(endpoint)})
    assert honest.status_code == 200, honest.text
    agent.patch_spec({"displayName": "Reported again"})
    eventually(
        lambda: [key["keyID"] for key in agent.agent.status()["keys"]] == [genuine.key_id],
        what="status reports the Secret's keys only",
    )


def test_a_planted_agent_id_or_service_account_uid_changes_nothing(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    victim = provisioned(cluster, token_service, token_namespace, "victim", **SPEC)
    agent = provisioned(cluster, token_service, token_namespace, "spoofer", **SPEC)
    core = kubernetes.client.CoreV1Api(cluster.admin())
    intruder = core.create_namespaced_service_account(token_namespace, {"metadata": {"name": "intruder"}})
    _patch_status(cluster, agent, {"agentID": victim.agent_id, "serviceAccountUID": intruder.metadata.uid})
    eventually(
        lambda: (
            token_service.service.agents.get(token_namespace, "spoofer") is not None
            and (
                token_service.service.agents.get(token_namespace, "spoofer").metadata.resource_version
                == agent.body()["metadata"]["resourceVersion"]
            )
        ),
        what="the token service has seen the planted status",
    )

    token = token_service.token(agent.service_account_token(token_service.issuer), audience=MCP)
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == naming.agent_id(
        "cluster.local", token_namespace, "spoofer"
    )
    request = {"spec": {"audiences": [token_service.issuer], "expirationSeconds": 600}}
    foreign = core.create_namespaced_service_account_token("intruder", token_namespace, request).status.token
    refused = token_service.exchange(foreign, audience=MCP)
    assert refused.status_code in (400, 401)
    assert refused.json()["error"] in ("invalid_grant", "invalid_request")
