"""Which ClusterRoles admission has checked for an agent: the proof the reconciler asks for before binding one.

The mutating admission webhook stamps an annotation mapping each referenced ClusterRole to what admission saw:
the ClusterRole's UID, or ``absent`` when it did not exist yet (which the validating webhook admits only for a
requester who may ``bind`` it). The annotation is overwritten on every write (a client cannot forge it) and
copied unchanged on writes that leave the spec alone. The reconciler binds a ClusterRole only when the proof
still matches: a ClusterRole created or re-created after admission checked the agent is withheld until a spec
write has it checked again — it can never grant what admission never saw. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from agentid.api import v1alpha1

ANNOTATION = f"{v1alpha1.GROUP}/admitted-cluster-roles"
ABSENT = "absent"

Proof = Mapping[str, str]


def seen(uid: str | None) -> str:
    """The proof value for a ClusterRole as admission sees it now (None: it does not exist)."""
    return f"uid:{uid}" if uid else ABSENT


def parse(annotations: Mapping[str, str]) -> dict[str, str] | None:
    """The proof on an object, or None where admission never stamped one (or the value is not ours)."""
    value = annotations.get(ANNOTATION)
    if value is None:
        return None
    try:
        decoded = json.loads(value)
    except ValueError:
        return {}
    if not isinstance(decoded, dict):
        return {}
    return {str(name): str(proof) for name, proof in decoded.items()}


def encode(proof: Proof) -> str:
    return json.dumps(dict(sorted(proof.items())), separators=(",", ":"))


def stamp(refs: Sequence[str], current: Mapping[str, str | None]) -> dict[str, str]:
    """The proof for ``refs``, from the ClusterRoles' current UIDs (``current[name]`` None: absent)."""
    return {name: seen(current.get(name)) for name in dict.fromkeys(refs)}


def rechecked(old: Proof | None, new: Proof) -> tuple[str, ...]:
    """ClusterRoles whose proof this write changes: admission must check them as if newly referenced."""
    before = old or {}
    return tuple(name for name, value in new.items() if before.get(name) != value)


def admitted(proof: Proof | None, name: str, uid: str) -> bool:
    """May the reconciler bind ClusterRole ``name`` (current ``uid``)? Objects that admission never stamped
    (no webhook in front of their namespace, or written before this proof existed) are not second-guessed."""
    if proof is None:
        return True
    value = proof.get(name)
    return value == ABSENT or value == seen(uid)
