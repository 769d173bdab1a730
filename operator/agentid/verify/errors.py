"""The one exception a verifier raises for a token it will not accept.

``reason`` is for the tool's own audit log (expired, unknown key, wrong audience, ...); HTTP adapters never send it
to the presenter, who learns only that the token is invalid.
"""

from __future__ import annotations


class InvalidToken(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IssuerUnavailable(Exception):
    """Discovery or the JWKS could not be fetched and no keys are cached yet."""
