"""Every condition and Event reason is a constant of agentid.domain.reasons, documented there (and so in
docs/reference.md): no literal reason anywhere else in what writes status or Events."""

from __future__ import annotations

import ast
from pathlib import Path

from agentid.domain import reasons

PACKAGE = Path(reasons.__file__).resolve().parent.parent
WRITERS = ("domain", "reconcile", "handlers", "kube")
# Calls whose reason is positional: Withheld(reason, ...), EventSpec(type, reason, ...).
POSITIONAL = {"Withheld": 0, "EventSpec": 1}


def _name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _literal(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def literal_reasons(source: str) -> list[int]:
    """Line numbers of reasons written as string literals."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            keywords = [k.value for k in node.keywords if k.arg == "reason"]
            position = POSITIONAL.get(_name(node.func))
            if position is not None and len(node.args) > position:
                keywords.append(node.args[position])
            found += [node.lineno for value in keywords if _literal(value)]
        elif isinstance(node, ast.Dict):
            found += [
                node.lineno
                for key, value in zip(node.keys, node.values, strict=True)
                if _literal(key) and key.value == "reason" and _literal(value)  # type: ignore[union-attr]
            ]
    return found


def test_no_literal_reason_outside_the_reasons_module() -> None:
    offenders = []
    for package in WRITERS:
        for path in sorted((PACKAGE / package).rglob("*.py")):
            if path.name == "reasons.py":
                continue
            offenders += [f"{path.relative_to(PACKAGE)}:{line}" for line in literal_reasons(path.read_text())]
    assert offenders == []


def test_the_check_finds_literal_reasons() -> None:
    source = 'Withheld("X", "m")\nEventSpec("Warning", "Y", "m", "a")\npost(reason="Z")\nd = {"reason": "W"}\n'
    assert literal_reasons(source) == [1, 2, 3, 4]
    assert literal_reasons('Withheld(reasons.X, "m")\npost(reason=reasons.Y)\n') == []


def test_every_reason_is_documented() -> None:
    constants = {name: value for name, value in vars(reasons).items() if name.isupper() and isinstance(value, str)}
    documented = {**reasons.CONDITION_TYPES, **reasons.CONDITION_REASONS, **reasons.EVENT_REASONS}
    assert {value for value in constants.values()} <= set(documented)
    assert all(meaning.strip() for meaning in documented.values())
