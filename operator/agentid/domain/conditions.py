"""The one condition helper: stamps observedGeneration, keeps lastTransitionTime unless the status flips."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Literal

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


def find(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((condition for condition in conditions if condition.type == type_), None)
