"""What the kubectl plugin shows, without a cluster: ages, rows, readiness, timelines, token explanations, colours."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import jwt
import pytest

import agentid
from agentid.api import v1alpha1
from agentid.cli import agents, main, output, views
from tests.support.agents import agent_manifest

NOW = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.UTC)


def body(name: str = "bot", *, generation: int = 1, status: dict[str, Any] | None = None, **spec: Any) -> dict:
    manifest = agent_manifest(name, "team-a", **spec)
    manifest["metadata"].update(uid="uid-1", generation=generation, creationTimestamp="2026-11-29T11:55:00Z")
    if status is not None:
        manifest["status"] = status
    return manifest


def ready_status(generation: int = 1, *, phase: str = "Active", ready: str = "True") -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "phase": phase,
        "conditions": [
            {
                "type": "Ready",
                "status": ready,
                "reason": "Provisioned",
                "message": "ok",
                "observedGeneration": generation,
                "lastTransitionTime": "2026-11-29T11:56:00Z",
            }
        ],
    }


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"), (45, "45s"), (119, "119s"), (120, "2m"), (330, "5m30s"), (600, "10m"), (3 * 3600 - 60, "179m"),
        (3 * 3600, "3h"), (5 * 3600 + 600, "5h10m"), (8 * 3600, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"),
        (3 * 86400 + 4 * 3600, "3d4h"), (8 * 86400, "8d"), (400 * 86400, "400d"), (730 * 86400, "2y"),
        (3 * 365 * 86400 + 5 * 86400, "3y5d"), (9 * 365 * 86400, "9y"), (-5, "0s"),
    ],
)  # fmt: skip
def test_ages_read_like_kubectl(seconds: int, shown: str) -> None:
    assert views.human_duration(dt.timedelta(seconds=seconds)) == shown


def test_a_row_has_owner_mode_phase_ready_and_age() -> None:
    row = views.agent_row(body(status=ready_status()), NOW)
    assert row.cells(with_namespace=False) == ["bot", "alice@example.com", "Autonomous", "Active", "True", "5m"]
    assert row.cells(with_namespace=True)[:2] == ["team-a", "bot"]
    wide = row.cells(with_namespace=False, wide=True)
    assert len(wide) == len(views.LIST_COLUMNS) + len(views.WIDE_COLUMNS)
    assert wide[-2:] == ["never", row.purpose]


def test_the_cli_parsers_name_the_api_values_without_importing_the_models() -> None:
    """agentid.cli.agents keeps `agentid --help` fast by spelling the resumable modes out; they must match."""
    resumable = {mode.value for mode in v1alpha1.SupervisionMode if mode is not v1alpha1.SupervisionMode.SUSPENDED}
    assert set(agents.RESUMABLE_MODES) == resumable


def test_version_prints_the_package_version_and_the_api_it_serves(capsys: pytest.CaptureFixture[str]) -> None:
    assert main.main(["version", "-o", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["agentid"] == agentid.__version__
    assert printed["api"] == v1alpha1.API_VERSION


@pytest.mark.parametrize("shell", ["bash", "zsh", "tcsh"])
def test_completion_scripts_complete_every_command(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main.main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for command in ("list", "describe", "suspend", "revoke", "check", "version", "explain-token"):
        assert command in script
    if shell == "bash":
        assert "kubectl-agentid" in script


def test_group_owners_are_marked_and_the_default_mode_is_supervised() -> None:
    manifest = body(owner={"kind": "Group", "name": "sre"}, status=ready_status(phase="Supervised"))
    del manifest["spec"]["supervision"]
    row = views.agent_row(manifest, NOW)
    assert (row.owner, row.mode) == ("group:sre", "Supervised")


def test_ready_is_unknown_until_the_operator_has_seen_the_current_generation() -> None:
    assert views.agent_row(body(generation=2, status=ready_status(1)), NOW).ready == "Unknown"
    assert views.agent_row(body(), NOW).ready == "Unknown"  # no status at all
    assert views.agent_row(body(status=ready_status(ready="False")), NOW).ready == "False"


def test_an_object_the_models_cannot_parse_still_gets_a_row() -> None:
    manifest = body(status=ready_status())
    manifest["spec"]["owner"] = {"kind": "Robot"}
    row = views.agent_row(manifest, NOW)
    assert (row.name, row.phase, row.ready) == ("bot", "Invalid", "Unknown")


def test_rows_are_sorted_by_namespace_then_name() -> None:
    second, first = body("zeta"), body("alpha")
    assert [row.name for row in views.agent_rows([second, first], NOW)] == ["alpha", "zeta"]


def test_describe_explains_withheld_cluster_roles_delegation_and_stale_status() -> None:
    status = {**ready_status(1), "grantedClusterRoles": ["view"], "supervision": "Supervised"}
    manifest = body(
        generation=2,
        status=status,
        supervision={"mode": "Autonomous"},
        clusterRoleRefs=["view", "edit"],
        delegation={"allowedActors": [{"name": "orchestrator"}], "maxDepth": 2},
        expiresAt="2026-12-01T00:00:00Z",
    )
    agent = views.parse_agent(manifest)
    assert agent is not None
    lines = dict(views.describe_agent(agent, NOW))
    assert lines["ClusterRoles"] == "view (granted), edit (withheld)"
    assert lines["Supervision"] == "Autonomous; in force: Supervised"
    assert lines["Delegation"] == "team-a/orchestrator may act on its behalf (chain depth at most 2)"
    assert lines["Expires"] == "2026-12-01T00:00:00Z (in 36h)"
    assert lines["Ready"].startswith("Unknown (Provisioned: ok) [status is for generation 1, spec is generation 2]")


def event(reason: str, time: str, *, version: str, uid: str = "uid-1", **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"resourceVersion": version, "creationTimestamp": time},
        "eventTime": time,
        "reason": reason,
        "type": "Normal",
        "note": f"{reason} note",
        "reportingController": "agentid.dev/operator",
        "regarding": {"uid": uid},
        **extra,
    }


def test_the_timeline_is_oldest_first_and_same_second_events_keep_their_order() -> None:
    entries = views.timeline(
        [
            event("Revoked", "2026-11-29T11:59:00.000000Z", version="30"),
            event("Suspended", "2026-11-29T11:58:00.000000Z", version="21"),
            event("Provisioned", "2026-11-29T11:58:00.000000Z", version="20"),
        ]
    )
    assert [entry.reason for entry in entries] == ["Provisioned", "Suspended", "Revoked"]


def test_the_timeline_marks_repeats_and_earlier_incarnations() -> None:
    entries = views.timeline(
        [
            event("Provisioned", "2026-11-29T10:00:00Z", version="5", uid="old"),
            event("DriftRepaired", "2026-11-29T11:00:00Z", version="9", series={"count": 3,
                  "lastObservedTime": "2026-11-29T11:30:00.000000Z"}),
        ]
    )  # fmt: skip
    rows = views.timeline_rows(entries, current_uid="uid-1")
    assert rows[0][3] == "Provisioned note [earlier incarnation, uid old]"
    assert rows[1] == ["2026-11-29T11:30:00Z", "Normal", "DriftRepaired", "DriftRepaired note (x3)"]


def test_explaining_a_delegated_token_flattens_the_act_chain_current_actor_first() -> None:
    payload = {
        "iss": "https://tokens.example.com",
        "sub": "spiffe://td/ns/a/agent/worker",
        "aud": ["https://mcp.example.com"],
        "iat": int((NOW - dt.timedelta(minutes=20)).timestamp()),
        "exp": int((NOW - dt.timedelta(minutes=5)).timestamp()),
        "jti": "j-1",
        "agent": {"namespace": "a", "name": "worker", "uid": "u", "owner": {"kind": "User", "name": "alice"},
                  "supervision": "Supervised", "attributes": {"costCenter": "4711"}},
        "act": {"sub": "spiffe://td/ns/a/agent/lead", "agent": {"namespace": "a", "name": "lead", "uid": "u2"},
                "act": {"sub": "spiffe://td/ns/a/agent/root"}},
    }  # fmt: skip
    explained = views.explain({"alg": "ES256", "kid": "k"}, payload)
    assert explained.chain == ["spiffe://td/ns/a/agent/lead (a/lead)", "spiffe://td/ns/a/agent/root"]
    lines = views.explanation_lines(explained, NOW)
    text = "\n".join(f"{label}: {value}" for label, value in lines)
    assert "Expires: 2026-11-29T11:55:00Z (EXPIRED 5m ago)" in text
    assert "Owner: User alice" in text
    assert "Attributes: costCenter=4711" in text
    assert ": actor spiffe://td/ns/a/agent/lead (a/lead)" in text
    assert ": <- spiffe://td/ns/a/agent/root" in text
    assert explained.as_dict()["verified"] is False


def test_a_malformed_act_claim_is_reported_not_raised() -> None:
    explained = views.explain({}, {"sub": "s", "act": {"no": "sub"}})
    assert explained.chain == []
    assert explained.chain_error is not None
    assert explained.chain_error.startswith("malformed act claim")


def test_service_account_tokens_are_explained_too() -> None:
    payload = {"sub": "system:serviceaccount:a:bot-agent", "kubernetes.io": {"namespace": "a",
               "serviceaccount": {"name": "bot-agent", "uid": "sa-1"}, "pod": {"name": "bot-7f9"}}}  # fmt: skip
    lines = dict(views.explanation_lines(views.explain({}, payload), NOW))
    assert lines["ServiceAccount"] == "a/bot-agent (uid sa-1), pod bot-7f9"
    assert lines["Delegation"] == "none (the subject acts for itself)"


def test_no_colours_when_the_output_is_not_a_terminal() -> None:
    stream = io.StringIO()
    out = output.console(stream)
    table = output.table("NAME", "PHASE")
    output.add_row(table, ["bot", "[bold]Active[/bold]"])
    output.print_table(out, table)
    assert "\x1b[" not in stream.getvalue()
    assert "[bold]Active[/bold]" in stream.getvalue(), "cell text is literal, never markup"
    assert all(line == line.rstrip() for line in stream.getvalue().splitlines())


def test_explain_token_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    token = jwt.encode({"sub": "s", "exp": 1}, "k" * 32, algorithm="HS256")
    assert main.main(["explain-token", token, "-o", "json"]) == agents.EXIT_OK
    assert json.loads(capsys.readouterr().out)["claims"]["sub"] == "s"
    assert main.main(["explain-token", "garbage"]) == agents.EXIT_ERROR
    assert "not a JWT" in capsys.readouterr().err


def test_revoke_without_a_reason_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as stopped:
        main.main(["revoke", "bot"])
    assert stopped.value.code == agents.EXIT_USAGE


def test_every_exit_code_is_documented() -> None:
    codes = {value for name, value in vars(agents).items() if name.startswith("EXIT_") and isinstance(value, int)}
    assert codes == set(agents.EXIT_CODES)
