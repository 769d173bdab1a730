"""Commands whose module is imported only when they run: ``agentid --help`` and completion stay fast.

The sub-command modules register their parsers with the standard library alone and name the function that does
the work as ``"module:function"``; Kopf, the Kubernetes client, pydantic and rich are imported by that module,
so a command pays only for what it uses.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

Command = Callable[[argparse.Namespace], int]


def command(target: str) -> Command:
    """``command("agentid.cli.commands:list_command")``: import the module on the first call, then run."""
    module_name, _, function_name = target.partition(":")

    def run(args: argparse.Namespace) -> int:
        function: Command = getattr(importlib.import_module(module_name), function_name)
        return function(args)

    run.__qualname__ = run.__name__ = function_name
    return run
