"""Standards conformance of the token service's pure parts: discovery documents read by independent validators
(the MCP SDK's models, idpyoidc), RFC 8707 targets and the RFC 9068 profile choice."""

from __future__ import annotations

import pytest
from idpyoidc.exception import MissingRequiredAttribute
from idpyoidc.message.oauth2 import ASConfigurationResponse
from idpyoidc.message.oidc import ProviderConfigurationResponse
from mcp.shared.auth import OAuthMetadata

from agentid.domain import claims
from agentid.domain.claims import Error, Reason, Refused
from agentid.tokens import metadata

ISSUER = "https://tokens.example"


def test_rfc8414_metadata_is_accepted_by_the_mcp_sdk_model() -> None:
    document = metadata.oauth_authorization_server(ISSUER, ["ES256"])
    parsed = OAuthMetadata.model_validate(document)
    assert str(parsed.token_endpoint) == f"{ISSUER}/token"
    assert str(parsed.authorization_endpoint) == f"{ISSUER}/authorize"
    assert str(parsed.issuer) == ISSUER


def test_rfc8414_metadata_fails_idpyoidc_only_for_its_honestly_empty_response_types() -> None:
    """No interactive authorization: ``response_types_supported`` is ``[]``, which idpyoidc reads as missing.
    Every other member passes its strict checks (shown by substituting a value)."""
    document = metadata.oauth_authorization_server(ISSUER, ["ES256"])
    with pytest.raises(MissingRequiredAttribute, match="response_types_supported"):
        ASConfigurationResponse(**document).verify()
    assert ASConfigurationResponse(**{**document, "response_types_supported": ["code"]}).verify()


def test_signing_algorithms_for_client_auth_are_listed_only_next_to_a_method_that_signs() -> None:
    document = metadata.oauth_authorization_server(ISSUER, ["ES256"])
    assert "private_key_jwt" in document["token_endpoint_auth_methods_supported"]
    assert document["token_endpoint_auth_signing_alg_values_supported"] == ["ES256", "EdDSA", "RS256"]
    assert document["response_types_supported"] == []  # no interactive authorization: nothing to claim


def test_openid_configuration_with_es256_keys_fails_idpyoidc_only_for_the_rs256_it_would_have_to_invent() -> None:
    """OpenID Discovery §3 wants RS256 among the ID token algorithms; listing it without an RS256 key would be a
    lie, so the document fails that one check (and only that one) until the issuer runs with RS256 keys."""
    document = metadata.openid_configuration(ISSUER, ["ES256"])
    OAuthMetadata.model_validate(document)
    with pytest.raises(ValueError, match="RS256 missing from id_token_signing_alg_values_supported"):
        ProviderConfigurationResponse(**document).verify()
    assert ProviderConfigurationResponse(**metadata.openid_configuration(ISSUER, ["RS256"])).verify()


def test_a_resource_yields_exactly_one_audience() -> None:
    assert claims.requested_targets(["a", "b"], []) == ["a", "b"]
    assert claims.requested_targets([], ["https://mcp.example"]) == ["https://mcp.example"]
    assert claims.requested_targets(["https://mcp.example"], ["https://mcp.example"]) == ["https://mcp.example"]
    for audiences, resources in ((["a"], ["b"]), ([], ["a", "b"])):
        with pytest.raises(Refused) as refused:
            claims.requested_targets(audiences, resources)
        assert (refused.value.error, refused.value.reason) == (Error.INVALID_TARGET, Reason.ONE_TARGET)


def test_the_access_token_profile_is_chosen_per_audience_and_never_mixed() -> None:
    assert claims.check_profile(["https://mcp.example"], ["https://mcp.example"]) is True
    assert claims.check_profile(["https://kubernetes.default.svc"], ["https://mcp.example"]) is False
    with pytest.raises(Refused) as refused:
        claims.check_profile(["https://mcp.example", "https://kubernetes.default.svc"], ["https://mcp.example"])
    assert refused.value.error is Error.INVALID_TARGET
