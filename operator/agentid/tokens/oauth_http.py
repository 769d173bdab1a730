"""The OAuth 2.0 request and error shapes every token-service endpoint shares (RFC 6749 §3.2, §5.2).

The token, introspection and revocation endpoints read the same bounded form and answer errors in the same JSON
shape; this is their one home, so a rule about duplicate parameters or ``Cache-Control`` cannot drift between them.
"""

from __future__ import annotations

import json
from urllib.parse import quote_plus, unquote

from aiohttp import web

from agentid.domain import claims

FORM = "application/x-www-form-urlencoded"
MULTI_VALUED = frozenset({"audience", "resource"})  # RFC 8693 §2.1: may repeat; everything else appears once
MAX_FIELDS = 48
# The URNs every request carries, as clients' form encoders write them (urlencode, quote_plus): decoded once.
KNOWN_VALUES = {
    quote_plus(urn): urn
    for urn in (
        claims.GRANT_TOKEN_EXCHANGE,
        claims.GRANT_JWT_BEARER,
        claims.CLIENT_ASSERTION_TYPE,
        claims.TOKEN_TYPE_JWT,
        claims.TOKEN_TYPE_ACCESS_TOKEN,
    )
}
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
CHALLENGE = 'Bearer realm="agentid"'  # RFC 6749 §5.2: a 401 invalid_client names the scheme to use


class BadRequest(Exception):
    """A 400 carrying its own description."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class AuditedResponse(web.Response):
    """The answer to a token request the exchange decided on: its audit record names the request already."""


def oauth_error(
    status: int, error: str, description: str, reason: str | None = None, *, audited: bool = False
) -> web.Response:
    """RFC 6749 §5.2 (401 carries ``WWW-Authenticate``); ``reason`` (an extension member) is agentid's stable name
    for why a token was refused, so agents can tell a suspension from a revocation without parsing the description."""
    body = {"error": error, "error_description": description}
    if reason is not None:
        body["reason"] = reason
    headers = {**NO_STORE, "WWW-Authenticate": CHALLENGE} if status == 401 else NO_STORE
    kind = AuditedResponse if audited else web.Response
    return kind(text=json.dumps(body), status=status, headers=headers, content_type="application/json")


async def read_form(request: web.Request) -> dict[str, list[str]]:
    """The request's form (RFC 6749 §3.2: ``application/x-www-form-urlencoded``), each parameter once except
    ``MULTI_VALUED``; anything else is a ``BadRequest`` with a precise description."""
    if request.content_type != FORM:
        raise BadRequest(f"the body must be {FORM}")
    body = await request.read()  # bounded by client_max_size (413 above it)
    try:
        pairs = parse_form(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the body is not a valid form") from None
    form: dict[str, list[str]] = {}
    for name, value in pairs:
        form.setdefault(name, []).append(value)
    for name, values in form.items():
        if len(values) > 1 and name not in MULTI_VALUED:
            raise BadRequest(f"parameter {name[:40]!r} appears more than once")
    return form


def parse_form(text: str) -> list[tuple[str, str]]:
    """``parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict")``, the same pairs and
    the same ``ValueError`` / ``UnicodeDecodeError``, without percent-decoding what has nothing to decode (the
    kilobyte of a token, every request) or the grant and token type URNs each request repeats."""
    if not text:
        return []
    if text.count("&") + 1 > MAX_FIELDS:
        raise ValueError("Max number of fields exceeded")
    pairs = []
    for field in text.split("&"):
        if field:
            name, _, value = field.partition("=")
            pairs.append((_unquote(name), _unquote(value)))
    return pairs


def _unquote(text: str) -> str:
    if "%" not in text and "+" not in text:
        return text
    known = KNOWN_VALUES.get(text)
    return known if known is not None else unquote(text.replace("+", " "), errors="strict")


def single(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None
