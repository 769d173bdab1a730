"""The kill-switch condition: generated from the API model, the chart's copy fresh, and it names every spec field
but the kill-switch ones (a field added to the spec later is guarded without anyone remembering to)."""

from __future__ import annotations

from pathlib import Path

from agentid.api import v1alpha1
from agentid.webhooks import admission, configuration

CHART_FILES = Path(__file__).resolve().parents[2] / "charts" / "agentid-operator" / "files"


def test_the_charts_copy_of_the_condition_is_fresh() -> None:
    written = (CHART_FILES / configuration.KILL_SWITCH_FILE).read_text()
    assert written == configuration.kill_switch_expression() + "\n", "run `make crds`"


def test_every_spec_field_but_supervision_and_revocation_must_stay_unchanged() -> None:
    expression = configuration.kill_switch_expression()
    for name, field in v1alpha1.AgentIdentitySpec.model_fields.items():
        alias = field.alias or name
        guarded = f"object.spec.{alias} == oldObject.spec.{alias}" in expression
        assert guarded is (alias not in admission.KILL_SWITCH_FIELDS), alias
    assert "object.metadata.annotations == oldObject.metadata.annotations" in expression
    assert expression.startswith("request.operation == 'UPDATE' && ")


def test_only_changes_outside_supervision_and_revocation_count_as_more_than_a_kill_switch() -> None:
    before = {"purpose": "triage", "supervision": {"mode": "Autonomous"}, "revoked": False}
    assert admission.only_kill_switch_changes(before, {**before, "supervision": {"mode": "Suspended"}})
    assert admission.only_kill_switch_changes(before, {**before, "revoked": True, "revocationReason": "incident"})
    assert not admission.only_kill_switch_changes(before, {**before, "purpose": "something else"})
