"""REST paths of the resources agentid uses (agentid.kube.resources), where their shape is not the usual one."""

from __future__ import annotations

from agentid.kube import resources


def test_the_service_proxy_path_puts_scheme_name_and_port_in_place_of_the_name() -> None:
    # `kubectl agentid check` reaches the chart's token service through this path; a name segment before it is a 404.
    assert (
        resources.service_proxy_path("agentid-system", "agentid-tokens", 443)
        == "/api/v1/namespaces/agentid-system/services/https:agentid-tokens:443/proxy"
    )
