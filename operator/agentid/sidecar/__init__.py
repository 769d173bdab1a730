"""``agentid token-agent``: the native sidecar that keeps an agent Pod's tokens fresh (``agent``) and says how it is
doing (``health``). Light: no Kopf, no Kubernetes client (an import-linter contract keeps it so)."""
