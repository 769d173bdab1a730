"""`make demo` end to end: the whole story runs on a fresh embedded control plane and finishes on its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agentid.domain import naming
from tests.support.clusters import external_kubeconfig

DEMO = Path(__file__).resolve().parents[2] / "hack" / "demo.py"


def test_the_demo_tells_the_story_and_leaves_nothing_behind() -> None:
    if external_kubeconfig() is not None:
        pytest.skip("the demo starts its own embedded control plane")
    result = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True, timeout=600, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    for milestone in (
        "Username                                            agent:finance-agents:invoice-triage",
        "actor spiffe://cluster.local/ns/finance-agents/agent/month-end-orchestrator",
        "'error': 'invalid_grant', 'error_description': 'the agent is suspended'",
        "introspection now: {'active': False}",
        f"serviceAccountName: {naming.service_account('invoice-triage')}, automountServiceAccountToken: False",
        "init container agentid-token-agent (restartPolicy Always)",
        "the sidecar's status: suspended",
        "resumed: the token file is back",
        "resource 'secrets' is forbidden",
        "the owner carol@example.com does not hold 'update configmaps'",
        "revoked is terminal",
        "Autonomous -> Supervised by carol@example.com",
        "approve_payment: refused  refused by agentid: Supervised agents may not use this tool",
        "refused before any tool ran",
        '"act_chain": ["spiffe://cluster.local/ns/finance-agents/agent/month-end-orchestrator"]',
        "Done: every process stopped",
    ):
        assert milestone in output, milestone
    assert "eyJ" not in output  # no token is ever printed (every JWT starts with base64url of '{"')
    assert "PRIVATE KEY" not in output
