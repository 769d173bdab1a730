"""``agentid explain-token`` and ``agentid crds``: commands that need no cluster, so they import no Kubernetes client.

Registered by ``agentid.cli.agents``; rendering through ``agentid.cli.output`` and ``agentid.cli.views``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import jwt
from rich.text import Text

from agentid.api import crdgen
from agentid.cli import output, views
from agentid.cli.agents import EXIT_ERROR, EXIT_OK
from agentid.domain import claims
from agentid.tokens import verification
from agentid.tokens.settings import Limits


def _read_token(source: str) -> str:
    if source == "-":
        return sys.stdin.read().strip()
    if source.startswith("@"):
        return Path(source[1:]).read_text().strip()
    return source.strip()


def explain_token_command(args: argparse.Namespace) -> int:
    try:
        token = _read_token(args.jwt)
        payload = verification.unverified_claims(token, Limits().max_token_bytes)
        header = jwt.get_unverified_header(token)
    except OSError as error:
        print(f"error: cannot read the token: {output.one_line(error)}", file=sys.stderr)
        return EXIT_ERROR
    except (claims.Refused, jwt.PyJWTError):
        print("error: not a JWT (expected three base64url parts with JSON header and claims)", file=sys.stderr)
        return EXIT_ERROR
    explained = views.explain(header, payload)
    if args.output in ("json", "yaml"):
        output.print_document(explained.as_dict(), args.output)
        return EXIT_OK
    out = output.console()
    out.print(Text(views.UNVERIFIED_BANNER, style="bold yellow"))
    output.print_lines(out, views.explanation_lines(explained, dt.datetime.now(dt.UTC)))
    out.print("\n[bold]Claims (unverified):[/bold]")
    out.print(json.dumps(payload, indent=2, sort_keys=True), markup=False)
    return EXIT_OK


def crds_command(args: argparse.Namespace) -> int:
    print("---\n".join(crdgen.render(definition) for definition in crdgen.DEFINITIONS), end="")
    return EXIT_OK
