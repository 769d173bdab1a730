"""How the CLI prints: rich tables and labelled lines for people, JSON/YAML for scripts, one-line errors.

Used by ``agentid.cli.commands`` (cluster commands) and ``agentid.cli.offline`` (explain-token, crds). Colours only
on a terminal (and never with NO_COLOR set); no wrapping at 80 columns when piped; cell text is literal (a '['
in a message is not rich markup).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text


def console(stream: Any = None) -> Console:
    """Colours on a terminal only (rich also honours NO_COLOR); no wrapping at 80 columns when piped."""
    target = stream or sys.stdout
    terminal = hasattr(target, "isatty") and target.isatty()
    return Console(file=target, highlight=False, soft_wrap=False, width=None if terminal else 512)


def table(*columns: str) -> Table:
    grid = Table(box=None, header_style="bold", pad_edge=False, show_edge=False)
    for column in columns:
        grid.add_column(column, overflow="fold")
    return grid


def print_table(out: Console, grid: Table) -> None:
    """Rich pads every cell to its column's width; lines without trailing blanks are kinder to scripts."""
    with out.capture() as captured:
        out.print(grid)
    out.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def add_row(grid: Table, cells: Sequence[str]) -> None:
    grid.add_row(*(Text(cell) for cell in cells))  # literal text: '[' in a message is not markup


def one_line(error: object) -> str:
    """Client libraries put newlines (and whole reprs) into their messages; a CLI error is one line."""
    return " ".join(str(error).split()) or type(error).__name__


def print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, sort_keys=True, default=str))


def print_document(document: Any, output: str) -> None:
    """-o json or -o yaml, kubectl's layout (keys sorted, two-space indent)."""
    if output == "yaml":
        print(yaml.safe_dump(document, sort_keys=True, default_flow_style=False), end="")
    else:
        print_json(document)


def print_lines(out: Console, lines: Sequence[tuple[str, str]]) -> None:
    width = max((len(label) for label, _ in lines), default=0) + 2
    for label, value in lines:
        line = Text(f"{label + ':' if label else '':<{width}}", style="bold")
        line.append(value)
        out.print(line)
