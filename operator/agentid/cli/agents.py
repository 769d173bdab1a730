"""``agentid list|describe|suspend|resume|revoke|explain-token|audit|crds|check|uninstall``: the kubectl plugin's
parsers.

Registered by ``agentid.cli.main``; the same entry point is installed as ``kubectl-agentid``, so
``kubectl agentid list -A`` works. Only the standard library is imported here (``agentid --help`` and shell
completion stay fast); the commands live in ``agentid.cli.commands`` (cluster), ``agentid.cli.offline`` (no
cluster), ``agentid.cli.check`` and ``agentid.cli.uninstall``, imported when one runs. Exit codes scripts can rely on
are the ``EXIT_*`` constants below (docs/reference.md lists them).
"""

from __future__ import annotations

import argparse

from agentid.cli.lazy import command
from agentid.tokens.defaults import DEFAULT_KUBE_AUDIENCE, DEFAULT_NAMESPACE

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_TERMINAL = 4
EXIT_NOT_INSTALLED = 5
EXIT_CODES = {  # documented in docs/reference.md (generated from this table)
    EXIT_OK: "done, also when the agent already was in the requested state (suspend twice, revoke twice)",
    EXIT_ERROR: "the API server refused the request (validation, admission, RBAC) or could not be reached; "
    "the kubeconfig is missing or unusable; malformed input (e.g. explain-token of something that is not a JWT); "
    "--wait ran out of time; check found a broken piece; uninstall left an agent (another controller's finalizer)",
    EXIT_USAGE: "bad command line",
    EXIT_NOT_FOUND: "no such agent (audit: no agent and no Events about it)",
    EXIT_TERMINAL: "not possible in the agent's state: revoked and expired agents are terminal; being deleted",
    EXIT_NOT_INSTALLED: "the agentid CRDs are not installed in the cluster (install the chart or `agentid crds`)",
}

