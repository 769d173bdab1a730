"""Picked loopback ports are unique while they may still be pending (agentid.devcluster.ports): a port handed out
is not handed out again, by this process or another one sharing the registry, until its hold expires."""

from __future__ import annotations

import json
import multiprocessing
import socket
import time
from pathlib import Path

import pytest

from agentid.devcluster import ports


def _pick_many(registry: str, count: int, span: int) -> list[int]:
    ports.SPAN = span  # a spawned process: nothing of the parent's patching
    return [ports.free_port(Path(registry)) for _ in range(count)]


@pytest.fixture
def narrow(monkeypatch: pytest.MonkeyPatch) -> int:
    """A span of 40 ports, so that a repeat would be likely if picks were not recorded."""
    monkeypatch.setattr(ports, "SPAN", 40)
    monkeypatch.setattr(ports, "_picked_here", set())
    return 40


def test_picks_in_one_process_never_repeat(tmp_path: Path, narrow: int) -> None:
    picked = [ports.free_port(tmp_path / "ports.json") for _ in range(30)]
    assert len(set(picked)) == 30
    low = ports._ephemeral_low()
    assert all(low - narrow <= port < low for port in picked)


def test_picks_of_two_processes_sharing_the_registry_never_repeat(tmp_path: Path, narrow: int) -> None:
    registry = str(tmp_path / "ports.json")
    context = multiprocessing.get_context("spawn")  # fresh processes: nothing remembered in memory
    with context.Pool(2) as pool:
        first, second = pool.starmap(_pick_many, [(registry, 15, narrow), (registry, 15, narrow)])
    assert len(set(first) | set(second)) == 30
    assert set(json.loads(Path(registry).read_text())) == {str(port) for port in first + second}


def test_an_expired_hold_is_dropped_and_a_bound_port_is_never_picked(tmp_path: Path, narrow: int) -> None:
    registry = tmp_path / "ports.json"
    low = ports._ephemeral_low()
    expired = {str(port): time.time() - 1 for port in range(low - narrow, low)}
    registry.write_text(json.dumps(expired))
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", low - 1))
        listening.listen()
        picked = ports.free_port(registry)
    assert picked != low - 1
    assert set(json.loads(registry.read_text())) == {str(picked)}  # the expired holds are gone


def test_an_unreadable_registry_is_started_over(tmp_path: Path) -> None:
    registry = tmp_path / "ports.json"
    registry.write_text("{not json")
    picked = ports.free_port(registry)
    assert list(json.loads(registry.read_text())) == [str(picked)]
