"""Shared Signals against the real token service on the session apiserver: a receiver (agentid.verify) guarding an
offline verifier refuses tokens from the suspension / revocation / deletion / expiry event on, for the subject and
for any actor of a delegation; SETs verify with an independent JOSE library (joserfc); a restarted receiver
catches up; stream management refuses the unauthenticated and the unauthorised; push delivery (RFC 8935) works;
RFC 7009 revokes a token and its descendants; introspection cascades over a three-hop delegation chain."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import kubernetes
import pytest
import requests
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet
from starlette.applications import Starlette

from agentid.api import v1alpha1
from agentid.api.v1alpha1 import KeyAlgorithm
from agentid.domain import keys
from agentid.tokens.settings import TLS, TokenServiceSettings
from agentid.verify import InvalidToken, JWKSCache, JWTVerifier
from agentid.verify.asgi import AgentAuthMiddleware
from tests.support.clusters import ClusterHandle
from tests.support.mcp_tools import AsgiThread
from tests.support.polling import eventually
from tests.support.signals import ReceiverThread, receiver_token
from tests.support.tokens import (
    MCP,
    SERVICE_NAMESPACE,
    ProvisionedAgent,
    TokenServiceHandle,
    TokenServiceThread,
    fresh_endpoint,
    provisioned,
)

pytestmark = pytest.mark.cluster

SPEC: dict[str, Any] = {"supervision": {"mode": "Autonomous"}, "credentials": {"audiences": [MCP]}}
CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
POLL = "urn:ietf:rfc:8936"
PUSH = "urn:ietf:rfc:8935"


@pytest.fixture(scope="module")
def receiver_credentials(cluster: ClusterHandle, token_service: TokenServiceHandle) -> str:
    return receiver_token(cluster, token_service.issuer)


@pytest.fixture
def receiver(token_service: TokenServiceHandle, receiver_credentials: str) -> Iterator[ReceiverThread]:
    running = ReceiverThread(token_service, receiver_credentials, MCP, name=f"receiver-{uuid.uuid4().hex[:8]}").start()
    yield running
    running.close()


def ssf(
    token_service: TokenServiceHandle, method: str, path: str, token: str | None, **kwargs: Any
) -> requests.Response:
    headers = {**kwargs.pop("headers", {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    return token_service.session.request(
        method, token_service.issuer + path, headers=headers, verify=token_service.endpoint.ca, timeout=30, **kwargs
    )


def agent_with_token(
    cluster: ClusterHandle, token_service: TokenServiceHandle, namespace: str, name: str = "triage", **spec: Any
) -> tuple[ProvisionedAgent, str]:
    agent = provisioned(cluster, token_service, namespace, name, **{**SPEC, **spec})
    return agent, token_service.token(agent.service_account_token(token_service.issuer), audience=MCP)


def refused(receiver: ReceiverThread, token: str) -> bool:
    return receiver.verdict(token).startswith("refused")


# -- transmitter: metadata, SETs verified independently -----------------------------------------------------------


def test_the_transmitter_publishes_ssf_metadata(token_service: TokenServiceHandle) -> None:
    metadata = token_service.get("/.well-known/ssf-configuration").json()
    assert metadata["issuer"] == token_service.issuer
    assert metadata["spec_version"] == "1_0"
    assert set(metadata["delivery_methods_supported"]) == {PUSH, POLL}
    assert metadata["configuration_endpoint"] == f"{token_service.issuer}/ssf/streams"
    assert metadata["jwks_uri"] == f"{token_service.issuer}/jwks.json"


def test_a_suspension_is_a_set_signed_by_the_issuer_that_joserfc_verifies(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, receiver_credentials: str
) -> None:
    agent, _ = agent_with_token(cluster, token_service, token_namespace)
    created = ssf(token_service, "POST", "/ssf/streams", receiver_credentials, json={"delivery": {"method": POLL}})
    assert created.status_code == 201, created.text
    stream = created.json()
    try:
        agent.patch_spec({"supervision": {"mode": "Suspended"}})
        sets: dict[str, str] = {}

        def suspension() -> dict[str, Any]:
            answer = ssf(token_service, "POST", f"/ssf/poll/{stream['stream_id']}", receiver_credentials, json={})
            assert answer.status_code == 200, answer.text
            sets.update(answer.json()["sets"])
            for value in sets.values():
                decoded = jose_jwt.decode(value, KeySet.import_key_set(token_service.get("/jwks.json").json()))
                event = decoded.claims["events"].get(CAEP + "assurance-level-change")
                if event is not None and decoded.claims["sub_id"] == {"format": "uri", "uri": agent.agent_id}:
                    assert decoded.header["typ"] == "secevent+jwt"
                    assert decoded.claims["iss"] == token_service.issuer
                    assert decoded.claims["aud"] == stream["aud"]
                    return dict(event)
            raise AssertionError("no assurance-level-change yet")

        event = eventually(suspension, what="the suspension's SET")
        verifier = JWTVerifier(
            issuer=token_service.issuer, audience=MCP, keys=JWKSCache(token_service.issuer, http=None)
        )  # type: ignore[arg-type]
        for value in sets.values():  # a SET never passes as an access token
            with pytest.raises(InvalidToken, match="typ"):
                verifier.header(value)
        assert event["namespace"] == "agentid.dev/supervision"
        assert (event["previous_level"], event["current_level"]) == ("Autonomous", "Suspended")
        assert event["change_direction"] == "increase"
        # Acknowledged SETs are gone (RFC 8936 §2.4).
        answer = ssf(
            token_service,
            "POST",
            f"/ssf/poll/{stream['stream_id']}",
            receiver_credentials,
            json={"ack": list(sets), "returnImmediately": True},
        ).json()
        assert not set(answer["sets"]) & set(sets)
    finally:
        ssf(token_service, "DELETE", f"/ssf/streams?stream_id={stream['stream_id']}", receiver_credentials)


def test_verification_echoes_the_state_and_a_paused_stream_logs_nothing(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, receiver_credentials: str
) -> None:
    stream = ssf(token_service, "POST", "/ssf/streams", receiver_credentials, json={}).json()  # poll by default
    stream_id = stream["stream_id"]
    poll = f"/ssf/poll/{stream_id}"
    try:
        first = ssf(token_service, "POST", poll, receiver_credentials, json={"returnImmediately": True}).json()
        acks = list(first["sets"])  # the snapshot
        verify = ssf(
            token_service, "POST", "/ssf/verify", receiver_credentials, json={"stream_id": stream_id, "state": "s1"}
        )
        assert verify.status_code == 204
        answer = ssf(token_service, "POST", poll, receiver_credentials, json={"ack": acks, "returnImmediately": True})
        events = [jwt.decode(value, options={"verify_signature": False}) for value in answer.json()["sets"].values()]
        verification = "https://schemas.openid.net/secevent/ssf/event-type/verification"
        assert [event["events"][verification] for event in events if verification in event["events"]] == [
            {"state": "s1"}
        ]
        paused = ssf(
            token_service,
            "POST",
            "/ssf/status",
            receiver_credentials,
            json={"stream_id": stream_id, "status": "paused"},
        )
        assert paused.json() == {"stream_id": stream_id, "status": "paused"}
        ssf(
            token_service, "POST", poll, receiver_credentials, json={"ack": list(answer.json()["sets"]), "maxEvents": 0}
        )
        agent, _ = agent_with_token(cluster, token_service, token_namespace)
        agent.patch_spec({"supervision": {"mode": "Suspended"}})
        eventually(
            lambda: (
                token_service.service.agents.get(token_namespace, "triage").spec.supervision.mode.value == "Suspended"
            )
        )
        quiet = ssf(token_service, "POST", poll, receiver_credentials, json={"returnImmediately": True}).json()
        assert quiet["sets"] == {}
        status = ssf(token_service, "GET", f"/ssf/status?stream_id={stream_id}", receiver_credentials).json()
        assert status["status"] == "paused"
    finally:
        ssf(token_service, "DELETE", f"/ssf/streams?stream_id={stream_id}", receiver_credentials)


# -- receiver: the offline verifier refuses from the event on ----------------------------------------------------


def test_suspend_refuses_and_resume_accepts_again(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, receiver: ReceiverThread
) -> None:
    agent, token = agent_with_token(cluster, token_service, token_namespace)
    assert receiver.verdict(token) == "accepted"
    agent.patch_spec({"supervision": {"mode": "Suspended"}})
    eventually(lambda: refused(receiver, token), what="refused after suspension")
    agent.patch_spec({"supervision": {"mode": "Supervised"}})
    eventually(lambda: receiver.verdict(token) == "accepted", what="accepted after resume")
    principal = receiver.call(receiver.verifier.verify(token))
    assert principal.supervision.value == "Supervised"  # the live mode, not the token's Autonomous


def test_revoke_refuses_every_token_issued_before_it(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, receiver: ReceiverThread
) -> None:
    agent, token = agent_with_token(cluster, token_service, token_namespace)
    assert receiver.verdict(token) == "accepted"
    agent.patch_spec({"revoked": True})
    eventually(lambda: refused(receiver, token), what="refused after revocation")
    assert "revoked" in receiver.verdict(token)


def test_delete_refuses(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, receiver: ReceiverThread
) -> None:
    _, token = agent_with_token(cluster, token_service, token_namespace)
    assert receiver.verdict(token) == "accepted"
    kubernetes.client.CustomObjectsApi(cluster.admin()).delete_namespaced_custom_object(
        v1alpha1.GROUP, v1alpha1.VERSION, token_namespace, v1alpha1.PLURAL, "triage"
    )
    eventually(lambda: refused(receiver, token), what="refused after deletion")


def test_expiry_is_a_session_revoked_event(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, receiver: ReceiverThread
) -> None:
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=20)
    agent, token = agent_with_token(
        cluster, token_service, token_namespace, expiresAt=expires.isoformat().replace("+00:00", "Z")
    )
    assert receiver.verdict(token) == "accepted"
    eventually(lambda: agent.agent_id in receiver.receiver.state.revoked, timeout=60, what="session-revoked event")
    # Within the verifier's clock skew the token would still verify by its exp alone; the event refuses it.
    assert refused(receiver, token)


def test_a_delegated_token_is_refused_when_any_actor_of_the_chain_is_suspended(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, receiver: ReceiverThread
) -> None:
    chain = three_hop_chain(cluster, token_service, token_namespace)
    assert receiver.verdict(chain.tokens[-1]) == "accepted"
    chain.actors["planner"].patch_spec({"supervision": {"mode": "Suspended"}})  # the innermost actor
    eventually(lambda: refused(receiver, chain.tokens[-1]), what="the three-hop token refused")
    assert refused(receiver, chain.tokens[1])
    assert receiver.verdict(chain.tokens[0]) == "accepted"  # the subject's own token has no suspended agent


def test_a_restarted_receiver_catches_up_on_what_happened_while_it_was_down(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, receiver_credentials: str
) -> None:
    name = f"restarted-{uuid.uuid4().hex[:8]}"
    first = ReceiverThread(token_service, receiver_credentials, MCP, name=name).start()
    suspended, suspended_token = agent_with_token(cluster, token_service, token_namespace, "triage")
    revoked, revoked_token = agent_with_token(cluster, token_service, token_namespace, "planner")
    assert first.verdict(suspended_token) == first.verdict(revoked_token) == "accepted"
    old_stream = first.receiver.stream_id
    first.close()  # down: nothing acknowledged, nothing deleted
    suspended.patch_spec({"supervision": {"mode": "Suspended"}})
    revoked.patch_spec({"revoked": True})
    stream = token_service.service.transmitter.streams[str(old_stream)]
    eventually(lambda: len(stream.log) >= 2, what="the events wait in the stream's log")
    second = ReceiverThread(token_service, receiver_credentials, MCP, name=name).start()
    try:
        assert refused(second, suspended_token)  # no waiting: caught up before it reported connected
        assert refused(second, revoked_token)
        assert str(old_stream) not in token_service.service.transmitter.streams  # drained, then deleted
    finally:
        second.close()


def test_a_receiver_whose_stream_vanished_subscribes_again_and_keeps_refusing(
    cluster: ClusterHandle,
    token_service: TokenServiceHandle,
    token_namespace: str,
    receiver: ReceiverThread,
    receiver_credentials: str,
) -> None:
    """What a token-service restart looks like to a receiver: its stream is gone (404); it must not go deaf."""
    agent, token = agent_with_token(cluster, token_service, token_namespace)
    lost = receiver.receiver.stream_id
    gone = ssf(token_service, "DELETE", f"/ssf/streams?stream_id={lost}", receiver_credentials)
    assert gone.status_code == 204
    eventually(lambda: receiver.receiver.stream_id not in (None, lost), what="a new stream")
    agent.patch_spec({"supervision": {"mode": "Suspended"}})
    eventually(lambda: refused(receiver, token), what="refused through the new stream")


def test_a_resume_while_the_receiver_was_away_and_its_log_was_lost_is_not_held_against_the_agent(
    cluster: ClusterHandle,
    token_service: TokenServiceHandle,
    token_namespace: str,
    receiver: ReceiverThread,
    receiver_credentials: str,
) -> None:
    """Resubscribing rebuilds the suspensions in force from the snapshot: a stale one is not kept forever."""
    agent, token = agent_with_token(cluster, token_service, token_namespace)
    agent.patch_spec({"supervision": {"mode": "Suspended"}})
    eventually(lambda: refused(receiver, token), what="refused after suspension")
    receiver.stop()
    agent.patch_spec({"supervision": {"mode": "Autonomous"}})
    lost = ssf(token_service, "DELETE", f"/ssf/streams?stream_id={receiver.receiver.stream_id}", receiver_credentials)
    assert lost.status_code == 204  # the resume event is gone with the stream (as after a token-service restart)
    eventually(lambda: "Autonomous" in str(token_service.introspect(token).get("agent")), what="resumed")
    receiver.start()
    assert receiver.verdict(token) == "accepted"


def test_a_receiver_fails_closed_when_its_stream_is_gone_too_long(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, receiver_credentials: str
) -> None:
    _, token = agent_with_token(cluster, token_service, token_namespace)
    clock = Clock()
    guarded = ReceiverThread(token_service, receiver_credentials, MCP, fail_closed_after=15.0, clock=clock).start()
    try:
        clock.advance(14.0)  # the window covers a quiet long poll
        assert guarded.verdict(token) == "accepted"
        guarded.stop()
        clock.advance(30.0)
        assert guarded.verdict(token) == "unavailable"
    finally:
        guarded.close()


class Clock:
    """Monotonic time the test can move forward (the receiver's fail-closed window without waiting for it)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def __call__(self) -> float:
        return time.monotonic() + self.offset


# -- push (RFC 8935) --------------------------------------------------------------------------------------------


def test_push_delivery_refuses_from_the_event_on_and_the_endpoint_refuses_forgeries(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, receiver_credentials: str
) -> None:
    server = AsgiThread(None)
    pushed = ReceiverThread(
        token_service,
        receiver_credentials,
        MCP,
        delivery=PUSH,
        push_url=f"{server.url}/events",
        fail_closed_after=None,
    )
    tool = AgentAuthMiddleware(Starlette(), verifier=pushed.verifier, resource=MCP)  # the push path needs no agent
    server = AsgiThread(pushed.push_app(tool), server.port)
    server.start()
    pushed.start()
    try:
        agent, token = agent_with_token(cluster, token_service, token_namespace)
        assert pushed.verdict(token) == "accepted"
        agent.patch_spec({"supervision": {"mode": "Suspended"}})
        eventually(lambda: refused(pushed, token), what="refused after a pushed suspension")
        headers = {"Content-Type": "application/secevent+jwt"}
        assert requests.post(f"{server.url}/events", data="x", headers=headers, timeout=10).status_code == 401
        forged = forged_set(token_service.issuer, pushed.receiver.audience or "", agent.agent_id)
        secret = f"Bearer {pushed.receiver._push_secret}"
        answer = requests.post(
            f"{server.url}/events", data=forged, headers={**headers, "Authorization": secret}, timeout=10
        )
        assert answer.status_code == 400
        assert answer.json()["err"] == "invalid_key"
    finally:
        pushed.close()
        server.stop()


def forged_set(issuer: str, audience: str, agent_id: str) -> str:
    key = keys.generate(KeyAlgorithm.ES256)
    payload = {
        "iss": issuer,
        "aud": audience,
        "iat": 1,
        "jti": uuid.uuid4().hex,
        "sub_id": {"format": "uri", "uri": agent_id},
        "events": {CAEP + "session-revoked": {"event_timestamp": 2}},
    }
    return jwt.encode(payload, key.private_key, "ES256", headers={"kid": key.key_id, "typ": "secevent+jwt"})


# -- hostile stream management ----------------------------------------------------------------------------------


def test_stream_management_refuses_the_unauthenticated_and_the_unauthorised(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, receiver_credentials: str
) -> None:
    body = {"delivery": {"method": POLL}}
    assert ssf(token_service, "POST", "/ssf/streams", None, json=body).status_code == 401
    assert ssf(token_service, "POST", "/ssf/streams", "not.a.token", json=body).status_code == 401
    assert ssf(token_service, "GET", "/ssf/streams", None).status_code == 401
    assert ssf(token_service, "POST", "/ssf/poll/anything", None, json={}).status_code == 401
    agent, agent_token = agent_with_token(cluster, token_service, token_namespace)
    forbidden = ssf(token_service, "POST", "/ssf/streams", agent.service_account_token(token_service.issuer), json=body)
    assert forbidden.status_code == 403  # authenticated, but may not read every agent
    assert ssf(token_service, "POST", "/ssf/streams", agent_token, json=body).status_code == 401  # not a SA token
    # Bad requests from an authorised receiver get precise 400s.
    for bad in (
        {"delivery": {"method": "urn:example:carrier-pigeon"}},
        {"delivery": {"method": PUSH, "endpoint_url": "http://192.0.2.10/events"}},
        {"delivery": {"method": PUSH, "endpoint_url": "https://user:pw@example.com/events"}},
        {"delivery": {"method": POLL, "endpoint_url": "https://example.com/"}},
        {"events_requested": "all"},
    ):
        answer = ssf(token_service, "POST", "/ssf/streams", receiver_credentials, json=bad)
        assert answer.status_code == 400, (bad, answer.text)
        assert answer.json()["error"] == "invalid_request"
    not_json = ssf(
        token_service,
        "POST",
        "/ssf/streams",
        receiver_credentials,
        data="{",
        headers={"Content-Type": "application/json"},
    )
    assert not_json.status_code == 400
    poll = ssf(token_service, "POST", "/ssf/streams", receiver_credentials, json=body).json()
    try:
        for bad_poll in ({"ack": "all"}, {"maxEvents": -1}, {"setErrs": ["x"]}):
            answer = ssf(token_service, "POST", f"/ssf/poll/{poll['stream_id']}", receiver_credentials, json=bad_poll)
            assert answer.status_code == 400, (bad_poll, answer.text)
    finally:
        ssf(token_service, "DELETE", f"/ssf/streams?stream_id={poll['stream_id']}", receiver_credentials)
    # Another receiver's stream does not exist for it.
    other = receiver_token(cluster, token_service.issuer, "other-receiver")
    mine = ssf(token_service, "POST", "/ssf/streams", receiver_credentials, json=body).json()
    try:
        for method, path, kwargs in (
            ("GET", f"/ssf/streams?stream_id={mine['stream_id']}", {}),
            ("DELETE", f"/ssf/streams?stream_id={mine['stream_id']}", {}),
            ("POST", f"/ssf/poll/{mine['stream_id']}", {"json": {"returnImmediately": True}}),
        ):
            assert ssf(token_service, method, path, other, **kwargs).status_code == 404
    finally:
        ssf(token_service, "DELETE", f"/ssf/streams?stream_id={mine['stream_id']}", receiver_credentials)


# -- the token service: cascade and RFC 7009 --------------------------------------------------------------------


class Chain:
    def __init__(self, subject: ProvisionedAgent, actors: dict[str, ProvisionedAgent], tokens: list[str]) -> None:
        self.subject = subject
        self.actors = actors
        self.tokens = tokens  # the subject's token, then one more actor per hop


def three_hop_chain(cluster: ClusterHandle, token_service: TokenServiceHandle, namespace: str) -> Chain:
    names = ("planner", "orchestrator", "reviewer")
    subject, handed_over = agent_with_token(
        cluster,
        token_service,
        namespace,
        "triage",
        delegation={"allowedActors": [{"name": name} for name in names], "maxDepth": 3},
    )
    actors = {name: provisioned(cluster, token_service, namespace, name, **SPEC) for name in names}
    tokens = [handed_over]
    for name in names:
        tokens.append(token_service.delegated(tokens[-1], actors[name].service_account_token(token_service.issuer)))
    return Chain(subject, actors, tokens)


def test_introspection_cascades_over_a_three_hop_chain(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    chain = three_hop_chain(cluster, token_service, token_namespace)
    assert all(token_service.introspect(token)["active"] for token in chain.tokens)
    chain.actors["planner"].patch_spec({"supervision": {"mode": "Suspended"}})  # no longer the current actor
    eventually(lambda: token_service.introspect(chain.tokens[3]) == {"active": False}, what="cascade")
    assert token_service.introspect(chain.tokens[2]) == {"active": False}
    assert token_service.introspect(chain.tokens[1]) == {"active": False}
    assert token_service.introspect(chain.tokens[0])["active"] is True


def test_rfc7009_revokes_one_token_and_the_tokens_exchanged_from_it(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    chain = three_hop_chain(cluster, token_service, token_namespace)
    sibling = token_service.token(chain.subject.service_account_token(token_service.issuer), audience=MCP)
    caller = {"Authorization": f"Bearer {token_service.caller_token}"}
    assert token_service.post("/revoke", {"token": chain.tokens[1]}).status_code == 401  # unauthenticated
    assert token_service.introspect(chain.tokens[1])["active"] is True
    answer = token_service.post(
        "/revoke", {"token": chain.tokens[1], "token_type_hint": "access_token"}, headers=caller
    )
    assert answer.status_code == 200, answer.text
    for token in chain.tokens[1:]:
        assert token_service.introspect(token) == {"active": False}  # the token and everything exchanged from it
    assert token_service.introspect(chain.tokens[0])["active"] is True  # its parent
    assert token_service.introspect(sibling)["active"] is True
    # A token the service cannot verify is "revoked" without saying anything (RFC 7009 §2.2).
    assert token_service.post("/revoke", {"token": "garbage"}, headers=caller).status_code == 200
    # The record is in the Kubernetes API, where every replica watches it.
    jti = jwt.decode(chain.tokens[1], options={"verify_signature": False})["jti"]
    records = kubernetes.client.CoreV1Api(cluster.admin()).list_namespaced_config_map(
        "agentid-system", label_selector="agentid.dev/component=revoked-token"
    )
    assert jti in {item.data["jti"] for item in records.items}


def test_a_revocation_at_one_replica_is_honoured_by_another(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    """Two replicas of one issuer (same keyring Secret, same namespace): the revocation travels through the
    Kubernetes API, not through either process."""
    _, token = agent_with_token(cluster, token_service, token_namespace)
    other = fresh_endpoint()
    settings = TokenServiceSettings(
        issuer=token_service.issuer,  # the same issuer, served from another port
        port=other.port,
        tls=TLS(Path(other.cert), Path(other.key)),
        namespace=SERVICE_NAMESPACE,
    )
    replica = TokenServiceThread(settings, cluster.kubeconfig).start()
    caller = {"Authorization": f"Bearer {token_service.caller_token}"}

    def active_at_replica() -> bool:
        answer = requests.post(
            f"https://127.0.0.1:{other.port}/introspect",
            data={"token": token},
            headers=caller,
            verify=other.ca,
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return bool(answer.json()["active"])

    try:
        eventually(active_at_replica, what="the replica knows the agent")
        assert token_service.post("/revoke", {"token": token}, headers=caller).status_code == 200
        eventually(lambda: not active_at_replica(), what="the other replica honours the revocation")
    finally:
        replica.stop()
