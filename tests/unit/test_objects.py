"""Owned objects: builders, names, projections of watched objects (which never keep key material)."""

from __future__ import annotations

import base64
import json

from agentid.api.v1alpha1 import KeyAlgorithm
from agentid.domain import desired, keys, naming, projections
from agentid.domain.supervision import effective_access
from tests.support.agents import agent_manifest
from tests.support.factories import NOW, agent


def _secret(signing_key: keys.SigningKey, **overrides: str) -> dict:
    manifest = desired.key_secret(
        agent(),
        private_pem=signing_key.private_pem(),
        key_id=signing_key.key_id,
        algorithm=signing_key.algorithm.value,
        created_at=NOW.isoformat(),
    )
    manifest["metadata"]["annotations"].update(overrides)
    return manifest


def test_every_owned_object_is_labelled_and_owned_by_the_agent() -> None:
    current = agent(clusterRoleRefs=["view"])
    objects = [
        desired.service_account(current, "spiffe://x"),
        *desired.access_objects(
            current,
            effective_access(
                current.spec, {"view": projections.cluster_role_info({"metadata": {"name": "view"}, "rules": []})}
            ),
        ),
    ]
    for manifest in objects:
        assert manifest["metadata"]["labels"][naming.AGENT_LABEL] == "triage"
        assert manifest["metadata"]["labels"][naming.MANAGED_BY_LABEL] == "agentid-operator"
        assert manifest["metadata"]["ownerReferences"] == [desired.owner_reference(current)]
    subjects = objects[2]["subjects"]
    assert {"kind": "ServiceAccount", "name": "triage-agent", "namespace": "finance"} in subjects
    assert {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "agentid:uid:uid-triage"} in subjects
    annotations = objects[0]["metadata"]["annotations"]
    assert annotations[naming.OWNER_ANNOTATION] == "User:alice@example.com"


def test_cluster_role_binding_names_keep_the_cluster_role_name_verbatim() -> None:
    assert naming.cluster_role_binding("a", "view") == "a-agent:view"
    assert naming.cluster_role_binding("a", "system:aggregate-to-view") == "a-agent:system:aggregate-to-view"


def test_a_key_secret_projects_to_public_information_only() -> None:
    signing_key = keys.generate(KeyAlgorithm.ES256)
    secret = _secret(signing_key)
    observed = projections.observed_key(secret)
    assert observed is not None
    assert observed.key_id == signing_key.key_id
    assert observed.created_at == NOW
    summary = projections.summary("Secret", secret)
    assert "data" not in summary
    assert signing_key.private_pem().decode().splitlines()[1] not in repr((summary, observed))


def test_a_secret_whose_key_does_not_match_its_declared_id_is_not_trusted() -> None:
    signing_key = keys.generate(KeyAlgorithm.ED25519)
    assert projections.observed_key(_secret(signing_key, **{naming.KEY_ID_ANNOTATION: "forged"})) is None
    garbled = _secret(signing_key)
    garbled["data"][naming.KEY_SECRET_PRIVATE_KEY] = base64.b64encode(b"not a key").decode()
    assert projections.observed_key(garbled) is None
    wrong_type = {**_secret(signing_key), "type": "Opaque"}
    assert projections.observed_key(wrong_type) is None


def test_jwks_never_carry_private_members_and_thumbprints_follow_rfc_7638() -> None:
    for algorithm in KeyAlgorithm:
        jwk = keys.generate(algorithm).jwk
        assert not keys.PRIVATE_JWK_MEMBERS & set(jwk)
        assert jwk["kid"] == keys.thumbprint(jwk)
    rfc_example = {
        "kty": "RSA",
        "e": "AQAB",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMs"
            "tn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5ha"
            "jrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        ),
    }
    assert keys.thumbprint(rfc_example) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_the_in_memory_agent_drops_bookkeeping_but_keeps_what_the_reconciler_reads() -> None:
    body = agent_manifest("triage", "finance")
    body["metadata"]["uid"] = "uid-triage"
    body["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    body["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": "{...}",
        "agentid.dev/created-by": "alice",
    }
    body["status"] = {"phase": "Active"}
    compact = projections.compact_agent(body)
    assert "managedFields" not in compact["metadata"]
    assert compact["metadata"]["annotations"] == {"agentid.dev/created-by": "alice"}
    assert (compact["spec"], compact["status"]) == (body["spec"], body["status"])
    assert compact["metadata"]["uid"] == body["metadata"]["uid"]


def test_kept_objects_share_their_repeated_strings() -> None:
    first, second = (json.loads(json.dumps(agent_manifest("triage", "finance"))) for _ in range(2))
    assert first["apiVersion"] is not second["apiVersion"]  # as two watch events decode them
    kept = [projections.compact_agent(body) for body in (first, second)]
    assert kept[0]["apiVersion"] is kept[1]["apiVersion"]
    assert kept[0] == projections.compact_agent(first)
