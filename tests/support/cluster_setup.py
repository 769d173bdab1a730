"""Configuration the session cluster needs before it starts (each layer adds its part here).

The local control plane can only take apiserver flags and files before ``start()``: agent-token authentication
(the token service's issuer) and the admission webhook are wired here, once, for the whole test session.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from agentid.devcluster.cluster import LocalCluster
from agentid.devcluster.ports import free_port
from agentid.tokens import authnconfig

TOKEN_SERVICE_FILE = "token-service.json"
KUBE_AUDIENCE = authnconfig.DEFAULT_KUBE_AUDIENCE  # what agents ask for to call the apiserver with agent tokens


@dataclass(frozen=True)
class TokenServiceEndpoint:
    """Where the session's token service will listen, and the TLS material the apiserver trusts it with."""

    port: int
    cert: str
    key: str
    ca: str
    kube_audience: str = KUBE_AUDIENCE
    trusted_by_apiserver: bool = True

    @property
    def issuer(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def save(self, workdir: Path) -> None:
        (workdir / TOKEN_SERVICE_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, workdir: Path) -> TokenServiceEndpoint | None:
        path = workdir / TOKEN_SERVICE_FILE
        return cls(**json.loads(path.read_text())) if path.exists() else None


def reserved_port() -> int:
    """A free loopback port below the ephemeral range (bound later by the service that listens on it)."""
    return free_port()


def configure_token_issuer(local: LocalCluster) -> TokenServiceEndpoint:
    """Reserve the token service's port, issue its serving cert from the cluster CA, and make the apiserver
    trust its issuer for agent tokens (``--authentication-config``). The service itself starts later (fixture);
    the apiserver retries discovery until it answers."""
    port = reserved_port()
    serving = local.ca.serving("token-service", "127.0.0.1", "localhost")
    endpoint = TokenServiceEndpoint(port=port, cert=str(serving.cert), key=str(serving.key), ca=str(local.ca.cert_path))
    config = authnconfig.authentication_configuration(
        endpoint.issuer, audiences=[endpoint.kube_audience], ca_pem=local.ca.pem.decode()
    )
    path = local.write_file("authentication-config.yaml", yaml.safe_dump(config, sort_keys=False))
    local.apiserver_args.append(f"--authentication-config={path}")
    endpoint.save(local.workdir)
    return endpoint


def configure_local_cluster(local: LocalCluster) -> None:
    """Called by the session ``cluster`` fixture on the embedded control plane, before it starts."""
    configure_token_issuer(local)
