"""Operator-wide settings that shape decisions (trust domain, timings). Built once by the CLI, passed explicitly."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Timings:
    """How often and how long: resync for drift repair, key overlap, retry backoff."""

    resync_interval: dt.timedelta = dt.timedelta(seconds=60)
    resync_jitter: dt.timedelta = dt.timedelta(seconds=15)
    # A retiring key stays published for the agent's tokenTTL plus this allowance (Secret propagation to Pods
    # takes up to a kubelet sync period, plus clock skew), so nothing it signed stops verifying early.
    key_overlap_allowance: dt.timedelta = dt.timedelta(minutes=6)
    retry_initial: dt.timedelta = dt.timedelta(seconds=1)
    retry_max: dt.timedelta = dt.timedelta(minutes=5)
    policy_status_interval: dt.timedelta = dt.timedelta(seconds=10)


@dataclass(frozen=True)
class OperatorSettings:
    trust_domain: str = "cluster.local"
    timings: Timings = Timings()
