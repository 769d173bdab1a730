"""`agentid uninstall`'s command line: its options, and a deadline that is no number of seconds is a usage error."""

from __future__ import annotations

import pytest

from agentid.cli.main import build_parser


def test_the_options_and_their_defaults() -> None:
    args = build_parser().parse_args(["uninstall"])
    assert (args.dry_run, args.keep_crds, args.operator_gone, args.timeout) == (False, False, False, 120.0)
    args = build_parser().parse_args(["uninstall", "--dry-run", "--keep-crds", "--operator-gone", "--timeout", "5"])
    assert (args.dry_run, args.keep_crds, args.operator_gone, args.timeout) == (True, True, True, 5.0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be more than 0 seconds: '0'"),
        ("-3", "must be more than 0 seconds: '-3'"),
        ("inf", "must be more than 0 seconds: 'inf'"),
        ("soon", "not a number of seconds: 'soon'"),
    ],
)
def test_a_timeout_that_is_no_deadline_is_a_usage_error(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["uninstall", "--timeout", value])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"agentid uninstall: error: argument --timeout: {message}"
