"""The token service's defaults (where its issuer keys live, the API server's audience): constants, no imports.

``agentid.tokens.settings`` re-exports them; the CLI's parsers read them from here, so ``agentid --help`` does not
import the token service's dependencies.
"""

DEFAULT_NAMESPACE = "agentid-system"
DEFAULT_SECRET = "agentid-token-issuer"  # noqa: S105 - the Secret's name
DEFAULT_KUBE_AUDIENCE = "https://kubernetes.default.svc"  # what agents ask for to call the API server
