"""agentid: every AI agent gets its own Kubernetes identity.

The import package is split into layers (see pyproject's import-linter contracts): ``api`` (the CRD contract),
``domain`` (pure decisions), ``kube`` (API I/O), ``reconcile`` (one level-triggered pass), ``tokens`` and
``webhooks`` (HTTP services), ``handlers`` (Kopf registrations), ``cli`` (commands), ``devcluster`` (a local
control plane for development and tests).
"""

__version__ = "0.1.0"
