"""The API client reads the proxy environment once, not on every request (agentid.kube.client)."""

from __future__ import annotations

import pytest
from kubernetes.aio import client as aio_client

from agentid.kube.client import KubeClient


def _client(monkeypatch: pytest.MonkeyPatch, *, proxy: str | None = None, **env: str) -> aio_client.Configuration:
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    configuration = aio_client.Configuration(host="https://10.1.2.3:6443")
    configuration.proxy = proxy
    KubeClient(configuration, field_manager="test")
    return configuration


def test_per_request_environment_lookups_are_off(monkeypatch: pytest.MonkeyPatch) -> None:
    configuration = _client(monkeypatch)
    assert configuration.client_session_kwargs == {"trust_env": False}
    assert configuration.proxy is None


def test_a_proxy_from_the_environment_is_taken_once_with_its_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    configuration = _client(monkeypatch, HTTPS_PROXY="http://user:secret@proxy.example:3128")
    assert configuration.proxy == "http://proxy.example:3128"
    assert configuration.proxy_headers == {"Proxy-Authorization": "Basic dXNlcjpzZWNyZXQ="}


def test_no_proxy_and_a_kubeconfig_proxy_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _client(monkeypatch, HTTPS_PROXY="http://proxy.example:3128", NO_PROXY="10.1.2.3").proxy is None
    explicit = _client(monkeypatch, proxy="http://kubeconfig-proxy:8080", HTTPS_PROXY="http://proxy.example:3128")
    assert explicit.proxy == "http://kubeconfig-proxy:8080"
