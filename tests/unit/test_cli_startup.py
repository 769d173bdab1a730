"""`agentid --help`, completion and `version` start fast because building the parser imports none of the heavy
dependencies (timings are in the report of the change, not asserted: this checks the cause, which cannot flake)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = {"kopf", "kubernetes", "pydantic", "aiohttp", "rich", "jwt", "cryptography", "yaml", "asyncio"}


def imported_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_building_the_parser_imports_no_heavy_dependency() -> None:
    assert imported_after("from agentid.cli import main; main.build_parser()") & HEAVY == set()


def test_help_and_version_import_no_heavy_dependency() -> None:
    for argv in (["--help"], ["list", "--help"], ["version"], ["check", "--help"]):
        code = f"from agentid.cli import main\ntry:\n    main.main({argv!r})\nexcept SystemExit:\n    pass"
        assert imported_after(code) & HEAVY == set(), argv
