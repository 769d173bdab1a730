"""Namespace patterns are matched as Kopf matches them (agentid.domain.namespaces)."""

from __future__ import annotations

from agentid.domain import namespaces


def test_specific_patterns_name_one_namespace() -> None:
    assert namespaces.specific(["team-a", "team-*", "!x", "a,b", "t?"]) == {"team-a"}


def test_globs_exclusions_and_re_matches() -> None:
    pattern = "myapp-*, !*-pr-*, *pr-123"
    assert namespaces.matches("myapp-live", pattern)
    assert namespaces.matches("myapp-pr-123", pattern)
    assert not namespaces.matches("myapp-pr-456", pattern)
    assert not namespaces.matches("otherapp-pr-123", pattern)
    assert namespaces.matches("otherapp-pr-123", "!*-pr-*, *pr-123")
    assert not namespaces.matches("kube-system", "!kube-*")
    assert namespaces.matches("a-1", "a-?")
