"""Agent keys: generated per algorithm, rotated with overlap, regenerated when lost, never leaked."""

from __future__ import annotations

import datetime as dt

import kubernetes
import pytest
from cryptography.hazmat.primitives import serialization

from agentid.domain import keys
from tests.support.agents import Agent, create_agent
from tests.support.clusters import ClusterHandle
from tests.support.polling import eventually

pytestmark = pytest.mark.cluster


def _active(status: dict) -> dict:
    active = [key for key in status["keys"] if key["state"] == "Active"]
    assert len(active) == 1, status["keys"]
    return active[0]


def _secret_key_id(agent: Agent) -> str:
    core = kubernetes.client.CoreV1Api(agent.cluster.admin())
    secret = core.read_namespaced_secret(f"{agent.name}-agent-key", agent.namespace)
    return str(secret.metadata.annotations["agentid.dev/key-id"])


@pytest.mark.parametrize("algorithm", ["Ed25519", "ES256", "RS256"])
def test_each_algorithm_gets_a_key_whose_id_is_its_thumbprint(
    cluster: ClusterHandle, agent_namespace: str, algorithm: str
) -> None:
    agent = create_agent(cluster, agent_namespace, f"k-{algorithm.lower()}", credentials={"keyAlgorithm": algorithm})
    key = _active(agent.wait_ready())
    assert key["algorithm"] == algorithm
    assert keys.thumbprint(key["jwk"]) == key["keyID"]
    assert not keys.PRIVATE_JWK_MEMBERS & set(key["jwk"])
    pems = agent.private_key_pems()
    assert len(pems) == 1  # exactly one private key in the Secret
    private = serialization.load_pem_private_key(pems[0], password=None)
    assert keys.algorithm_of(private).value == algorithm
    assert keys.public_jwk(private.public_key(), keys.KeyAlgorithm(algorithm))["kid"] == key["keyID"]


def test_rotation_publishes_the_new_key_keeps_the_old_one_retiring_then_removes_it(
    cluster: ClusterHandle, agent_namespace: str
) -> None:
    agent = create_agent(cluster, agent_namespace, "rotor", credentials={"tokenTTL": "10s", "rotationPeriod": "1h"})
    first = _active(agent.wait_ready())
    # Let time pass for the key: its creation time (kept on the Secret) moves back past rotationPeriod.
    core = kubernetes.client.CoreV1Api(cluster.admin())
    long_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).replace(microsecond=0).isoformat()
    core.patch_namespaced_secret(
        "rotor-agent-key", agent_namespace, {"metadata": {"annotations": {"agentid.dev/key-created-at": long_ago}}}
    )

    def rotated() -> dict | None:
        status = agent.status()
        ids = {key["keyID"]: key["state"] for key in status.get("keys", [])}
        return status if ids.get(first["keyID"]) == "Retiring" and len(ids) == 2 else None

    status = eventually(rotated, timeout=30, what="new key active, old retiring")
    new = _active(status)
    assert new["keyID"] != first["keyID"]
    assert _secret_key_id(agent) == new["keyID"]
    assert len(agent.private_key_pems()) == 1
    retiring = next(key for key in status["keys"] if key["state"] == "Retiring")
    assert dt.datetime.fromisoformat(retiring["retiresAt"]) > dt.datetime.now(dt.UTC)
    # tokenTTL (10 s) + the operator's overlap allowance later, the old key is no longer published.
    eventually(
        lambda: [key["keyID"] for key in agent.status()["keys"]] == [new["keyID"]], timeout=40, what="old key retired"
    )


def test_a_deleted_key_secret_is_regenerated_with_a_new_key_id_and_a_warning(
    cluster: ClusterHandle, agent_namespace: str
) -> None:
    agent = create_agent(cluster, agent_namespace, "forgetful")
    first = _active(agent.wait_ready())
    core = kubernetes.client.CoreV1Api(cluster.admin())
    core.delete_namespaced_secret("forgetful-agent-key", agent_namespace)

    def regenerated() -> dict | None:
        status = agent.status()
        active = [key for key in status.get("keys", []) if key["state"] == "Active"]
        return status if active and active[0]["keyID"] != first["keyID"] else None

    status = eventually(regenerated, timeout=30, what="key regenerated")
    assert _secret_key_id(agent) == _active(status)["keyID"]
    events = kubernetes.client.EventsV1Api(cluster.admin()).list_namespaced_event(agent_namespace)
    warnings = [e for e in events.items if e.reason == "KeyRegenerated" and e.regarding.name == "forgetful"]
    assert warnings
    assert warnings[0].type == "Warning"


def test_changing_the_algorithm_rotates_to_a_key_of_that_algorithm(
    cluster: ClusterHandle, agent_namespace: str
) -> None:
    agent = create_agent(cluster, agent_namespace, "switcher")
    first = _active(agent.wait_ready())
    agent.patch_spec({"credentials": {"keyAlgorithm": "ES256"}})
    status = eventually(lambda: (s := agent.status()) and _active(s)["algorithm"] == "ES256" and s, what="ES256")
    assert _active(status)["keyID"] != first["keyID"]
    assert {key["keyID"] for key in status["keys"]} >= {first["keyID"]}  # the Ed25519 key is retiring
