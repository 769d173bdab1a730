"""agentid.verify: how a tool (an MCP server, an internal API) admits AI agents by their agentid tokens.

A light library for resource servers: ``pip install 'agentid[verify]'`` (pyjwt, httpx; ``agentid[mcp]`` adds the
MCP SDK for ``agentid.verify.mcp_sdk``, Starlette for ``agentid.verify.asgi``). No Kubernetes client, no Kopf.

    verifier, http = connect(issuer, "https://tool.example/mcp", ca_file="ca.crt")
    principal = await verifier.verify(token)          # AgentPrincipal or InvalidToken
    Policy([Rule(tools=("read_*",)), Rule(tools=("write_*",), modes=(Supervision.AUTONOMOUS,))])
"""

from agentid.verify.errors import InvalidToken, IssuerUnavailable
from agentid.verify.introspection import (
    IntrospectionClient,
    client_assertion_credentials,
    service_account_credentials,
)
from agentid.verify.jwks import JWKSCache
from agentid.verify.jwt_verifier import JWTVerifier
from agentid.verify.policy import Decision, Policy, Rule, require_supervision
from agentid.verify.principal import Actor, AgentPrincipal, Owner, Supervision
from agentid.verify.signals import SignalReceiver
from agentid.verify.verifier import Verifier, connect

__all__ = [
    "Actor",
    "AgentPrincipal",
    "Decision",
    "IntrospectionClient",
    "InvalidToken",
    "IssuerUnavailable",
    "JWKSCache",
    "JWTVerifier",
    "Owner",
    "Policy",
    "Rule",
    "SignalReceiver",
    "Supervision",
    "Verifier",
    "client_assertion_credentials",
    "connect",
    "require_supervision",
    "service_account_credentials",
]
