"""The operator and the token service log one JSON schema (`--log-format json`, the chart's default for both), so
one log pipeline parses both: every line is an object with message, timestamp and severity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from agentid.devcluster.ports import free_port
from tests.support.clusters import ClusterHandle
from tests.support.polling import eventually

pytestmark = pytest.mark.cluster
BASE_KEYS = {"message", "timestamp", "severity"}


def json_lines_of(argv: list[str], cluster: ClusterHandle, tmp_path: Path, *, want: str) -> list[dict[str, Any]]:
    """Run ``agentid ARGV`` until a line containing ``want`` was logged; every line it wrote, parsed."""
    log = tmp_path / f"{uuid.uuid4().hex}.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "agentid", *argv, f"--kubeconfig={cluster.kubeconfig}"],
            stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            eventually(lambda: want in log.read_text(), timeout=60, what=f"{argv[0]} logs {want!r}")
        finally:
            process.terminate()
            process.wait(timeout=30)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def test_operator_and_token_service_write_the_same_json_schema(
    cluster: ClusterHandle, crds: None, namespace: str, tmp_path: Path
) -> None:
    port = free_port()
    served = json_lines_of(
        ["serve", f"--issuer=http://127.0.0.1:{port}", "--host=127.0.0.1", f"--port={port}", f"--namespace={namespace}",
         "--log-format=json"],
        cluster, tmp_path, want="listening on",
    )  # fmt: skip
    operated = json_lines_of(
        ["run", f"--namespace={namespace}", "--log-format=json", "--verbose", "--resync-seconds=3600"],
        cluster, tmp_path, want="view listed",
    )  # fmt: skip
    for source, lines in (("token service", served), ("operator", operated)):
        assert lines, source
        for line in lines:
            assert BASE_KEYS <= line.keys() <= BASE_KEYS | {"object"}, (source, line)
            assert line["severity"] in {"debug", "info", "warn", "error", "critical"}, (source, line)
    assert any("listening on" in line["message"] for line in served)
