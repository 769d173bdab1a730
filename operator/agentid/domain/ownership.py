"""Which objects are the agent's: the one rule for every kind agentid writes or deletes, and what a stranger costs.

Called by the reconciler's read side (an object in the watch that is not the agent's is never observed as the
agent's), by its writes (a create that finds the name taken looks at the live object) and by deletion. Labels are
not proof: anyone who can create a ServiceAccount can label it. Proof is a controller reference to the agent's
UID on an object created no earlier than the agent: an object that predates the agent (say, a ServiceAccount with
tokens minted for it in advance) never becomes the agent's, even if someone adds the reference later.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agentid.api.v1alpha1 import AgentIdentity
from agentid.domain import clock, naming, reasons
from agentid.domain.supervision import Access, Withheld

# Creation times come from the apiservers' clocks, to the second; HA apiservers may disagree by a little.
CLOCK_SKEW = dt.timedelta(seconds=2)
ObjectName = tuple[str, str]  # (kind, name)


@dataclass(frozen=True)
class Owner:
    """The agent incarnation objects must name: its UID, and when it was created."""

    uid: str
    created: dt.datetime | None = None

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Owner:
        metadata = body.get("metadata") or {}
        return cls(str(metadata.get("uid") or ""), clock.parse(metadata.get("creationTimestamp")))


def owns(owner: Owner, body: Mapping[str, Any]) -> bool:
    """Whether ``body`` is this agent's to change or delete."""
    metadata = body.get("metadata") or {}
    controllers = [ref.get("uid") for ref in metadata.get("ownerReferences") or [] if ref.get("controller") is True]
    return owned_by(owner, controllers[0] if controllers else None, clock.parse(metadata.get("creationTimestamp")))


def owned_by(owner: Owner, controller_uid: object, created: dt.datetime | None) -> bool:
    """The rule itself, for a reader that keeps only an object's controller UID and creation time (the token
    service's view of agents' ServiceAccounts)."""
    if not owner.uid or controller_uid != owner.uid:
        return False
    return owner.created is None or created is None or created >= owner.created - CLOCK_SKEW


def conflicts(agent: AgentIdentity, taken: Iterable[ObjectName]) -> tuple[ObjectName, ...]:
    """The agent's derived names that a stranger holds (see ``naming.derived``)."""
    wanted = set(naming.derived(agent.name, agent.spec.cluster_role_refs))
    return tuple(sorted(wanted.intersection(taken)))


def withhold(access: Access, held: Iterable[ObjectName]) -> Access:
    """Nothing is granted while any derived name is a stranger's: a binding could name a stranger's Role or
    ServiceAccount, and an agent that holds only part of its objects is not what anyone declared."""
    held = tuple(held)
    if not held:
        return access
    names = ", ".join(f"{kind} {name}" for kind, name in held)
    verb = "exists and was" if len(held) == 1 else "exist and were"
    conflict = Withheld(
        reasons.NAME_CONFLICT,
        f"{names} {verb} not created by this agent; agentid never changes or deletes objects it did not create: "
        "delete or rename what holds the name (nothing is granted until then)",
        problem=True,
    )
    return Access(withheld=(conflict, *access.withheld))
