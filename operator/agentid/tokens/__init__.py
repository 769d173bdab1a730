"""The agent token service: discovery, JWKS, RFC 8693 exchange, RFC 7662 introspection."""
