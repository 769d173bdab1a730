"""`agentid dev up` stops everything it started: on Ctrl-C, on `agentid dev down`, and when it is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentid.devcluster import assets
from agentid.devcluster.processes import pid_alive, wait_dead
from tests.support.clusters import external_kubeconfig
from tests.support.polling import eventually

pytestmark = pytest.mark.cluster


@pytest.fixture
def dev_env(tmp_path: Path) -> dict[str, str]:
    if external_kubeconfig() is not None:
        pytest.skip("exercises the embedded control plane")
    try:
        assets.find_binary("kube-apiserver")
    except assets.AssetsNotFound as error:
        pytest.skip(str(error))
    return {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}


@pytest.fixture
def dev_up(dev_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "agentid", "dev", "up", "--workdir", str(tmp_path / "cluster")],
        env=dev_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if line.startswith("running"):
            break
    output = "".join(lines)
    assert "export KUBECONFIG=" in output, output
    state = json.loads((tmp_path / "state" / "agentid" / "dev-cluster.json").read_text())
    pids = [int(pid) for pid in state["pids"]]
    assert len(pids) == 3
    assert all(pid_alive(pid) for pid in pids)
    yield process, pids
    process.kill()
    for pid in pids:
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)


def test_ctrl_c_stops_every_process_dev_up_started(dev_up: tuple[subprocess.Popen[str], list[int]]) -> None:
    process, pids = dev_up
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    assert wait_dead(pids, timeout=10) == []


def test_dev_down_from_another_shell_stops_the_cluster(
    dev_up: tuple[subprocess.Popen[str], list[int]], dev_env: dict[str, str]
) -> None:
    process, pids = dev_up
    down = subprocess.run(
        [sys.executable, "-m", "agentid", "dev", "down"],
        env=dev_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "stopped" in down.stdout
    assert process.wait(timeout=30) == 0
    assert wait_dead(pids, timeout=10) == []


def test_children_die_when_dev_up_is_killed_outright(dev_up: tuple[subprocess.Popen[str], list[int]]) -> None:
    process, pids = dev_up
    process.kill()  # SIGKILL: no Python cleanup runs; the parent-death signal must do it
    process.wait(timeout=10)
    eventually(lambda: not any(pid_alive(pid) for pid in pids), timeout=20, what="orphans gone")
