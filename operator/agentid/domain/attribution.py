"""Human attribution: who created an agent, who last changed its supervision, revocation or permissions.

The mutating admission webhook stamps two annotations from the admission request's userInfo (overwriting
whatever a client sent, so they cannot be forged through the API); the reconciler copies them into status and
names that person in Events and audit records.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

import pydantic

from agentid.api import v1alpha1
from agentid.api.v1alpha1 import Attribution

CREATED_BY = f"{v1alpha1.GROUP}/created-by"
LAST_CHANGED_BY = f"{v1alpha1.GROUP}/last-changed-by"
MAX_GROUPS = 32

# Which spec fields make a change worth attributing, by the name it is recorded under.
ATTRIBUTED = {
    "supervision": ("supervision",),
    "revocation": ("revoked", "revocationReason"),
    "permissions": ("permissions", "clusterRoleRefs"),
    "expiry": ("expiresAt",),
    "owner": ("owner",),
    "delegation": ("delegation",),
    "credentials": ("credentials",),
}


def changed_aspects(old_spec: Mapping[str, Any] | None, new_spec: Mapping[str, Any]) -> list[str]:
    if old_spec is None:
        return ["created"]
    return [
        aspect
        for aspect, fields in ATTRIBUTED.items()
        if any(old_spec.get(field) != new_spec.get(field) for field in fields)
    ]


def stamp(userinfo: Mapping[str, Any], now: dt.datetime, changes: list[str]) -> Attribution:
    groups = [str(group) for group in userinfo.get("groups") or []]
    return Attribution(
        username=str(userinfo.get("username") or "unknown")[: v1alpha1.NAME_MAX],
        groups=[group[: v1alpha1.NAME_MAX] for group in groups[:MAX_GROUPS]],
        time=now,
        changes=changes,
    )


def _encode(attribution: Attribution) -> str:
    return json.dumps(attribution.model_dump(mode="json", by_alias=True), separators=(",", ":"))


def stamped_annotations(
    *,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    userinfo: Mapping[str, Any],
    now: dt.datetime,
) -> dict[str, str]:
    """The two annotation values the object must carry after this write (create or update)."""
    old_annotations: Mapping[str, str] = ((old or {}).get("metadata") or {}).get("annotations") or {}
    changes = changed_aspects((old or {}).get("spec") if old is not None else None, new.get("spec") or {})
    result: dict[str, str] = {}
    if old is None:
        result[CREATED_BY] = result[LAST_CHANGED_BY] = _encode(stamp(userinfo, now, changes))
        return result
    for key in (CREATED_BY, LAST_CHANGED_BY):
        if key in old_annotations:
            result[key] = old_annotations[key]  # a client may not rewrite history
    if changes:
        result[LAST_CHANGED_BY] = _encode(stamp(userinfo, now, changes))
    return result


def parse(annotations_: Mapping[str, str], key: str) -> Attribution | None:
    value = annotations_.get(key)
    if not value:
        return None
    try:
        return Attribution.model_validate_json(value)
    except pydantic.ValidationError:
        return None
