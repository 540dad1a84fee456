"""Execute a run's creates exactly once, and roll a run back.

Each create is journaled `sending` before its request leaves. When the outcome is unknown (a lost
response, a 5xx, a crash) the pair is read back before anything is sent again: a relationship
joining the two contacts that no other ledger entry accounts for, with the planned note, is the
one this create made. Only if there is none is the create sent again.
"""

from __future__ import annotations

import asyncio
import html
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, TypeVar

import polars as pl
from tqdm import tqdm

from etl.existing import ATTACHED, EXTRA_WORKERS, existing_pairs
from etl.lacrm import ApiError, LacrmClient, TransientError, run_pool
from etl.ledger import (
    CreateChange,
    CreatedRelationship,
    CreateIntent,
    Ledger,
    LedgerError,
    PairTaken,
    RunInfo,
)

MAX_SENDS_PER_CREATE = 8
SETTLE_GRACE_SECONDS = 5.0
Result = TypeVar("Result")


class WriteError(LedgerError):
    """The run cannot be written or rolled back as asked; the message says why."""


@dataclass
class WriteStats:
    """What one `execute` call did. `sends` counts CreateRelationship requests it made."""

    created: int = 0
    failed: int = 0
    already_final: int = 0
    sends: int = 0
    settled_created: int = 0
    settled_absent: int = 0
    settle_reads: int = 0
    taken: int = 0  # left to another run of the ledger that holds the same pair
    found_on_resume: int = 0  # pending pairs the CRM came to hold after the plan was made
    recheck_reads: int = 0
    seconds: float = 0.0

    @property
    def creates_per_second(self) -> float:
        return self.created / self.seconds if self.seconds > 0 else 0.0


@dataclass
class RollbackStats:
    deleted: int = 0
    already_gone: int = 0
    failed: int = 0
    settled_created: int = 0
    settled_absent: int = 0
    seconds: float = 0.0


PREVIEW_SCHEMA = {
    "row_id": pl.UInt32,
    "contact_id_1": pl.String,
    "contact_id_2": pl.String,
    "note": pl.String,
    "relationship_id": pl.String,
    "state": pl.String,
}


async def execute(
    client: LacrmClient,
    ledger: Ledger,
    run_id: str,
    *,
    progress: bool = False,
    recheck: bool = False,
) -> WriteStats:
    """Create every unfinished create of the run exactly once; the run ends `finished`.

    With `recheck` (a resume: the plan may be days old), pending pairs are first looked up in
    the CRM again when the plan looked them up, and those it now holds are skipped as existing.

    Raises AuthError, Unreachable, RateLimited or TransientError (the CRM kept failing): the run
    is left `aborted`, and calling `execute` again resumes it. Raises RunBusy, touching nothing,
    while another process writes or rolls back the same run.
    """
    with ledger.holding(run_id):
        return await _execute(client, ledger, run_id, progress=progress, recheck=recheck)


def check_writable(ledger: Ledger, run_id: str) -> RunInfo:
    """The run, unless a rollback ended it: what it deleted is not created again."""
    info = ledger.run(run_id)
    if info.state == "rolled_back":
        raise WriteError(
            f"run {run_id} was rolled back, which is final; import the file again for a new run"
        )
    return info


async def _execute(
    client: LacrmClient, ledger: Ledger, run_id: str, *, progress: bool, recheck: bool
) -> WriteStats:
    info = check_writable(ledger, run_id)
    intents = ledger.unfinished_creates(run_id)
    counts = info.counts
    total = counts["pending"] + counts["sending"] + counts["created"] + counts["failed"]
    stats = WriteStats()
    ledger.set_state(run_id, "writing")
    if recheck and _checked(info):
        try:
            intents = await _skip_pairs_made_since_the_plan(
                client, ledger, run_id, intents, stats, progress=progress
            )
        except BaseException:
            ledger.set_state(run_id, "aborted")
            raise
    stats.already_final = total - len(intents)
    started = time.perf_counter()
    with _bar(progress, total, stats.already_final, "creating") as bar:
        journal = _Journal(ledger, run_id)
        writer = _Writer(client, journal, stats, intents, plan_checked_crm=_checked(info))

        async def complete(intent: CreateIntent) -> None:
            await writer.complete(intent)
            bar.update(1)

        try:
            await run_pool(intents, complete, _workers(client))
        except BaseException:
            journal.close()
            ledger.set_state(run_id, "aborted")
            raise
        finally:
            journal.close()
            stats.seconds = time.perf_counter() - started
    ledger.set_state(run_id, "finished")
    return stats


