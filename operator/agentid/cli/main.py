"""Entry point of the ``agentid`` command: one sub-command module per concern, wired here.

Start-up stays fast (``agentid --help`` well under a third of a second): the sub-command modules register their
parsers with the standard library only and import their heavy dependencies (Kopf, the Kubernetes client,
pydantic, rich) when a command runs (``agentid.cli.lazy``). ``version`` and ``completion`` need nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Sequence

from agentid import __version__
from agentid.cli import agents, dev, run, tokenagent, tokens

COMPLETION_SHELLS = ("bash", "zsh", "tcsh")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentid", description="Every AI agent gets its own Kubernetes identity.")
    parser.add_argument("--version", action="version", version=f"agentid {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    dev.register(subparsers)
    run.register(subparsers)
    tokens.register(subparsers)
    agents.register(subparsers)
    tokenagent.register(subparsers)  # the Pod's token sidecar: like every command, light until it runs
    _register_version(subparsers)
    _register_completion(subparsers)
    return parser


def _register_version(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    version = subparsers.add_parser("version", help="print the agentid version (and the API version it serves)")
    version.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text")
    version.set_defaults(func=version_command)


def version_command(args: argparse.Namespace) -> int:
    info = {"agentid": __version__, "api": "agentid.dev/v1alpha1", "python": platform.python_version()}
    if args.output == "json":
        print(json.dumps(info, indent=2))
    elif args.output == "yaml":
        print("".join(f"{key}: {value}\n" for key, value in info.items()), end="")
    else:
        print(f"agentid {info['agentid']} (API {info['api']}, Python {info['python']})")
    return 0


def _register_completion(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    completion = subparsers.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print a completion script for your shell. bash: `source <(agentid completion bash)`, or "
        "save it as ~/.local/share/bash-completion/completions/agentid. zsh: save it as _agentid in a directory "
        "on $fpath. kubectl plugins get no completion from kubectl itself; the script completes `agentid` and "
        "`kubectl-agentid`.",
    )
    completion.add_argument("shell", choices=COMPLETION_SHELLS)
    completion.set_defaults(func=completion_command)


def completion_command(args: argparse.Namespace) -> int:
    import shtab  # only this command needs it

    script = shtab.complete(build_parser(), shell=args.shell)
    if args.shell == "bash":  # the same completion for the kubectl plugin's executable name
        script += "\ncomplete -o filenames -F _shtab_agentid kubectl-agentid\n"
    print(script)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # `agentid ... | head`: the reader left; no traceback, and none at interpreter exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return agents.EXIT_ERROR
    except Exception as error:
        from agentid.kube import errors  # imported only then: `agentid token-agent` runs without the kube layer

        if not isinstance(error, errors.KubeconfigError | errors.ApiError):
            raise
        print(f"error: {_describe(error)}", file=sys.stderr)
        return agents.EXIT_ERROR


def _describe(error: Exception) -> str:
    from agentid.kube import errors

    if isinstance(error, errors.Unreachable):
        return f"cannot reach the API server: {_one_line(error.message)}"
    if isinstance(error, errors.ApiError):
        return f"the API server refused: {error.reason}: {_one_line(error.message)}"
    return _one_line(error)  # a kubeconfig problem, a missing file, a service that does not answer


def _one_line(error: object) -> str:
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
