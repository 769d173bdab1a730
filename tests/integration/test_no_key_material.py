"""Private keys never appear in logs, Events, status or annotations, whatever the agent went through."""

from __future__ import annotations

import datetime as dt
import json

import kubernetes
import pytest
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidKeyError

from agentid.api import v1alpha1
from tests.support.agents import create_agent
from tests.support.clusters import ClusterHandle
from tests.support.operator import LogCapture
from tests.support.polling import eventually

pytestmark = pytest.mark.cluster


def _fingerprints(pem: bytes) -> set[str]:
    """Substrings that would betray the key: PEM body lines and the private JWK members."""
    lines = {line for line in pem.decode().splitlines() if line and not line.startswith("-----") and len(line) >= 16}
    private = serialization.load_pem_private_key(pem, password=None)
    for algorithm in (OKPAlgorithm, ECAlgorithm, RSAAlgorithm):
        try:
            jwk = algorithm.to_jwk(private, as_dict=True)
        except (TypeError, ValueError, AttributeError, InvalidKeyError):
            continue
        lines |= {str(jwk[member]) for member in ("d", "p", "q", "dp", "dq", "qi") if member in jwk}
    return lines


def test_no_private_key_material_leaks_anywhere(
    cluster: ClusterHandle, agent_namespace: str, operator_logs: LogCapture
) -> None:
    fingerprints: set[str] = set()
    agents = [
        create_agent(cluster, agent_namespace, f"k-{alg.lower()}", credentials={"keyAlgorithm": alg})
        for alg in ("Ed25519", "ES256", "RS256")
    ]
    for agent in agents:
        agent.wait_ready()
        fingerprints |= {f for pem in agent.private_key_pems() for f in _fingerprints(pem)}
    # Exercise rotation (backdated key), regeneration (deleted Secret), suspension and revocation.
    core = kubernetes.client.CoreV1Api(cluster.admin())
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(days=40)).replace(microsecond=0).isoformat()
    core.patch_namespaced_secret(
        "k-es256-agent-key", agent_namespace, {"metadata": {"annotations": {"agentid.dev/key-created-at": past}}}
    )
    lost = agents[2].status()["keys"][0]["keyID"]
    core.delete_namespaced_secret("k-rs256-agent-key", agent_namespace)
    # Rotated: the new key, and the old one retiring. Regenerated: only the new key (the lost one is not published
    # again: it can only come from the Secret that is gone).
    eventually(lambda: len(agents[1].status().get("keys", [])) == 2, what="rotated key")
    eventually(lambda: [key["keyID"] for key in agents[2].status().get("keys", [])] not in ([], [lost]), what="new key")
    for agent in agents[1:]:
        fingerprints |= {f for pem in agent.private_key_pems() for f in _fingerprints(pem)}
    agents[0].patch_spec({"supervision": {"mode": "Suspended"}})
    agents[0].wait_phase("Suspended")
    agents[1].patch_spec({"revoked": True})
    agents[1].wait_phase("Revoked")
    assert len(fingerprints) > 10

    client = cluster.admin()
    haystacks: dict[str, str] = {"operator logs": "\n".join(operator_logs.lines)}
    events = kubernetes.client.EventsV1Api(client).list_namespaced_event(agent_namespace)
    haystacks["events"] = json.dumps([client.sanitize_for_serialization(e) for e in events.items])
    custom = kubernetes.client.CustomObjectsApi(client).list_namespaced_custom_object(
        v1alpha1.GROUP, v1alpha1.VERSION, agent_namespace, v1alpha1.PLURAL
    )
    haystacks["agents (status, annotations)"] = json.dumps(custom["items"])
    annotations = [o.metadata.annotations for o in core.list_namespaced_secret(agent_namespace).items]
    annotations += [o.metadata.annotations for o in core.list_namespaced_service_account(agent_namespace).items]
    haystacks["annotations"] = json.dumps(annotations)
    assert "Provisioned" in haystacks["events"]  # the scan is looking at real data
    for where, text in haystacks.items():
        leaked = [fingerprint[:8] + "..." for fingerprint in fingerprints if fingerprint in text]
        assert leaked == [], f"key material in {where}"
