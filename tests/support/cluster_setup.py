"""Configuration the session cluster needs before it starts (each layer adds its part here).

The local control plane can only take apiserver flags and files before ``start()``: agent-token authentication
(the token service's issuer) and the admission webhook are wired here, once, for the whole test session.
"""

from __future__ import annotations

from agentid.devcluster.cluster import LocalCluster


def configure_local_cluster(local: LocalCluster) -> None:
    """Called by the session ``cluster`` fixture on the embedded control plane, before it starts."""
