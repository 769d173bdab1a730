"""The token endpoint's HTTP shaping, pure parts: the RFC 8693 response body is what ``json_response`` would
have written (the service builds it without a JSON encoder per token), and request forms are read as
``parse_qsl`` reads them (the same pairs, the same refusals), and the access log leaves out only the requests
whose audit record is their line."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from urllib.parse import parse_qsl

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from agentid.api.v1alpha1 import KeyAlgorithm
from agentid.domain import claims, keys
from agentid.tokens.app import AccessLogger, token_response
from agentid.tokens.exchange import Issued
from agentid.tokens.oauth_http import (
    CHALLENGE,
    KNOWN_VALUES,
    MAX_FIELDS,
    NO_STORE,
    AuditedResponse,
    oauth_error,
    parse_form,
)


@pytest.mark.parametrize("token_type", [claims.TOKEN_TYPE_ACCESS_TOKEN, claims.TOKEN_TYPE_JWT])
@pytest.mark.parametrize("expires_in", [1, 300, 86_400])
def test_the_token_response_is_json_responses_body_byte_for_byte(token_type: str, expires_in: int) -> None:
    token = keys.sign_jwt(keys.generate(KeyAlgorithm.ES256), {"sub": "spiffe://x/ns/a/agent/b"}, typ="JWT")
    issued = Issued(token=token, claims={}, expires_in=expires_in, issued_token_type=token_type)
    body = {"access_token": token, "issued_token_type": token_type, "token_type": "Bearer", "expires_in": expires_in}
    assert token_response(issued) == json.dumps(body).encode()


FORMS = [
    "",
    "&",
    "&&a=1&&",
    "a",
    "a=",
    "=b",
    "=",
    "a=1=2",
    "a+b=c+d",
    "a%20b=c%2Bd",
    "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=eyJ.eyJ.sig",
    "grant_type=urn%3aietf%3aparams%3aoauth%3agrant-type%3atoken-exchange",  # lowercase hex
    "grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=a.b.c",
    "audience=x&audience=y&resource=https%3A%2F%2Fmcp.example%2F",
    "name=%C3%A9t%C3%A9",
    "bad=%",
    "bad=%zz",
    "bad=%G1%2",
    "semi=a;b=c",
    "a=1&" * 47 + "z=2",  # 48 fields: the limit
]
REFUSED = [
    "a=1&" * 48 + "z=2",  # 49 fields
    "&" * 48,
    "bad=%FF",  # not UTF-8 once decoded
    "bad=%C3%28",
    "bad=%ED%A0%80",  # a surrogate
    "ok=1&bad=a%80b",
]


@pytest.mark.parametrize("text", FORMS + REFUSED)
def test_forms_are_parsed_and_refused_as_parse_qsl_does(text: str) -> None:
    expected = _outcome(lambda: parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict"))
    assert _outcome(lambda: parse_form(text)) == expected
    assert isinstance(expected, list) == (text in FORMS)


def _outcome(parse: Callable[[], list[tuple[str, str]]]) -> list[tuple[str, str]] | type[ValueError]:
    """The pairs, or the kind of refusal (UnicodeDecodeError is a ValueError: the handler refuses both alike)."""
    try:
        return parse()
    except ValueError as error:
        return type(error)


def test_every_known_urn_decodes_to_itself() -> None:
    for encoded, urn in KNOWN_VALUES.items():
        assert parse_form(f"grant_type={encoded}") == [("grant_type", urn)] == parse_qsl(f"grant_type={encoded}")


def test_the_access_log_has_every_request_but_one_the_exchange_audited(caplog: pytest.LogCaptureFixture) -> None:
    access = AccessLogger(logging.getLogger("agentid.tokens.access"), "")
    request = make_mocked_request("POST", "/token?secret=x")
    with caplog.at_level(logging.INFO, logger="agentid.tokens.access"):
        access.log(request, AuditedResponse(status=200), 0.002)  # granted or refused by the exchange: audited
        access.log(request, oauth_error(400, "invalid_request", "x", "reason", audited=True), 0.002)
        access.log(request, oauth_error(400, "invalid_request", "grant_type is required"), 0.001)
    assert [record.getMessage() for record in caplog.records] == ["POST /token 400 1.0ms"]  # no query string


@pytest.mark.parametrize("status", [400, 401])
@pytest.mark.parametrize("audited", [False, True])
def test_an_error_is_what_json_response_made(status: int, audited: bool) -> None:
    ours = oauth_error(status, "invalid_grant", "the agent is suspended", "AgentSuspended", audited=audited)
    body = {"error": "invalid_grant", "error_description": "the agent is suspended", "reason": "AgentSuspended"}
    headers = {**NO_STORE, "WWW-Authenticate": CHALLENGE} if status == 401 else NO_STORE
    theirs = web.json_response(body, status=status, headers=headers)
    assert (ours.status, ours.body, list(ours.headers.items())) == (
        theirs.status,
        theirs.body,
        list(theirs.headers.items()),
    )
