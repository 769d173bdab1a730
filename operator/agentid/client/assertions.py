"""RFC 7523 assertions signed with the agent's own key (its key Secret mounted in the Pod).

Called by the clients when ``key_dir`` is set. The Secret's files (``private-key.pem``, ``key-id``,
``algorithm``) are read at each signing: the operator rotates the key and the kubelet updates the volume.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from agentid.client import environment as env
from agentid.client.errors import ConfigurationError

LIFETIME = 60  # seconds: a proof for one exchange, not a credential


@dataclass(frozen=True)
class AgentKey:
    key_id: str
    private_key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

    @property
    def jws_algorithm(self) -> str:
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            return "EdDSA"
        if isinstance(self.private_key, ec.EllipticCurvePrivateKey):
            return "ES256"
        return "RS256"

    def __repr__(self) -> str:
        return f"AgentKey(key_id={self.key_id!r}, algorithm={self.jws_algorithm})"

    @classmethod
    def load(cls, key_dir: str) -> AgentKey:
        folder = Path(key_dir)
        try:
            pem = (folder / env.KEY_FILE).read_bytes()
            key_id = (folder / env.KEY_ID_FILE).read_text().strip()
        except OSError as error:
            raise ConfigurationError(f"cannot read the agent key in {key_dir}: {error.strerror}") from None
        try:
            private = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            raise ConfigurationError(f"{env.KEY_FILE} in {key_dir} is not an unencrypted PEM private key") from None
        if not isinstance(private, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ConfigurationError(f"{env.KEY_FILE} in {key_dir} holds an unsupported key type")
        return cls(key_id=key_id, private_key=private)


def sign(key: AgentKey, *, agent_id: str, audience: str, now: float | None = None, lifetime: int = LIFETIME) -> str:
    """``iss`` = ``sub`` = the agent ID, ``aud`` = the token service, a unique ``jti``, short ``exp``."""
    issued = int(time.time() if now is None else now)
    payload = {
        "iss": agent_id,
        "sub": agent_id,
        "aud": audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(payload, key.private_key, algorithm=key.jws_algorithm, headers={"kid": key.key_id})
