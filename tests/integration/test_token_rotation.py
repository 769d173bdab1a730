"""Issuer key rotation: the new key is published before it signs; tokens of the old key keep verifying."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from agentid.domain.issuer_keys import RotationPolicy
from tests.support.clusters import ClusterHandle
from tests.support.polling import eventually
from tests.support.tokens import (
    MCP,
    TokenServiceHandle,
    fresh_endpoint,
    provisioned,
    start_token_service,
    tool_service_account_token,
)

pytestmark = pytest.mark.cluster

POLICY = RotationPolicy(lead=dt.timedelta(seconds=1))
SPEC: dict[str, Any] = {"supervision": {"mode": "Autonomous"}, "credentials": {"audiences": [MCP]}}


class Rotating:
    """A second token service with its own keyring Secret, so rotating it leaves the session service alone."""

    def __init__(self, cluster: ClusterHandle) -> None:
        self.cluster = cluster
        self.secret_name = f"issuer-rotation-{uuid.uuid4().hex[:6]}"
        self.endpoint = fresh_endpoint()
        self.handle = self._start()

    def _start(self) -> TokenServiceHandle:
        thread = start_token_service(self.cluster, self.endpoint, secret_name=self.secret_name, rotation=POLICY)
        caller = tool_service_account_token(self.cluster, self.endpoint.issuer)
        return TokenServiceHandle(self.endpoint, thread, caller_token=caller)

    def restart(self) -> None:
        self.stop()
        self.handle = self._start()

    def stop(self) -> None:
        self.handle.session.close()
        self.handle.thread.stop()


@pytest.fixture
def rotating(cluster: ClusterHandle, token_service: TokenServiceHandle) -> Iterator[Rotating]:
    service = Rotating(cluster)
    yield service
    service.stop()


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def kids(service: TokenServiceHandle) -> list[str]:
    return [key["kid"] for key in service.get("/jwks.json").json()["keys"]]


def verifies(service: TokenServiceHandle, token: str) -> bool:
    jwks = service.get("/jwks.json").json()["keys"]
    key = next((jwt.PyJWK(k) for k in jwks if k["kid"] == kid_of(token)), None)
    if key is None:
        return False
    jwt.decode(token, key, algorithms=[key.algorithm_name], audience=MCP, issuer=service.issuer)
    return True


def test_rotation_publishes_the_new_key_first_and_old_tokens_keep_verifying(
    cluster: ClusterHandle, rotating: Rotating, token_namespace: str, token_service: TokenServiceHandle
) -> None:
    service = rotating.handle
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    eventually(lambda: service.service.agents.get(token_namespace, "triage") is not None, what="second service")
    subject = agent.service_account_token(service.issuer)
    old_token = service.token(subject, audience=MCP)
    old_kid = kid_of(old_token)
    assert kids(service) == [old_kid]

    service.thread.run(service.service.keyring.refresh(rotate=True))
    published = kids(service)
    assert len(published) == 2
    (new_kid,) = set(published) - {old_kid}

    def next_token_uses_the_new_key() -> bool:
        before = kids(service)
        token = service.token(subject, audience=MCP)
        assert kid_of(token) in before, "a token was signed by a key not yet published"
        return kid_of(token) == new_kid

    eventually(next_token_uses_the_new_key, what="tokens signed by the new key after the lead time")
    assert set(kids(service)) == {old_kid, new_kid}  # the old key stays published for its tokens' lifetime
    assert verifies(service, old_token)
    assert service.introspect(old_token)["active"] is True

    # The keyring lives in the Secret: a restarted service signs with the new key and still honours the old one.
    rotating.restart()
    service = rotating.handle
    assert set(kids(service)) == {old_kid, new_kid}
    assert verifies(service, old_token)
    assert service.introspect(old_token)["active"] is True
    assert kid_of(service.token(subject, audience=MCP)) == new_kid


def test_two_services_sharing_a_keyring_agree_on_its_keys(cluster: ClusterHandle, rotating: Rotating) -> None:
    """A second replica loads the Secret the first created instead of generating its own key."""
    endpoint = fresh_endpoint()
    thread = start_token_service(cluster, endpoint, secret_name=rotating.secret_name, rotation=POLICY)
    try:
        replica = TokenServiceHandle(endpoint, thread)
        assert kids(replica) == kids(rotating.handle)
    finally:
        thread.stop()
