"""`make demo` on a host that can run a node: the story is told with the operator, the token service and an agent
workload in Pods, finishes on its own, and leaves nothing on the host."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.node.conftest import host_state, node_skip_reason

DEMO = Path(__file__).resolve().parents[2] / "hack" / "demo_node.py"


def test_the_demo_runs_in_pods_and_leaves_nothing_behind() -> None:
    reason = node_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    before = host_state()
    done = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True, timeout=540, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for shown in ("agentid-operator-", "agentid-tokens-", "agentid-node"):  # the Pods, on the node
        assert shown in out
    for result in ('{"exchange": "granted", "apiserver": 200}', '"apiserver": 403', '"exchange": "refused"'):
        assert result in out
    assert out.rstrip().endswith("left nothing on the host (processes, mounts, bridge, iptables, cgroups)")
    assert "eyJ" not in out  # no token ever reaches the output
    assert host_state() == before
