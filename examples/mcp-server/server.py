"""An MCP tool server (official MCP Python SDK, streamable HTTP) that admits only agentid agents.

Run it next to a token service:

    python examples/mcp-server/server.py --issuer https://agentid-tokens.agentid-system.svc \
        --resource https://invoices-mcp.example/mcp --ca-file ca.crt --port 8000 \
        [--introspection-token-file /var/run/secrets/agentid/token]

The SDK answers a request without a valid agent token with 401 and ``WWW-Authenticate: Bearer
resource_metadata=...`` (RFC 9728), and serves that metadata naming the agentid issuer as the authorization
server. Tokens must be agentid tokens for exactly ``--resource`` (RFC 8707). Per-tool rules:

- ``list_invoices``, ``read_invoice``: Autonomous and Supervised agents (Supervised agents get read-only tools);
- ``approve_payment``: Autonomous agents of cost center 4711 (attribute ``costCenter``),
  directly or through at most one delegating agent;
- a Suspended agent gets nothing (with ``--introspection-token-file`` a suspension bites within seconds, since
  the token service is asked about every token, cached for 5 s; without it, when the token expires).

Every decision is one JSON line on the ``agentid.verify.audit`` logger: agent, owner, supervision, act chain,
tool, decision, jti — never the token.
"""

from __future__ import annotations

import argparse
import logging
from urllib.parse import urlsplit

import httpx
import uvicorn
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette

from agentid.verify import Policy, Rule, Supervision, connect, service_account_credentials
from agentid.verify.audit import Sink, log_sink
from agentid.verify.mcp_sdk import AgentTokenVerifier, ToolGuard, current_principal

POLICY = Policy(
    [
        Rule(name="read-only tools", tools=("list_*", "read_*")),
        Rule(
            name="payments",
            tools=("approve_*",),
            modes=(Supervision.AUTONOMOUS,),
            attributes={"costCenter": "4711"},
            max_delegation_depth=1,
        ),
    ]
)
INVOICES = {"INV-1": {"amount": "120.00", "vendor": "ACME"}, "INV-2": {"amount": "99.50", "vendor": "Globex"}}


def build(
    issuer: str,
    resource: str,
    *,
    ca_file: str | None = None,
    introspection_token_file: str | None = None,
    audit_sink: Sink = log_sink,
) -> tuple[Starlette, httpx.AsyncClient]:
    """The ASGI app of the tool server and the HTTP client its verifier uses (close it on shutdown)."""
    credentials = service_account_credentials(introspection_token_file) if introspection_token_file else None
    verifier, http = connect(issuer, resource, ca_file=ca_file, introspection_credentials=credentials)
    server = MCPServer(
        "invoices",
        token_verifier=AgentTokenVerifier(verifier, audit_sink=audit_sink),
        auth=AuthSettings(issuer_url=issuer, resource_server_url=resource, validate_token_resource=True),
        middleware=[ToolGuard(POLICY, resource=resource, audit_sink=audit_sink)],
    )

    @server.tool()
    def list_invoices() -> list[str]:
        """The IDs of open invoices."""
        return sorted(INVOICES)

    @server.tool()
    def read_invoice(invoice_id: str) -> dict[str, str]:
        """One invoice."""
        return INVOICES.get(invoice_id, {})

    @server.tool()
    def approve_payment(invoice_id: str) -> str:
        """Approve paying an invoice (a write: Autonomous finance agents only)."""
        principal = current_principal()
        approver = principal.agent_id if principal else "?"
        on_behalf = f" acting through {principal.actor.agent_id}" if principal and principal.actor else ""
        return f"payment of {invoice_id} approved for {approver}{on_behalf}"

    parts = urlsplit(resource)
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=[parts.netloc], allowed_origins=[]
    )
    app = server.streamable_http_app(
        streamable_http_path=parts.path or "/mcp", transport_security=security, host=parts.hostname or ""
    )
    return app, http


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issuer", required=True, help="the agentid token service's issuer URL")
    parser.add_argument("--resource", required=True, help="this server's MCP endpoint URL (the token audience)")
    parser.add_argument("--ca-file", help="CA bundle that signs the token service's certificate")
    parser.add_argument("--introspection-token-file", help="projected ServiceAccount token for live introspection")
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a server in a Pod listens on all interfaces
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # audit records are INFO lines of JSON
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not every JWKS or introspection request
    app, _ = build(
        args.issuer, args.resource, ca_file=args.ca_file, introspection_token_file=args.introspection_token_file
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
