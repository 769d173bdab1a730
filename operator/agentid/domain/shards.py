"""Which replica reconciles which agent: shards by namespace, one Lease per shard, and the election's timings.

Used by ``agentid.kube.lease`` (the elector), ``agentid.reconcile.controller`` (only keys of held shards are
reconciled) and the CLI. An agent's shard is a stable hash of its namespace: every agent of a namespace lands on
the same shard, so work that spans a namespace (its policy, its owner ceiling) stays on one replica, and the
assignment survives restarts and never depends on Python's per-process ``hash()`` seed. With one shard this is
plain leader election (one Lease); with N shards there is one Lease per shard plus one membership Lease per
replica, so each replica knows the live replicas and how many shards each holds, and the load evens out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

DEFAULT_LEASE = "agentid-operator"
JITTER = 1.2  # client-go's JitterFactor: the retry period is stretched by up to 20 %
LEASE_SET_LABEL = "agentid.dev/lease-set"  # every Lease of one election carries its base name
MEMBER_LABEL = "agentid.dev/lease-member"  # "true" on membership Leases
SHARDS_ANNOTATION = "agentid.dev/shards"  # on every Lease: the shard count of the replica that wrote it


class ElectionError(ValueError):
    """Election settings that cannot work (a clear message for the CLI)."""


@dataclass(frozen=True)
class ElectionTimings:
    """client-go's defaults: a holder renews every ``retry_period``, gives up leading once it could not renew for
    ``renew_deadline``, and others may take the Lease ``lease_duration`` after they last saw it change, so a holder
    that stops renewing has stopped leading before anyone else starts."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline:
            raise ElectionError(
                f"the lease duration ({self.lease_duration:g}s) must be longer than the renew deadline "
                f"({self.renew_deadline:g}s): a holder must stop leading before its Lease can be taken"
            )
        if not self.renew_deadline > JITTER * self.retry_period:
            raise ElectionError(
                f"the renew deadline ({self.renew_deadline:g}s) must be longer than {JITTER:g} x the retry period "
                f"({self.retry_period:g}s): a holder must be able to renew at least once before it gives up"
            )
        if self.retry_period <= 0:
            raise ElectionError(f"the retry period must be positive, not {self.retry_period:g}s")


@dataclass(frozen=True)
class ElectionSettings:
    """Where the Leases live, how many shards, and the timings."""

    namespace: str
    name: str = DEFAULT_LEASE
    shards: int = 1
    timings: ElectionTimings = ElectionTimings()

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ElectionError(f"shards must be at least 1, not {self.shards}")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", self.name) or len(self.name) > 200:
            raise ElectionError(f"lease name {self.name!r} is not a valid Kubernetes name (lowercase, digits, '-')")

    def lease_names(self) -> tuple[str, ...]:
        return lease_names(self.name, self.shards)


def shard_of(namespace: str, shards: int) -> int:
    """The shard of every agent in ``namespace`` (stable across processes, versions and restarts)."""
    if shards <= 1:
        return 0
    digest = hashlib.sha256(namespace.encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def lease_names(base: str, shards: int) -> tuple[str, ...]:
    """One Lease named ``base`` for plain leader election; ``base-shard-<i>`` per shard otherwise."""
    if shards <= 1:
        return (base,)
    return tuple(f"{base}-shard-{index}" for index in range(shards))


def member_lease_name(base: str, instance: str) -> str:
    """The membership Lease of one replica: a readable prefix of its instance name, plus a hash so any instance
    name (upper case, dots, long) maps to a valid, distinct Lease name."""
    readable = re.sub(r"[^a-z0-9-]+", "-", instance.lower()).strip("-")[:40].strip("-") or "instance"
    return f"{base}-member-{readable}-{hashlib.sha256(instance.encode()).hexdigest()[:8]}"


def may_take(mine: int, loads: Mapping[str, int]) -> bool:
    """A free shard goes to the least loaded live replicas (``loads``: shards held per live replica, this one
    included): a replica with more than the least does not compete for it."""
    return mine <= min(loads.values(), default=mine)


def should_give_back(mine: int, loads: Mapping[str, int]) -> bool:
    """Two more than the least loaded replica: one shard handed back evens the load (a returning replica gets
    work); one more is fine (N shards over M replicas cannot always split evenly)."""
    return mine >= min(loads.values(), default=mine) + 2


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease says (client-go's LeaderElectionRecord), read from its spec."""

    holder: str
    lease_duration: float
    renew_time: str  # compared for change only: expiry is judged on the local clock, as client-go does
    shards: int = 1  # the shard count of its writer (SHARDS_ANNOTATION; none, as older versions wrote: 1)

    @classmethod
    def from_spec(cls, spec: dict[str, object] | None, annotations: dict[str, object] | None = None) -> LeaseRecord:
        spec = spec or {}
        duration = spec.get("leaseDurationSeconds")
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_duration=float(duration) if isinstance(duration, int | float) else 0.0,
            renew_time=str(spec.get("renewTime") or ""),
            shards=_shard_count((annotations or {}).get(SHARDS_ANNOTATION)),
        )

    def free(self, observed_at: float, now: float) -> bool:
        """Unheld (released), or not renewed for its duration since this process last saw it change."""
        return not self.holder or now >= self.expiry(observed_at)

    def expiry(self, observed_at: float) -> float:
        """When a held Lease becomes free unless it changes first (on this process's clock)."""
        return observed_at + self.lease_duration


def _shard_count(value: object) -> int:
    """The shard count an annotation states; anything unreadable counts as 1 (what every unannotated Lease, written
    before the guard, was: the one leader Lease)."""
    try:
        count = int(str(value))
    except ValueError:
        return 1
    return max(count, 1)


def waits_for(base: LeaseRecord | None, observed_at: float, now: float, shards: int) -> int | None:
    """The shard count of another generation of replicas still leading, which a replica configured with ``shards``
    must wait for (``None``: it may campaign). The base Lease ``<name>`` governs every shard count: with one shard
    it is the leader Lease, with N its holder is a replica of N holding shards. While it is held (not released,
    renewed within its duration as observed on this clock) by a replica of another shard count, that generation may
    be reconciling: its shards map namespaces differently and its Leases have other names, so taking any shard now
    could put two replicas on one agent (a rolling update that changes N)."""
    if base is None or base.free(observed_at, now) or base.shards == shards:
        return None
    return base.shards


def next_look(*, looked: float, retry_at: float, give_up_at: float | None, expiries: Iterable[float]) -> float:
    """When the elector reads its Leases again: at the retry period (``retry_at``), before the renew deadline of a
    held shard (``give_up_at``), or the moment an observed foreign Lease expires, so a follower tries exactly then
    rather than at its next tick. Only expiries after the last look (``looked``) count: one already past was free
    at that look, and waking for it again would spin."""
    moments = [retry_at, *(expiry for expiry in expiries if expiry > looked)]
    if give_up_at is not None:
        moments.append(give_up_at)
    return min(moments)


def lease_spec(
    holder: str, duration: float, now: dt.datetime, *, acquired: dt.datetime, transitions: int
) -> dict[str, object]:
    """The spec a holder writes when it acquires or renews (``holder=""`` releases, as client-go's
    ReleaseOnCancel does: followers take a released Lease at once instead of waiting for it to expire)."""
    return {
        "holderIdentity": holder,
        "leaseDurationSeconds": max(1, math.ceil(duration)),
        "acquireTime": micro_time(acquired),
        "renewTime": micro_time(now),
        "leaseTransitions": transitions,
    }


def micro_time(moment: dt.datetime) -> str:
    """Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