async def _skip_pairs_made_since_the_plan(
    client: LacrmClient,
    ledger: Ledger,
    run_id: str,
    intents: list[CreateIntent],
    stats: WriteStats,
    *,
    progress: bool,
) -> list[CreateIntent]:
    """Mark `taken` the pending creates whose pair the CRM holds now; the others, to do.

    Pairs made by hand, or by a run of another ledger, since the plan would otherwise be
    created a second time. `sending` creates are left to be read back one by one.
    """
    pending = [intent for intent in intents if intent.state == "pending"]
    if not pending:
        return intents
    pairs = pl.DataFrame(
        [(intent.contact_id_1, intent.contact_id_2) for intent in pending],
        schema={"pair_lo": pl.String, "pair_hi": pl.String},
        orient="row",
    )
    existing = await existing_pairs(client, pairs, progress=progress)
    stats.recheck_reads = existing.reads
    held = {(lo, hi): found for lo, hi, found in existing.frame.iter_rows()}
    changes: list[CreateChange] = []
    for intent in pending:
        one, two = intent.contact_id_1, intent.contact_id_2
        relationship_id = held.get((min(one, two), max(one, two)))
        if relationship_id is None:
            continue
        holder = ledger.created_elsewhere(run_id, intent.row_id)
        if holder is not None and holder[1] == relationship_id:
            text = _made_by_run_text(holder[0], relationship_id)
        else:
            text = (
                f"the CRM came to hold this pair after the plan was made (RelationshipId "
                f"{relationship_id}); it was not created twice"
            )
        changes.append(("taken", intent.row_id, text, relationship_id))
    if not changes:
        return intents
    ledger.apply(run_id, changes)
    stats.found_on_resume = len(changes)
    done = {change[1] for change in changes}
    return [intent for intent in intents if intent.row_id not in done]


def rollback_preview(ledger: Ledger, run_id: str) -> pl.DataFrame:
    """What `rollback` would delete: state `created` (a known id) or `unsettled` (sent, outcome
    unknown: rollback reads it back first and deletes it only if it exists)."""
    rows = [
        (c.row_id, c.contact_id_1, c.contact_id_2, c.note, c.relationship_id, "created")
        for c in ledger.created_relationships(run_id)
        if not c.deleted
    ]
    rows += [
        (i.row_id, i.contact_id_1, i.contact_id_2, i.note, None, "unsettled")
        for i in ledger.sending_creates(run_id)
    ]
    frame = pl.DataFrame(rows, schema=PREVIEW_SCHEMA, orient="row")
    return frame.sort("row_id")


async def rollback(
    client: LacrmClient, ledger: Ledger, run_id: str, *, progress: bool = False
) -> RollbackStats:
    """Delete exactly the relationships this run created, recording each deletion.

    Creates left `sending` are read back first (never sent again). Run it again after any
    failure: it continues where it stopped. The run ends `rolled_back` once nothing is left.
    """
    with ledger.holding(run_id):
        return await _rollback(client, ledger, run_id, progress=progress)


async def _rollback(
    client: LacrmClient, ledger: Ledger, run_id: str, *, progress: bool
) -> RollbackStats:
    info = ledger.run(run_id)
    started = time.perf_counter()
    stats = RollbackStats()
    write_stats = WriteStats()
    unsettled = ledger.sending_creates(run_id)
    journal = _Journal(ledger, run_id)
    try:
        writer = _Writer(client, journal, write_stats, unsettled, plan_checked_crm=_checked(info))
        await run_pool(unsettled, writer.settle_without_sending, _workers(client))
        targets = [c for c in ledger.created_relationships(run_id) if not c.deleted]
        with _bar(progress, len(targets), 0, "deleting") as bar:
            deleter = _Deleter(client, journal, stats)

            async def delete(target: CreatedRelationship) -> None:
                await deleter.delete(target.row_id, target.relationship_id)
                bar.update(1)

            await run_pool(targets, delete, _workers(client))
    finally:
        journal.close()
    stats.settled_created = write_stats.settled_created
    stats.settled_absent = write_stats.settled_absent
    if stats.failed == 0:
        ledger.set_state(run_id, "rolled_back")
    stats.seconds = time.perf_counter() - started
    return stats


