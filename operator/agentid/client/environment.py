"""What an agent Pod is given: the environment variables and paths that agentid's Pod injection writes and the SDK
and the token sidecar read.

One home for this contract. The injector (``agentid.domain.podidentity``) produces it, ``agentid.client`` and
``agentid token-agent`` consume it, and README.md documents it. Pure: no I/O, no dependency beyond the standard
library, so that an agent's process can import it cheaply.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# -- environment variables --------------------------------------------------------------------------------------

AGENT = "AGENTID_AGENT"  # "<namespace>/<name>" of the AgentIdentity the Pod runs as
AGENT_ID = "AGENTID_AGENT_ID"  # the agent's ID (spiffe://...): iss and sub of its RFC 7523 assertions
ISSUER = "AGENTID_ISSUER"  # the token service's issuer URL (the audience of assertions)
TOKEN_URL = "AGENTID_TOKEN_URL"  # noqa: S105 - the token endpoint (RFC 8693 exchange, RFC 7523 JWT-bearer grant)
INTROSPECTION_URL = "AGENTID_INTROSPECTION_URL"  # RFC 7662 introspection (live state of a token)
CA_FILE = "AGENTID_CA_FILE"  # PEM bundle to trust the token service with
SA_TOKEN_FILE = "AGENTID_SA_TOKEN_FILE"  # projected ServiceAccount token for the token service (no sidecar)  # noqa: S105
TOKENS_DIR = "AGENTID_TOKENS_DIR"  # the sidecar's in-memory folder: one agent token file per audience
AUDIENCES = "AGENTID_AUDIENCES"  # comma-separated audiences the sidecar keeps tokens for
KEY_DIR = "AGENTID_KEY_DIR"  # the agent's key Secret, when mounted: RFC 7523 assertions
HEALTH_PORT = "AGENTID_HEALTH_PORT"  # the sidecar's health endpoint


# -- paths inside the Pod ---------------------------------------------------------------------------------------

ROOT = "/var/run/secrets/agentid.dev"
SA_TOKEN_DIR = f"{ROOT}/serviceaccount"
SA_TOKEN_PATH = f"{SA_TOKEN_DIR}/token"
CA_DIR = f"{ROOT}/ca"
CA_PATH = f"{CA_DIR}/ca.crt"
TOKENS_PATH = f"{ROOT}/tokens"
KEY_PATH = f"{ROOT}/key"

# Files of the agent's key Secret (the operator writes these data keys; see agentid.domain.naming).
KEY_FILE = "private-key.pem"
KEY_ID_FILE = "key-id"

STATUS_FILE = ".status"  # the sidecar's state (never a token): why the token files are absent
DEFAULT_HEALTH_PORT = 9494

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_FILE_NAME = 200


def token_file_name(audience: str) -> str:
    """The file holding the agent token for ``audience`` in the tokens folder: the audience without its scheme,
    every other character than letters, digits, '.', '_' and '-' replaced by '_'.

    ``https://mcp.example.com`` → ``mcp.example.com``; ``https://kubernetes.default.svc`` →
    ``kubernetes.default.svc``; ``spiffe://td/ns/x`` → ``td_ns_x``. Never starts with a dot (reserved).
    """
    _, separator, rest = audience.partition("://")
    name = _UNSAFE.sub("_", rest if separator else audience).strip("_")
    name = name.lstrip(".") or "_"
    return name[:_MAX_FILE_NAME]


def parse_audiences(value: str) -> list[str]:
    """The audiences of a comma-separated list (annotation or environment), in order, without blanks or repeats."""
    return list(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))


def file_name_clashes(audiences: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs of audiences that would share one token file (refused at admission)."""
    seen: dict[str, str] = {}
    clashes = []
    for audience in audiences:
        name = token_file_name(audience)
        if name in seen:
            clashes.append((seen[name], audience))
        else:
            seen[name] = audience
    return clashes
