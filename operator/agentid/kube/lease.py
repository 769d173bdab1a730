"""Leader election on ``coordination.k8s.io`` Leases, with client-go's semantics, for one or several shards.

Run by the operator (``agentid.handlers.runtime``) when ``--leader-election`` is on. Each round reads the
election's Leases (one request), renews the ones it holds and tries to take free ones: a Lease is free when its
holder is empty (released) or when it has not changed for its duration as observed on this process's clock (no
clock-skew assumptions). Writes carry the resourceVersion read, so of two candidates only one wins (409 for the
other). A holder that could not renew for ``renew_deadline`` stops leading (``on_lost``) before anyone may take the
Lease (``lease_duration`` > ``renew_deadline``). ``release()`` (graceful shutdown) empties the holder, like
client-go's ReleaseOnCancel.

The elector also watches its Leases, so it observes each change when it happens (the observed time is then about
the holder's renewal, not up to a retry period later) and looks again at once when a Lease is released or deleted.
Rounds run every ``retry_period``, before the renew deadline of a held shard, at the moment an observed foreign
Lease expires, and on such a wake-up: a crashed holder is replaced about a Lease duration after its last renewal,
a released Lease within one watch event. The watch only speeds things up: while it is down (it restarts with
backoff), polling every retry period elects as before.

With several shards every replica also renews a membership Lease, so each knows the live replicas and how many
shards each holds: free shards go to the least loaded, and a replica two above the least loaded gives one back per
round, so a returning replica gets work again. A shard left free longer than a Lease duration is taken by anyone
(liveness over balance).

Replicas of different shard counts (a rolling update that changes N) never lead at once: the base Lease ``<name>``
governs the election for every N (``shards.waits_for``). With one shard it is the leader Lease; with N the replicas
holding shards renew it in every round and a replica reconciles the shards it took only once that write succeeded
(its "ticket", valid for the renew deadline from the write, like a shard's). Every Lease is annotated with the
writer's N; while the base Lease is held by a replica of another N, a replica takes, renews and writes nothing
(it still serves admission) until that Lease is released or expires. The last replica of a generation to go empties
it, so the next generation starts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agentid.domain import clock, shards
from agentid.domain.shards import ElectionSettings, LeaseRecord
from agentid.kube import errors
from agentid.kube.client import JsonObject, KubeClient
from agentid.kube.resources import LEASES
from agentid.kube.watch import Changed, Listed, Selector, informer, unchanged

logger = logging.getLogger(__name__)
ShardCallback = Callable[[int], None]


async def _nothing(_: int) -> None:
    return None


@dataclass
class _Held:
    acquired: dt.datetime
    transitions: int
    renewed: float  # loop time just before the last successful write


class ShardElector:
    def __init__(
        self,
        client: KubeClient,
        settings: ElectionSettings,
        *,
        instance: str,
        on_acquired: ShardCallback,
        on_lost: ShardCallback,
        before_release: Callable[[int], Awaitable[None]] = _nothing,
        on_wait: Callable[[int], None] = lambda _: None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.client = client
        self.settings = settings
        self.instance = instance
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        self.before_release = before_release  # e.g. let passes of the shard finish before another replica starts
        self.on_wait = on_wait  # the shard count of another generation this replica waits for (0: none)
        self.clock = clock
        self.base = settings.name  # governs the election for every shard count (shards.waits_for)
        self.names = settings.lease_names()
        self.member = shards.member_lease_name(settings.name, instance) if settings.shards > 1 else None
        self.held: dict[int, _Held] = {}
        self._observed: dict[str, tuple[LeaseRecord, float]] = {}  # what each Lease said, and when that changed
        self._free_since: dict[int, float] = {}
        self._handovers: dict[int, asyncio.Task[None]] = {}  # shards given back, waiting for their passes to end
        self._shard_of = {name: shard for shard, name in enumerate(self.names)}
        self._ticket = float("-inf")  # with shards: loop time until which the base Lease is ours to lead under
        self._starting: list[int] = []  # with shards: taken, not reconciled until the base Lease is renewed
        self._waiting: int | None = None  # the shard count of the generation still leading, while there is one
        self._looked = float("-inf")  # loop time of the last round's read: expiries before it were seen then
        self._wanted = False  # the watch saw a Lease to act on (released, deleted, a held one taken): look now
        self._changed = asyncio.Event()  # the watch observed something: the next look may move
        self.synced = asyncio.Event()  # the watch has listed the Leases (set by every list, cleared on a restart)
        offset = int(hashlib.sha256(instance.encode()).hexdigest(), 16) % settings.shards
        self._order = [(offset + i) % settings.shards for i in range(settings.shards)]  # replicas start apart

    # -- the loop -------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Campaign and renew until cancelled (then call ``release``). A round never outlasts the renew deadline of
        a held shard: leadership ends on time even while the API server does not answer."""
        timings = self.settings.timings
        budget = max(timings.renew_deadline - timings.retry_period, timings.retry_period)
        watch = asyncio.create_task(self._watch(), name=f"lease-watch-{self.settings.name}")
        try:
            while True:
                try:
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation that arrives as
                    # the round completes, and a stopped elector would then campaign on (and shutdown hang).
                    async with asyncio.timeout(max(min(budget, self._until_deadline()), 0.001)):
                        await self.round()
                except (errors.ApiError, TimeoutError) as error:
                    logger.warning("lease round of %s failed: %s", self.instance, error or type(error).__name__)
                except Exception:  # a bug must not end the loop: leadership would then outlive its Lease
                    logger.exception("lease round of %s failed", self.instance)
                self._give_up_unrenewed()
                await self._pause()
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)

    async def _pause(self) -> None:
        """Sleep until the next look (``shards.next_look``) or a wake-up from the watch; what the watch observes
        meanwhile moves the expiries, so the moment is recomputed after each observation."""
        jitter = random.uniform(1.0, shards.JITTER)  # noqa: S311 - jitter, not crypto
        retry_at = self._now() + self.settings.timings.retry_period * jitter
        while not self._wanted:
            now = self._now()
            give_up_at = now + self._until_deadline() if self.held else None
            at = shards.next_look(
                looked=self._looked, retry_at=retry_at, give_up_at=give_up_at, expiries=self._foreign_expiries()
            )
            if at <= now:
                return
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(at - now):  # not wait_for: see run
                    await self._changed.wait()

    def _foreign_expiries(self) -> list[float]:
        """When each shard Lease observed held by another replica expires unless renewed."""
        expiries = []
        for name in self.names:
            seen = self._observed.get(name)
            if seen is not None and seen[0].holder and seen[0].holder != self.instance:
                expiries.append(seen[0].expiry(seen[1]))
        base = self._observed.get(self.base)
        if base is not None and base[0].holder and base[0].shards != self.settings.shards:
            expiries.append(base[0].expiry(base[1]))  # the generation waited for: campaign the moment it expires
        return expiries

    def _until_deadline(self) -> float:
        """Seconds until the first held shard must be given up unless renewed (infinite when nothing is held)."""
        if not self.held:
            return float("inf")
        deadline = min(held.renewed for held in self.held.values()) + self.settings.timings.renew_deadline
        if self.settings.shards > 1:
            deadline = min(deadline, self._ticket)
        return deadline - self._now()

    async def round(self) -> None:
        """One look at the Leases: renew what is held, take what is free (if among the least loaded), give one
        back when two above the least loaded."""
        self._wanted = False  # what the watch sees from here on asks for the next round
        self._looked = sent = self._now()  # also when the read fails: an expiry already due must not spin the loop
        leases = await self._read()
        now = self._now()
        self._looked = now
        for name, listed in leases.items():
            self._observe(name, _record(listed), now)
        if self._wait(now):
            return  # another generation leads: nothing is written, not even membership
        await self._campaign(leases, now)
        if self.settings.shards > 1:
            await self._govern(leases.get(self.base), sent)

    async def _campaign(self, leases: dict[str, JsonObject], now: float) -> None:
        """The shard Leases, as read at ``now``: renew, take, give back."""
        loads = self._loads(await self._membership(leases, now), leases, now)
        given_back = False
        for shard in self._order:
            if shard in self._handovers:
                continue  # being handed over: neither renewed nor taken back
            name = self.names[shard]
            lease = leases.get(name)
            record = _record(lease) if lease is not None else None
            if shard in self.held:
                if record is None or record.holder != self.instance:
                    self._lose(shard, f"now held by {record.holder or 'nobody'}" if record else "Lease deleted")
                elif (
                    shards.should_give_back(len(self.held), loads)
                    and not given_back
                    and not self._any_free(leases, now)
                ):
                    given_back = True
                    self._lose(shard, "given back (load balance)")
                    self._handovers[shard] = asyncio.create_task(self._hand_over(shard, lease))
                    loads[self.instance] = len(self.held)
                else:
                    await self._write(shard, lease)
                continue
            if record is not None and record.holder == self.instance:
                await self._write(shard, lease)  # ours from before (a round cut short, a quick restart)
            elif record is None or record.free(self._observed[name][1], now):
                free_since = self._free_since.setdefault(shard, now)
                if shards.may_take(len(self.held), loads) or now - free_since >= self.settings.timings.lease_duration:
                    await self._write(shard, lease)
                    loads[self.instance] = len(self.held)
            else:
                self._free_since.pop(shard, None)

    def _wait(self, now: float) -> bool:
        """Whether replicas of another shard count still lead (the base Lease, ``shards.waits_for``): then this one
        gives up what it holds and takes nothing. Logged once when it starts and once when it ends."""
        seen = self._observed.get(self.base)
        other = shards.waits_for(seen[0], seen[1], now, self.settings.shards) if seen is not None else None
        if other != self._waiting:
            if other is not None:
                logger.warning(
                    "%s (shards=%d) waits for the replicas of shards=%d to go: Lease %s/%s is held by %s; admission "
                    "is served meanwhile, reconciling starts once that Lease is released or expires",
                    self.instance,
                    self.settings.shards,
                    other,
                    self.settings.namespace,
                    self.base,
                    seen[0].holder if seen is not None else "",
                )
            else:
                logger.info("%s: the replicas of shards=%s are gone, campaigning", self.instance, self._waiting)
            self._waiting = other
            self.on_wait(other or 0)
        if other is None:
            return False
        for shard in sorted(self.held):
            self._lose(shard, f"replicas of shards={other} lead")
        return True

    async def _govern(self, base: JsonObject | None, sent: float) -> None:
        """With shards, after the shard Leases: renew the base Lease (the ticket), then start reconciling the shards
        taken this round. Without a ticket nothing is reconciled: a replica of another shard count may hold the base
        Lease once it is free or expired, so every shard stops before that can happen."""
        if self.held:
            await self._renew_base(base, sent)  # if this fails, the shards taken stay unstarted (_starting)
        if self._now() >= self._ticket:
            for shard in sorted(self.held):
                self._lose(shard, "the base Lease could not be renewed")  # unstarted ones without on_lost
            return
        starting, self._starting = self._starting, []
        for shard in starting:
            self.on_acquired(shard)

    async def _renew_base(self, base: JsonObject | None, sent: float) -> None:
        """Write the base Lease as read (optimistic concurrency). Written: the ticket runs for the renew deadline
        from before the write. A 409 means it changed after our read (``sent``): if it is still held by a replica
        of our shard count, nobody of another could have taken it since, so the ticket runs from ``sent``."""
        record = _record(base) if base is not None else None
        now = self._now()
        continued = record is not None and record.shards == self.settings.shards and not self._free(self.base, now)
        spec_of = (base or {}).get("spec") or {}
        moment = self.clock()
        transitions = int(spec_of.get("leaseTransitions") or 0)
        acquired = clock.parse(spec_of.get("acquireTime")) if continued else None
        spec = shards.lease_spec(
            self.instance,
            self.settings.timings.lease_duration,
            moment,
            acquired=acquired or moment,
            transitions=transitions if continued or base is None else transitions + 1,
        )
        written_at = self._now()
        deadline = self.settings.timings.renew_deadline
        try:
            written = await self._put(self.base, spec, base)
        except errors.Conflict:
            current = await self.client.get(LEASES, self.base, self.settings.namespace)
            if current is not None:
                record = _record(current)
                self._observe(self.base, record, self._now())
                if record.holder and record.shards == self.settings.shards:
                    self._ticket = max(self._ticket, sent + deadline)
            return
        self._ticket = written_at + deadline
        self._observe(self.base, _record(written), self._now())

    # -- the watch ------------------------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Observe every change of the election's Leases as it happens. With one shard by name (a field selector,
        so RBAC can still name that one Lease); with shards by the election's label. Never stops the elector:
        the informer re-lists with backoff, and anything else restarts it after a pause."""
        if self.settings.shards == 1:
            selector = Selector(self.settings.namespace, field_selector=f"metadata.name={self.names[0]}")
        else:
            selector = Selector(
                self.settings.namespace, label_selector=f"{shards.LEASE_SET_LABEL}={self.settings.name}"
            )
        pause = self.settings.timings.retry_period
        while True:
            try:
                events = informer(
                    self.client, LEASES, selector, project=unchanged, max_backoff=self.settings.timings.lease_duration
                )
                async with contextlib.aclosing(events):  # its connection goes back to the pool at once
                    async for event in events:
                        self._seen(event)
            except Exception:  # polling still elects; the watch comes back
                logger.exception("watch of the Leases of %s failed; retrying in %.0fs", self.instance, pause)
            self.synced.clear()
            await asyncio.sleep(pause)

    def _seen(self, event: Listed[JsonObject] | Changed[JsonObject]) -> None:
        now = self._now()
        if isinstance(event, Listed):
            listed = {str(lease["metadata"]["name"]): lease for lease in event.items}
            for name, lease in listed.items():
                self._note(name, _record(lease), now)
            for name in {*self.names, self.base}:
                if name not in listed:
                    self._note(name, None, now)
            self.synced.set()
        else:
            name = str(event.object["metadata"]["name"])
            deleted = event.type == "DELETED"
            self._note(name, None if deleted else _record(event.object), now)
        self._changed.set()

    def _note(self, name: str, record: LeaseRecord | None, now: float) -> None:
        """Observe one Lease as the watch saw it (``None``: gone), and ask for a round at once when there is
        something to do: a shard Lease free for the taking, or a held one that is no longer ours."""
        if record is not None:
            self._observe(name, record, now)
        if name == self.base and self.settings.shards > 1:
            released = record is None or not record.holder  # a waiting replica may start; a holder must renew it
            if released or (record is not None and record.shards != self.settings.shards and self.held):
                self._wanted = True  # ... or stop at once, when another generation holds it
            return
        shard = self._shard_of.get(name)
        if shard is None or shard in self._handovers:
            return
        holder = record.holder if record is not None else ""
        free = shard not in self.held and not holder
        taken_from_us = shard in self.held and holder != self.instance
        if free or taken_from_us:
            self._wanted = True

    async def _read(self) -> dict[str, JsonObject]:
        """The election's Leases by name: one GET for plain leader election (RBAC can name that one Lease), one
        labelled LIST with shards (shard and membership Leases)."""
        if self.settings.shards == 1:
            lease = await self.client.get(LEASES, self.names[0], self.settings.namespace)
            return {self.names[0]: lease} if lease is not None else {}
        selector = f"{shards.LEASE_SET_LABEL}={self.settings.name}"
        listed = await self.client.list(LEASES, self.settings.namespace, label_selector=selector)
        return {str(lease["metadata"]["name"]): lease for lease in listed}

    def _loads(self, members: set[str], leases: dict[str, JsonObject], now: float) -> dict[str, int]:
        """Shards held per live replica (this one included, with what it knows it holds)."""
        loads = dict.fromkeys(members, 0)
        for name in self.names:
            if name in leases and not self._free(name, now):
                holder = self._observed[name][0].holder
                if holder in loads and holder != self.instance:
                    loads[holder] += 1
        loads[self.instance] = len(self.held)
        return loads

    async def release(self) -> None:
        """Hand every held shard over at once (graceful shutdown): empty holder, so followers need not wait."""
        for shard in sorted(self.held):
            self._lose(shard, "released")
            await self.before_release(shard)
            try:
                await self._empty(shard, await self.client.get(LEASES, self.names[shard], self.settings.namespace))
            except errors.ApiError as error:  # it expires on its own
                logger.warning("could not release Lease %s: %s", self.names[shard], error)
        await asyncio.gather(*self._handovers.values(), return_exceptions=True)
        if self.settings.shards > 1:
            try:
                await self._release_base()
            except errors.ApiError as error:  # it expires on its own
                logger.warning("could not release Lease %s: %s", self.base, error)
        if self.member is not None:
            try:
                await self.client.delete(LEASES, self.member, self.settings.namespace)
            except errors.ApiError as error:
                logger.warning("could not delete membership Lease %s: %s", self.member, error)

    def holds(self, shard: int) -> bool:
        """Leads ``shard`` (its Lease held and, with shards, started under the base Lease)."""
        return shard in self.held and shard not in self._starting

    async def _release_base(self) -> None:
        """The last replica of its generation to go empties the base Lease, so replicas of another shard count start
        at once. While another replica still holds a shard Lease it is left alone: that replica keeps it renewed (or
        it expires). Written as read: a replica that took a shard since renewed it, and the release fails (409)."""
        leases = await self._read()
        now = self._now()
        for name, lease in leases.items():
            self._observe(name, _record(lease), now)
        base = leases.get(self.base)
        if base is None:
            return
        record = self._observed[self.base][0]
        if not record.holder or record.shards != self.settings.shards:
            return
        if any(name in leases and not self._free(name, now) for name in self.names):
            return
        moment = self.clock()
        transitions = int((base.get("spec") or {}).get("leaseTransitions") or 0)
        with contextlib.suppress(errors.Conflict):
            await self._put(self.base, shards.lease_spec("", 1, moment, acquired=moment, transitions=transitions), base)

    # -- steps ----------------------------------------------------------------------------------------------

    async def _write(self, shard: int, lease: JsonObject | None) -> None:
        """Acquire or renew ``shard``'s Lease; a 409 means another candidate won (or the Lease changed)."""
        name = self.names[shard]
        moment = self.clock()
        held = self.held.get(shard)
        record = _record(lease) if lease is not None else None
        previous = int((lease or {}).get("spec", {}).get("leaseTransitions") or 0)
        if held is None:
            ours = record is not None and record.holder == self.instance
            acquired = clock.parse((lease or {}).get("spec", {}).get("acquireTime")) if ours else None
            held = _Held(acquired or moment, previous if ours or record is None else previous + 1, 0.0)
        spec = shards.lease_spec(
            self.instance,
            self.settings.timings.lease_duration,
            moment,
            acquired=held.acquired,
            transitions=held.transitions,
        )
        sent = self._now()  # the deadline runs from before the write: the server's renewTime is never earlier
        try:
            written = await self._put(name, spec, lease)
        except errors.Conflict:
            if shard in self.held:
                self._lose(shard, "its Lease changed under us")
            return
        held.renewed = sent
        self._observe(name, _record(written), self._now())
        self._free_since.pop(shard, None)
        if shard not in self.held:
            self.held[shard] = held
            logger.info("%s acquired Lease %s/%s (shard %d)", self.instance, self.settings.namespace, name, shard)
            if self.settings.shards > 1:
                self._starting.append(shard)  # reconciled once the base Lease is renewed (_govern)
            else:
                self.on_acquired(shard)

    async def _hand_over(self, shard: int, lease: JsonObject | None) -> None:
        """A shard given back: its passes here end first, then its Lease is emptied for the least loaded replica.
        Outside the round, so a long pass delays no renewal of the other shards."""
        try:
            await self.before_release(shard)
            await self._empty(shard, lease)
        except errors.ApiError as error:  # it expires on its own
            logger.warning("could not hand over Lease %s: %s", self.names[shard], error)
        finally:
            self._handovers.pop(shard, None)

    async def _empty(self, shard: int, lease: JsonObject | None) -> None:
        """Empty the holder (client-go's release), only if the Lease is still ours as read."""
        if lease is None or _record(lease).holder != self.instance:
            return
        moment = self.clock()
        transitions = int(lease["spec"].get("leaseTransitions") or 0)
        await self._put(
            self.names[shard], shards.lease_spec("", 1, moment, acquired=moment, transitions=transitions), lease
        )

    async def _put(
        self, name: str, spec: dict[str, Any], lease: JsonObject | None, *, member: bool = False
    ) -> JsonObject:
        """Create the Lease, or replace it as read (optimistic concurrency)."""
        labels = {shards.LEASE_SET_LABEL: self.settings.name} | ({shards.MEMBER_LABEL: "true"} if member else {})
        annotations = {shards.SHARDS_ANNOTATION: str(self.settings.shards)}  # which generation wrote it
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "labels": labels, "annotations": annotations},
            }
            return await self.client.create(LEASES, {**body, "spec": spec}, self.settings.namespace)
        metadata = {
            "name": name,
            "namespace": self.settings.namespace,
            "resourceVersion": lease["metadata"]["resourceVersion"],  # optimistic concurrency: 409 if it moved
            "labels": {**(lease["metadata"].get("labels") or {}), **labels},
            "annotations": {**(lease["metadata"].get("annotations") or {}), **annotations},
        }
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}
        return await self.client.replace(LEASES, body)

    async def _membership(self, leases: dict[str, JsonObject], now: float) -> set[str]:
        """Renew this replica's membership Lease; the live replicas (by instance)."""
        if self.member is None:
            return {self.instance}
        members = {self.instance}
        for name, lease in leases.items():
            labels = lease["metadata"].get("labels") or {}
            if name != self.member and labels.get(shards.MEMBER_LABEL) == "true":
                record, observed = self._observed[name]
                if not record.free(observed, now):
                    members.add(record.holder)
        mine = leases.get(self.member)
        moment = self.clock()
        spec = shards.lease_spec(
            self.instance, self.settings.timings.lease_duration, moment, acquired=moment, transitions=0
        )
        if mine is not None:
            spec["acquireTime"] = (mine.get("spec") or {}).get("acquireTime") or spec["acquireTime"]
        with contextlib.suppress(errors.Conflict):  # renewed next round
            await self._put(self.member, spec, mine, member=True)
        return members

    def _any_free(self, leases: dict[str, JsonObject], now: float) -> bool:
        """A shard nobody holds: giving one back now would only add to what waits for a taker."""
        return any(name not in leases or self._free(name, now) for name in self.names)

    def _free(self, name: str, now: float) -> bool:
        record, observed = self._observed[name]
        return record.free(observed, now)

    def _give_up_unrenewed(self) -> None:
        now = self._now()
        for shard, held in list(self.held.items()):
            if now - held.renewed >= self.settings.timings.renew_deadline:
                self._lose(shard, f"not renewed for {self.settings.timings.renew_deadline:g}s")
        if self.settings.shards > 1 and now >= self._ticket:
            for shard in sorted(self.held):
                self._lose(shard, f"base Lease {self.base} not renewed for {self.settings.timings.renew_deadline:g}s")

    def _lose(self, shard: int, why: str) -> None:
        if self.held.pop(shard, None) is None:
            return
        logger.info(
            "%s lost Lease %s/%s (shard %d): %s", self.instance, self.settings.namespace, self.names[shard], shard, why
        )
        if shard in self._starting:
            self._starting.remove(shard)  # never started: nothing to stop
        else:
            self.on_lost(shard)

    def _observe(self, name: str, record: LeaseRecord, now: float) -> None:
        seen = self._observed.get(name)
        if seen is None or seen[0] != record:
            self._observed[name] = (record, now)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()


def _record(lease: JsonObject) -> LeaseRecord:
    """What a Lease as read says, with the shard count of its writer."""
    return LeaseRecord.from_spec(lease.get("spec"), (lease.get("metadata") or {}).get("annotations"))
