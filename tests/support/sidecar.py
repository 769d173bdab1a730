"""``agentid token-agent`` as a real process, configured exactly as Pod injection configures it (environment),
fed a ServiceAccount token file minted by TokenRequest (what the kubelet would project)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from agentid.client import environment as env
from tests.support.cluster_setup import reserved_port
from tests.support.tokens import ProvisionedAgent, TokenServiceHandle


@dataclass
class Sidecar:
    process: subprocess.Popen[bytes]
    tokens_dir: Path
    log_path: Path
    health_port: int
    audiences: tuple[str, ...]
    service_account_token: str
    _log: Any = field(repr=False, default=None)

    def file(self, audience: str) -> Path:
        return self.tokens_dir / env.token_file_name(audience)

    def tokens(self) -> dict[str, str]:
        """The token files present now (audience → token)."""
        found = {}
        for audience in self.audiences:
            try:
                found[audience] = self.file(audience).read_text()
            except FileNotFoundError:
                continue
        return found

    def status(self) -> dict[str, Any]:
        try:
            loaded = json.loads((self.tokens_dir / env.STATUS_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def health(self, path: str) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.health_port}{path}", timeout=5)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._log is not None:
            self._log.close()
        return int(self.process.returncode)


def start_sidecar(
    service: TokenServiceHandle,
    agent: ProvisionedAgent,
    folder: Path,
    audiences: tuple[str, ...],
    *,
    extra_args: tuple[str, ...] = (),
) -> Sidecar:
    """The sidecar as injected: the Pod's environment, a projected-token stand-in, an in-memory-like folder."""
    sa_dir = folder / "serviceaccount"
    tokens_dir = folder / "tokens"
    sa_dir.mkdir(parents=True)
    tokens_dir.mkdir()
    sa_token = agent.service_account_token(service.issuer)
    (sa_dir / "token").write_text(sa_token)
    port = reserved_port()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AGENTID_")},
        env.AGENT: f"{agent.namespace}/{agent.name}",
        env.TOKEN_URL: f"{service.issuer}/token",
        env.INTROSPECTION_URL: f"{service.issuer}/introspect",
        env.CA_FILE: service.endpoint.ca,
        env.SA_TOKEN_FILE: str(sa_dir / "token"),
        env.TOKENS_DIR: str(tokens_dir),
        env.AUDIENCES: ",".join(audiences),
        env.HEALTH_PORT: str(port),
    }
    log_path = folder / "sidecar.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "agentid", "token-agent", "--health-host=127.0.0.1", *extra_args],
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return Sidecar(process, tokens_dir, log_path, port, audiences, sa_token, log)
