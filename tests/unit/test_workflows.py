"""The GitHub workflows pass actionlint (syntax, expressions, shellcheck-free shell, action inputs), so the e2e
and release paths that only run on GitHub cannot break unseen here."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

WORKFLOWS = Path(__file__).resolve().parents[2] / ".github" / "workflows"


def _actionlint() -> str:
    found = os.environ.get("AGENTID_ACTIONLINT") or shutil.which("actionlint") or ""
    if not found or not Path(found).is_file():
        pytest.skip("actionlint is not built (`make actionlint` needs Go)")
    return found


def test_every_workflow_passes_actionlint() -> None:
    workflows = sorted(str(path) for path in WORKFLOWS.glob("*.y*ml"))
    assert workflows
    result = subprocess.run(
        [_actionlint(), "-no-color", "-shellcheck=", "-pyflakes=", *workflows],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