class _Journal:
    """The ledger during a write: on one worker thread, so an fsync never stalls the event loop,
    and transitions that arrive while a commit is in progress share the next one."""

    def __init__(self, ledger: Ledger, run_id: str) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lacrm-ledger")
        self._waiting: list[tuple[CreateChange, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def change(self, *change: Any) -> None:
        """Record one create transition; returns once it is committed."""
        committed = asyncio.get_running_loop().create_future()
        self._waiting.append((change, committed))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await committed

    async def call(self, method: Callable[..., Result], *args: Any) -> Result:
        """Any other ledger call, on the same thread as the commits."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, method, *args)

    def close(self) -> None:
        """Stop flushing and wait for the commit in progress: the caller may use the ledger."""
        if self._flusher is not None:
            self._flusher.cancel()
        self._thread.shutdown(wait=True)

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            changes = [change for change, _ in batch]
            try:
                taken = await self.call(self.ledger.apply, self.run_id, changes)
            except Exception as error:
                for _, committed in batch:
                    if not committed.done():
                        committed.set_exception(error)
                continue
            for change, committed in batch:
                if committed.done():
                    continue
                if change[0] == "sending" and change[1] in taken:
                    committed.set_exception(PairTaken(f"row {change[1]}: pair taken"))
                else:
                    committed.set_result(None)


class _Writer:
    """Creates and settles the creates of one run."""

    def __init__(
        self,
        client: LacrmClient,
        journal: _Journal,
        stats: WriteStats,
        intents: Iterable[CreateIntent],
        *,
        plan_checked_crm: bool,
    ) -> None:
        self.client = client
        self.journal = journal
        self.stats = stats
        self.plan_checked_crm = plan_checked_crm
        self._pair_locks: dict[tuple[str, str], asyncio.Lock] = {}
        # Reading the side that appears in fewer of this run's pairs is likely the cheaper read.
        self._degree = Counter(c for i in intents for c in (i.contact_id_1, i.contact_id_2))

    async def complete(self, intent: CreateIntent) -> None:
        async with self._lock_for(intent):
            if intent.state == "sending" and await self._settle(intent):
                return
            if intent.state == "pending" and await self._made_by_another_run(intent):
                return
            for _ in range(MAX_SENDS_PER_CREATE):
                if await self._send(intent):
                    return
                if await self._settle(intent):
                    return
        raise TransientError(
            f"row {intent.row_id}: {MAX_SENDS_PER_CREATE} creates got no answer and made"
            " nothing; the CRM is unreliable right now, resume the run later"
        )

    async def settle_without_sending(self, intent: CreateIntent) -> None:
        async with self._lock_for(intent):
            if not await self._settle(intent):
                await self.journal.change("pending", intent.row_id)

    async def _send(self, intent: CreateIntent) -> bool:
        """One CreateRelationship; True when the create reached a final state."""
        try:
            await self.journal.change("sending", intent.row_id)
        except PairTaken:  # another run of the ledger made it, or is making it: not twice
            self.stats.taken += 1
            return True
        params: dict[str, Any] = {
            "ContactId1": intent.contact_id_1,
            "ContactId2": intent.contact_id_2,
        }
        if intent.note is not None:
            params["Note"] = intent.note
        self.stats.sends += 1
        try:
            result = await self.client.call("CreateRelationship", params, idempotent=False)
        except ApiError as error:
            await self.journal.change("failed", intent.row_id, error.code, error.description)
            self.stats.failed += 1
            return True
        except TransientError as error:
            if error.may_still_apply:
                # A timed-out create may still commit: give it time before reading back.
                await asyncio.sleep(SETTLE_GRACE_SECONDS)
            return False
        relationship_id = result.get("RelationshipId") if isinstance(result, dict) else None
        if not relationship_id:
            return False  # it answered, but not what was made: read it back
        await self.journal.change("created", intent.row_id, str(relationship_id))
        self.stats.created += 1
        return True

    async def _settle(self, intent: CreateIntent) -> bool:
        """Read the pair back; True (and recorded `created`) if this create made it.

        Ours: a relationship joining the pair that no ledger entry accounts for (created by a
        run, or seen by the existing check), with the planned note. When the plan checked the
        CRM held no such pair, any unaccounted one is ours even if the CRM reworded the note.
        """
        found = await self._relationships_joining(intent)
        ids = [rel["RelationshipId"] for rel in found]
        claimed = await self.journal.call(self.journal.ledger.claimed, ids) if ids else set()
        unclaimed = [rel for rel in found if rel["RelationshipId"] not in claimed]
        same_note = [rel for rel in unclaimed if _same_note(rel.get("Note"), intent.note)]
        ours = same_note or (unclaimed if self.plan_checked_crm else [])
        if not ours:
            self.stats.settled_absent += 1
            return False
        newest = max(
            ours, key=lambda rel: (str(rel.get("DateCreated") or ""), rel["RelationshipId"])
        )
        await self.journal.change("created", intent.row_id, newest["RelationshipId"])
        self.stats.settled_created += 1
        self.stats.created += 1
        return True

    async def _made_by_another_run(self, intent: CreateIntent) -> bool:
        """True (and recorded `taken`) if another run of the ledger made this pair and the CRM
        holds it: an old plan resumed after the file was imported again sends nothing twice.
        Read back first, as the ledger does not know which CRM account that run wrote to."""
        ledger = self.journal.ledger
        holder = await self.journal.call(
            ledger.created_elsewhere, self.journal.run_id, intent.row_id
        )
        if holder is None:
            return False
        other_run, relationship_id = holder
        found = [rel["RelationshipId"] for rel in await self._relationships_joining(intent)]
        if not found:
            return False
        held = relationship_id if relationship_id in found else found[0]
        text = _made_by_run_text(other_run, held)
        await self.journal.change("taken", intent.row_id, text, held)
        self.stats.taken += 1
        return True

    async def _relationships_joining(self, intent: CreateIntent) -> list[dict[str, Any]]:
        pair = {intent.contact_id_1, intent.contact_id_2}
        side = min((intent.contact_id_1, intent.contact_id_2), key=lambda c: (self._degree[c], c))
        found: list[dict[str, Any]] = []
        try:
            async with aclosing(self.client.paged(ATTACHED, {"ContactId": side})) as pages:
                async for page in pages:
                    self.stats.settle_reads += 1
                    found += [rel for rel in page if _joins(rel, pair)]
        except ApiError:
            return []  # the contact is gone, so no relationship of it exists: sending will say so
        return found

    def _lock_for(self, intent: CreateIntent) -> asyncio.Lock:
        pair = (
            min(intent.contact_id_1, intent.contact_id_2),
            max(intent.contact_id_1, intent.contact_id_2),
        )
        return self._pair_locks.setdefault(pair, asyncio.Lock())


class _Deleter:
    def __init__(self, client: LacrmClient, journal: _Journal, stats: RollbackStats) -> None:
        self.client = client
        self.journal = journal
        self.stats = stats

    async def delete(self, row_id: int, relationship_id: str) -> None:
        # Deleting twice changes nothing, so DeleteRelationship may be retried like a read.
        ledger, run_id = self.journal.ledger, self.journal.run_id
        try:
            await self.client.call("DeleteRelationship", {"RelationshipId": relationship_id})
        except ApiError as error:
            if await self._still_exists(relationship_id):
                detail = f"{error.code}: {error.description}"
                await self.journal.call(ledger.note_deletion_failure, run_id, row_id, detail)
                self.stats.failed += 1
                return
            await self.journal.call(ledger.mark_deleted, run_id, row_id, "already gone")
            self.stats.already_gone += 1
            return
        await self.journal.call(ledger.mark_deleted, run_id, row_id)
        self.stats.deleted += 1

    async def _still_exists(self, relationship_id: str) -> bool:
        try:
            await self.client.call("GetRelationship", {"RelationshipId": relationship_id})
        except ApiError:
            return False
        return True


def _made_by_run_text(run_id: str, relationship_id: str) -> str:
    return f"run {run_id} created this pair as RelationshipId {relationship_id}"


def _workers(client: LacrmClient) -> int:
    return client.concurrency + EXTRA_WORKERS


def _joins(relationship: dict[str, Any], pair: set[str]) -> bool:
    ends = {str(relationship.get("ContactId1")), str(relationship.get("ContactId2"))}
    return ends == pair and bool(relationship.get("RelationshipId"))


def _checked(run: RunInfo) -> bool:
    """Whether the plan read the CRM for existing pairs (`--existing check`, the default) rather
    than trusting earlier runs' ledger (`--existing ledger`)."""
    return run.settings.get("existing", "check") == "check"


def _same_note(crm_note: Any, planned: str | None) -> bool:
    return _comparable(str(crm_note or "")) == _comparable(planned or "")


def _comparable(note: str) -> str:
    return " ".join(html.unescape(note).split())


def _bar(progress: bool, total: int, initial: int, what: str) -> tqdm[Any]:
    return tqdm(
        total=total,
        initial=initial,
        desc=what,
        unit=" rel",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
        smoothing=0.1,
    )
