"""Where an agent's credentials come from: the environment agentid's Pod injection writes (or explicit values).

Called by the clients (``sync``, ``aio``) and the token sidecar. Reading the environment is all this does; files
are read when a token is needed (the kubelet rotates the ServiceAccount token, the sidecar rewrites its files).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from agentid.client import environment as env
from agentid.client.errors import ConfigurationError


@dataclass(frozen=True)
class Credentials:
    """What an agent can prove itself with, and where to exchange it. At least one source must be set:
    ``tokens_dir`` (the token sidecar), ``service_account_token_file`` or ``key_dir`` (both need ``token_url``)."""

    token_url: str | None = None
    ca_file: str | None = None
    service_account_token_file: str | None = None
    tokens_dir: str | None = None
    key_dir: str | None = None
    issuer: str | None = None
    agent_id: str | None = None
    agent: str | None = None  # "<namespace>/<name>"
    introspection_url: str | None = None
    sidecar_audiences: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (self.tokens_dir or self.service_account_token_file or self.key_dir):
            raise ConfigurationError(
                f"no agent credentials: set {env.TOKENS_DIR}, {env.SA_TOKEN_FILE} or {env.KEY_DIR} "
                "(a Pod labelled agentid.dev/agent gets them injected)"
            )
        if (self.service_account_token_file or self.key_dir) and not self.token_url:
            raise ConfigurationError(f"{env.TOKEN_URL} is required to exchange credentials for agent tokens")
        if self.key_dir and not (self.agent_id and self.issuer):
            raise ConfigurationError(f"assertions need {env.AGENT_ID} and {env.ISSUER}")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        values = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            return values.get(name) or None

        return cls(
            token_url=get(env.TOKEN_URL),
            ca_file=get(env.CA_FILE),
            service_account_token_file=get(env.SA_TOKEN_FILE),
            tokens_dir=get(env.TOKENS_DIR),
            key_dir=get(env.KEY_DIR),
            issuer=get(env.ISSUER),
            agent_id=get(env.AGENT_ID),
            agent=get(env.AGENT),
            introspection_url=get(env.INTROSPECTION_URL),
            sidecar_audiences=tuple(env.parse_audiences(get(env.AUDIENCES) or "")),
        )
