"""The Helm chart on the node for the tests: ``agentid.devcluster.chartrelease`` with the test environment."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from agentid.devcluster import chartrelease
from agentid.devcluster.chartrelease import Release
from tests.node.conftest import NodeEnv

CHART = Path(__file__).resolve().parents[2] / "charts" / "agentid-operator"
__all__ = ["CHART", "Release", "helm", "install", "values"]


def helm(env: NodeEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return chartrelease.helm(env.local, *args)


def values(env: NodeEnv, **extra: dict[str, Any]) -> dict[str, Any]:
    return chartrelease.values(env.agentid_image, env.issuer, **extra)


def install(env: NodeEnv, release: Release) -> float:
    return chartrelease.install(env.node, CHART, release, values(env), env.issuer)
