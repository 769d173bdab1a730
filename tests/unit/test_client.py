"""The agent SDK's pure parts: typed errors from refusals, the token cache's refresh rule, request forms, and its
import footprint (a fresh interpreter importing the SDK loads no Kopf, Kubernetes client or HTTP server)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agentid.client import errors, protocol
from agentid.client.credentials import Credentials
from agentid.client.protocol import Issued, Proof, TokenCache


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"error": "invalid_grant", "reason": "Suspended"}, errors.AgentSuspended),
        (400, {"error": "invalid_grant", "reason": "Revoked"}, errors.AgentRevoked),
        (400, {"error": "invalid_grant", "reason": "Expired"}, errors.AgentRevoked),
        (400, {"error": "invalid_target", "reason": "AudienceNotAllowed"}, errors.AudienceRefused),
        (400, {"error": "invalid_target"}, errors.AudienceRefused),
        (400, {"error": "invalid_grant", "reason": "ActorNotAllowed"}, errors.DelegationRefused),
        (401, {"error": "invalid_grant"}, errors.InvalidCredentials),
        (400, {"error": "invalid_request"}, errors.TokenRefused),
    ],
)
def test_refusals_become_typed_errors(status: int, body: dict[str, str], expected: type[Exception]) -> None:
    refusal = errors.refusal(status, body)
    assert type(refusal) is expected
    assert refusal.status == status


def test_a_cached_token_is_reused_until_most_of_its_life_has_passed() -> None:
    cache = TokenCache(fraction=0.8, margin=30)
    cache.put("aud", Issued(token="t", issued_at=1000, expires_at=1600))
    assert cache.get("aud", 1479) == "t"
    assert cache.get("aud", 1480) is None  # 80 % of 600 s
    cache.invalidate("aud")
    assert cache.get("aud", 1001) is None
    latest = cache.latest("aud", 1599)
    assert latest is not None
    assert latest.token == "t"  # kept to explain a later refusal, until it expires
    assert cache.latest("aud", 1600) is None
    cache.put("short", Issued(token="s", issued_at=1000, expires_at=1060))
    assert cache.get("short", 1029) == "s"
    assert cache.get("short", 1030) is None  # never closer than the margin to expiry


def test_forms_follow_rfc_8693_and_7523_and_proofs_never_print_their_token() -> None:
    own = protocol.own_token_form(Proof("sa"), ["https://a"])
    assert own == [
        ("grant_type", protocol.GRANT_TOKEN_EXCHANGE),
        ("subject_token", "sa"),
        ("subject_token_type", protocol.TOKEN_TYPE_JWT),
        ("audience", "https://a"),
    ]
    assertion = protocol.own_token_form(Proof("signed", assertion=True), ["https://a"])
    assert assertion[:2] == [("grant_type", protocol.GRANT_JWT_BEARER), ("assertion", "signed")]
    delegated = dict(protocol.delegation_form("theirs", Proof("mine"), ["https://a"]))
    assert delegated["subject_token_type"] == protocol.TOKEN_TYPE_ACCESS_TOKEN
    assert (delegated["actor_token"], delegated["actor_token_type"]) == ("mine", protocol.TOKEN_TYPE_JWT)
    assert "mine" not in repr(Proof("mine"))


def test_credentials_say_what_is_missing() -> None:
    with pytest.raises(errors.ConfigurationError, match="AGENTID_TOKENS_DIR"):
        Credentials.from_environment({})
    with pytest.raises(errors.ConfigurationError, match="AGENTID_TOKEN_URL"):
        Credentials.from_environment({"AGENTID_SA_TOKEN_FILE": "/t"})
    sidecar = Credentials.from_environment({"AGENTID_TOKENS_DIR": "/d", "AGENTID_AUDIENCES": "a, b,a"})
    assert sidecar.sidecar_audiences == ("a", "b")


def test_the_sdk_and_the_sidecar_import_no_operator_machinery() -> None:
    probe = (
        "import sys, agentid.client, agentid.client.sync, agentid.client.aio, agentid.client.httpx_auth, "
        "agentid.cli.main; from agentid.client import AgentClient; "
        "import agentid.sidecar.agent; "
        "heavy = ('kopf', 'kubernetes', 'pydantic', 'aiohttp.web', 'agentid.kube'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
    environment_only = "import sys, agentid.client.environment; print('aiohttp' in sys.modules)"
    assert (
        subprocess.run(
            [sys.executable, "-c", environment_only], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )


def test_the_httpx_auth_refuses_a_client_of_the_other_flavour_before_sending_anything() -> None:
    import httpx  # noqa: PLC0415 - the optional integration

    from agentid.client.aio import AsyncAgentClient  # noqa: PLC0415
    from agentid.client.httpx_auth import AgentAuth  # noqa: PLC0415

    def never(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing may be sent")

    auth = AgentAuth(AsyncAgentClient(Credentials(tokens_dir="/nonexistent")), "https://a")
    with httpx.Client(transport=httpx.MockTransport(never), auth=auth) as http, pytest.raises(TypeError):
        http.get("https://a/")
