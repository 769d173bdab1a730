"""GitOps integration artefacts shipped with the package: the Argo CD health check of AgentIdentities.

Read by ``docs/gitops.md`` (the same script, kept identical by a test) and by the tests that run it in a real
Lua 5.1 interpreter against objects the operator produced. Argo CD itself never imports Python: users paste the
script into ``argocd-cm`` (``resource.customizations.health.agentid.dev_AgentIdentity``).
"""

from __future__ import annotations

from importlib import resources

ARGOCD_HEALTH_KEY = "resource.customizations.health.agentid.dev_AgentIdentity"


def argocd_health_lua() -> str:
    """The Lua health check (Lua 5.1, base library only, the object in the global ``obj``)."""
    return resources.files(__name__).joinpath("argocd_health.lua").read_text()
