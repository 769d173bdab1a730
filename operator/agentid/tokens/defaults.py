"""Where the token service keeps its issuer keys by default: constants without imports.

``agentid.tokens.settings`` re-exports them; the CLI's parsers read them from here, so ``agentid --help`` does not
import the token service's dependencies.
"""

DEFAULT_NAMESPACE = "agentid-system"
DEFAULT_SECRET = "agentid-token-issuer"  # noqa: S105 - the Secret's name