# The modes `resume` may restore (agentid.api.v1alpha1.SupervisionMode without Suspended; a unit test keeps
# them equal: the API models are not imported here, pydantic costs a tenth of a second).
RESUMABLE_MODES = ("Autonomous", "Supervised")
OUTPUTS = ("table", "json", "yaml", "name")
_COMMANDS = "agentid.cli.commands"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then in-cluster)")
    connection.add_argument("--context", help="kubeconfig context")
    one = argparse.ArgumentParser(add_help=False, parents=[connection])
    one.add_argument("name", help="the AgentIdentity's name")
    one.add_argument("-n", "--namespace", help="namespace (default: the context's namespace)")
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument(
        "-o",
        "--output",
        choices=OUTPUTS,
        default="table",
        help="table for people; json or yaml: the API objects, as kubectl prints them; name: kind/name",
    )
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--wait", action="store_true", help="wait until the operator has put the change in force")
    waiting.add_argument("--timeout", type=float, default=60.0, help="seconds to --wait (default 60)")

    listing = subparsers.add_parser("list", parents=[connection], help="list agents (table)")
    listing.add_argument(
        "-o",
        "--output",
        choices=("table", "wide", *OUTPUTS[1:]),
        default="table",
        help="table (wide: also purpose, agent ID and expiry); json or yaml: a List of the API objects; name",
    )
    scope = listing.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="namespace (default: the context's namespace)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="agents in every namespace")
    listing.set_defaults(func=command(f"{_COMMANDS}:list_command"))

    describe = subparsers.add_parser("describe", parents=[one, output], help="show one agent in detail")
    describe.set_defaults(func=command(f"{_COMMANDS}:describe_command"))

    suspend = subparsers.add_parser("suspend", parents=[one, waiting], help="switch an agent off (reversible)")
    suspend.add_argument("--reason", help="why (shown in status and Events)")
    suspend.set_defaults(func=command(f"{_COMMANDS}:suspend_command"))

    resume = subparsers.add_parser("resume", parents=[one, waiting], help="switch a suspended agent back on")
    resume.add_argument(
        "--mode",
        choices=RESUMABLE_MODES,
        help="mode to resume in (default: the mode it was suspended from, else Supervised)",
    )
    resume.add_argument("--reason", help="why (shown in status and Events)")
    resume.set_defaults(func=command(f"{_COMMANDS}:resume_command"))

    revoke = subparsers.add_parser("revoke", parents=[one, waiting], help="revoke an agent for good (terminal)")
    revoke.add_argument("--reason", required=True, help="why (recorded in status, Events and audit records)")
    revoke.set_defaults(func=command(f"{_COMMANDS}:revoke_command"))

    explain = subparsers.add_parser(
        "explain-token", help="decode a JWT WITHOUT verifying it: claims and delegation chain"
    )
    explain.add_argument(
        "-o", "--output", choices=OUTPUTS[:3], default="table", help="table for people, json or yaml for scripts"
    )
    explain.add_argument("jwt", help="the token, '-' to read it from stdin, or @FILE")
    explain.set_defaults(func=command("agentid.cli.offline:explain_token_command"))

    audit = subparsers.add_parser("audit", parents=[one], help="an agent's timeline from its Events")
    audit.add_argument(
        "-o", "--output", choices=OUTPUTS[:3], default="table", help="table for people, json or yaml for scripts"
    )
    audit.set_defaults(func=command(f"{_COMMANDS}:audit_command"))

    crds = subparsers.add_parser("crds", help="print the CustomResourceDefinitions (YAML)")
    crds.set_defaults(func=command("agentid.cli.offline:crds_command"))

    check = subparsers.add_parser(
        "check",
        parents=[connection],
        help="verify an installation: CRDs, admission webhook, token service, apiserver authentication",
        description="Checks each piece of an agentid installation and prints one line per piece (ok, FAIL, WARN or "
        "SKIP); exits 1 when any piece is broken. docs/troubleshooting.md explains each failure.",
    )
    check.add_argument(
        "--operator-namespace",
        default=DEFAULT_NAMESPACE,
        help="namespace of the agentid release (where its token Service is)",
    )
    check.add_argument(
        "-n", "--namespace", help="namespace for the webhook's dry-run (default: the context's namespace)"
    )
    check.add_argument("--issuer", help="token service URL to query directly (default: through the API server)")
    check.add_argument("--cacert", help="CA bundle to trust --issuer with")
    check.add_argument(
        "--agent",
        metavar="NAMESPACE/NAME",
        help="also prove apiserver authentication: exchange this agent's token and ask the API server who it is",
    )
    check.add_argument(
        "--kube-audience",
        default=DEFAULT_KUBE_AUDIENCE,
        help="audience the API server accepts agent tokens for",
    )
    check.add_argument(
        "-o", "--output", choices=("text", "json"), default="text", help="json: the findings, for scripts"
    )
    check.set_defaults(func=command("agentid.cli.check:check_command"))
    _register_uninstall(subparsers, connection)


def _register_uninstall(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], connection: argparse.ArgumentParser
) -> None:
    uninstall = subparsers.add_parser(
        "uninstall",
        parents=[connection],
        help="remove every agent (access first), its objects, the issuer keys, leftover webhooks and the CRDs",
        description="In order, each step idempotent: (1) suspend every agent (a kill-switch write) and, while an "
        "operator runs, wait until it reports them without access; (2) delete every AgentPolicy and AgentIdentity "
        "and wait for the operator to remove their objects and finalizer; (3) if the operator is gone (or does not "
        "finish within --timeout), remove what is left itself: only objects an agent provably owns, RoleBindings "
        "first, then agentid's finalizer and never another; (4) delete the token service's issuer key Secrets and "
        "agentid's webhook configurations (each kept while what uses it still runs), then the CRDs. Run it before "
        "or after `helm uninstall` (docs/helm.md#uninstall).",
    )
    uninstall.add_argument("--dry-run", action="store_true", help="print what would be done, change nothing")
    uninstall.add_argument("--keep-crds", action="store_true", help="keep the CRDs (and with them nothing else)")
    uninstall.add_argument(
        "--operator-gone",
        action="store_true",
        help="do not wait for the operator (default: wait while a ready operator Deployment or webhook is found)",
    )
    uninstall.add_argument(
        "--timeout",
        type=_seconds,
        default=120.0,
        help="seconds to wait for the operator at each step, and for the CRDs to go (default 120)",
    )
    uninstall.set_defaults(func=command("agentid.cli.uninstall:uninstall_command"))


def _seconds(text: str) -> float:
    """A deadline in seconds: a finite number above zero (argparse turns the error into a usage line)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value
