"""Signing keys: generation, PEM encoding, public JWKs and RFC 7638 thumbprints (the key IDs).

Called by the reconciler (agent keys), the token service (issuer keys, verification) and the CLI (verify). The
private half only ever leaves this module as PEM bytes headed for a Secret; JWKs built here never contain
private members.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwt.algorithms import Algorithm, ECAlgorithm, OKPAlgorithm, RSAAlgorithm, get_default_algorithms

from agentid.api.v1alpha1 import KeyAlgorithm

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey

RSA_BITS = 3072
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# RFC 7638 §3.2: the required members, in lexicographic order, per key type.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}
# JWS "alg" for each key algorithm (Ed25519 keys sign with EdDSA, RFC 8037).
JWS_ALGORITHM = {KeyAlgorithm.ED25519: "EdDSA", KeyAlgorithm.ES256: "ES256", KeyAlgorithm.RS256: "RS256"}
_SIGNERS: dict[str, Algorithm] = {name: get_default_algorithms()[name] for name in JWS_ALGORITHM.values()}
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))  # json.dumps with any option builds an encoder per call
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())  # pyjwt builds both per signature
_P256_BYTES = 32


class KeyMaterialError(ValueError):
    """A key or JWK is unusable; the message never contains key material."""


@dataclass(frozen=True)
class SigningKey:
    """A private key with its public JWK and key ID. ``repr`` never shows the private key."""

    algorithm: KeyAlgorithm
    private_key: PrivateKey
    jwk: Mapping[str, str]

    @property
    def key_id(self) -> str:
        return self.jwk["kid"]

    @property
    def jws_algorithm(self) -> str:
        return JWS_ALGORITHM[self.algorithm]

    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def __repr__(self) -> str:
        return f"SigningKey(algorithm={self.algorithm.value}, key_id={self.key_id})"


def sign_jwt(key: SigningKey, payload: Mapping[str, Any], *, typ: str) -> str:
    """The compact JWS ``jwt.encode(payload, key, algorithm, headers={"kid", "typ"})`` makes, byte for byte (sorted
    compact header, compact payload, pyjwt's signer for the key's algorithm), without what a token service pays per
    token for nothing: the same header serialised again, the claims it has just built checked again, and for ES256
    (ECDSA signatures are randomised, so equal as pyjwt verifies them) the ECDSA and SHA-256 objects built per token."""
    body = _segment(_COMPACT_JSON.encode(payload).encode())
    signing_input = _header_segment(key.jws_algorithm, key.key_id, typ) + b"." + body
    private = key.private_key
    if isinstance(private, ec.EllipticCurvePrivateKey) and key.algorithm is KeyAlgorithm.ES256:
        signature = _es256_signature(private.sign(signing_input, _ECDSA_SHA256))
    else:
        signature = _SIGNERS[key.jws_algorithm].sign(signing_input, private)
    return (signing_input + b"." + _segment(signature)).decode()


@functools.lru_cache(maxsize=64)
def _header_segment(algorithm: str, key_id: str, typ: str) -> bytes:
    header = {"alg": algorithm, "kid": key_id, "typ": typ}
    return _segment(json.dumps(header, separators=(",", ":"), sort_keys=True).encode())


def _es256_signature(der: bytes) -> bytes:
    """RFC 7518 §3.4: R and S as two 32-byte big-endian integers (what pyjwt's ``der_to_raw_signature`` makes)."""
    r, s = decode_dss_signature(der)
    return r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")


def _segment(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def generate(algorithm: KeyAlgorithm) -> SigningKey:
    private: PrivateKey
    if algorithm is KeyAlgorithm.ED25519:
        private = ed25519.Ed25519PrivateKey.generate()
    elif algorithm is KeyAlgorithm.ES256:
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    return SigningKey(algorithm, private, public_jwk(private.public_key(), algorithm))


def load_pem(pem: bytes, algorithm: KeyAlgorithm) -> SigningKey:
    """Parse a PKCS#8 private key of the expected algorithm (from a Secret)."""
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise KeyMaterialError("the private key is not a readable unencrypted PEM key") from error
    if algorithm_of(private) is not algorithm or not isinstance(
        private, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    ):
        raise KeyMaterialError(f"the private key is not a {algorithm.value} key")
    return SigningKey(algorithm, private, public_jwk(private.public_key(), algorithm))


def algorithm_of(key: object) -> KeyAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return KeyAlgorithm.ED25519
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return KeyAlgorithm.ES256 if isinstance(key.curve, ec.SECP256R1) else None
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return KeyAlgorithm.RS256 if key.key_size >= 2048 else None
    return None


def public_jwk(public: PublicKey, algorithm: KeyAlgorithm) -> dict[str, str]:
    """The public JWK with ``kid`` (its RFC 7638 thumbprint), ``alg`` and ``use``."""
    jwk: dict[str, Any]
    if isinstance(public, ed25519.Ed25519PublicKey):
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    members = {key: str(value) for key, value in jwk.items() if key in ("kty", "crv", "x", "y", "n", "e")}
    return {**members, "kid": thumbprint(members), "alg": JWS_ALGORITHM[algorithm], "use": "sig"}


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url without padding)."""
    try:
        members = _THUMBPRINT_MEMBERS[str(jwk["kty"])]
        canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"), sort_keys=True)
    except KeyError as error:
        raise KeyMaterialError("the JWK lacks a member RFC 7638 requires") from error
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def public_only(jwk: Mapping[str, Any]) -> dict[str, Any]:
    """A JWK with every private member removed (defence in depth before publishing)."""
    return {key: value for key, value in jwk.items() if key not in PRIVATE_JWK_MEMBERS}


def public_key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey:
    """Load a public key from a JWK (for verification); refuses JWKs that carry private members."""
    if PRIVATE_JWK_MEMBERS & set(jwk):
        raise KeyMaterialError("refusing a JWK with private members")
    kty = jwk.get("kty")
    key: object
    try:
        if kty == "OKP":
            key = OKPAlgorithm.from_jwk(dict(jwk))
        elif kty == "EC":
            key = ECAlgorithm.from_jwk(dict(jwk))
        elif kty == "RSA":
            key = RSAAlgorithm.from_jwk(dict(jwk))
        else:
            raise KeyMaterialError(f"unsupported key type {kty!r}")
    except (ValueError, TypeError) as error:  # pyjwt raises InvalidKeyError (a ValueError subclass) too
        raise KeyMaterialError("the JWK is malformed") from error
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise KeyMaterialError("the JWK is not a public key")
    return key
