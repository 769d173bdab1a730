"""The one condition helper: stamps observedGeneration, keeps lastTransitionTime unless the status flips."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pydantic

from agentid.api.v1alpha1 import Condition

Status = Literal["True", "False", "Unknown"]


def set_condition(
    conditions: Sequence[Condition],
    *,
    type_: str,
    status: Status,
    reason: str,
    message: str,
    generation: int,
    now: dt.datetime,
) -> list[Condition]:
    """Return ``conditions`` with ``type_`` set; other conditions keep their order and values."""
    existing = next((condition for condition in conditions if condition.type == type_), None)
    transition = existing.last_transition_time if existing is not None and existing.status == status else now
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=transition,
    )
    if existing is None:
        return [*conditions, updated]
    return [updated if condition.type == type_ else condition for condition in conditions]


def set_in_status(
    status: Mapping[str, Any],
    *,
    type_: str,
    status_: Status,
    reason: str,
    message: str,
    generation: int,
    now: dt.datetime,
) -> dict[str, Any]:
    """``set_condition`` on a status as the apiserver holds it (JSON), for when the object cannot be parsed or the
    pass failed before computing a status; conditions that do not parse are dropped."""
    conditions = []
    for raw in status.get("conditions") or []:
        try:
            conditions.append(Condition.model_validate(raw))
        except pydantic.ValidationError:
            continue
    updated = set_condition(
        conditions, type_=type_, status=status_, reason=reason, message=message, generation=generation, now=now
    )
    return {**status, "conditions": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in updated]}


def find(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((condition for condition in conditions if condition.type == type_), None)


def unreported(body: Mapping[str, Any]) -> bool:
    """The status does not yet speak for the current spec (never reconciled, changed since) or the agent is being
    deleted: what a new holder of its shard should pass first, before agents whose status is already current."""
    metadata = body.get("metadata") or {}
    status = body.get("status") or {}
    return bool(metadata.get("deletionTimestamp")) or status.get("observedGeneration") != metadata.get("generation")
