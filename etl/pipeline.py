"""The import pipeline, stage by stage: what `lacrm-etl import` and `resume` run."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from etl import directory, existing, resolve, write
from etl import mapping as mapping_module
from etl.extract import extract
from etl.lacrm import LacrmClient
from etl.ledger import Ledger, RunInfo
from etl.mapping import Side, load_mapping, render_notes, side_values
from etl.plan import TO_CREATE, build_plan
from etl.progress import stage
from etl.report import (
    ReportPaths,
    count_outcomes,
    report_frame,
    split_inputs,
    summary_text,
    with_inputs,
    write_reports,
)

EXISTING_SCHEMA = {"pair_lo": pl.String, "pair_hi": pl.String, "relationship_id": pl.String}


@dataclass(frozen=True)
class Api:
    """Where and how to reach the CRM. The key is kept out of every repr and setting."""

    key: str | None = field(repr=False)
    url: str
    rate: float = 2.0
    concurrency: int = 4

    def client(self) -> LacrmClient:
        if not self.key:
            raise MissingApiKey
        return LacrmClient(self.key, self.url, rate=self.rate, concurrency=self.concurrency)


class MissingApiKey(Exception):
    def __str__(self) -> str:
        return (
            "no API key: set LACRM_API_KEY or pass --api-key-file "
            "(or use --contacts SNAPSHOT with --dry-run to work offline)"
        )


@dataclass(frozen=True)
class ImportSettings:
    sources: tuple[Path, ...]
    mapping: Path
    dry_run: bool = False
    sheet: str | None = None
    header_row: int = 1
    contacts: Path | None = None
    existing: str = "check"

    def as_dict(self, api: Api) -> dict[str, Any]:
        settings = asdict(self)
        settings["sources"] = [str(p) for p in self.sources]
        settings["mapping"] = str(self.mapping)
        settings["contacts"] = str(self.contacts) if self.contacts else None
        return {**settings, "api_url": api.url, "rate": api.rate, "concurrency": api.concurrency}


@dataclass
class Prepared:
    run_id: str
    plan: pl.DataFrame
    input_columns: list[str]
    info: dict[str, Any]
    calls: Counter[str]


def fingerprint(settings: ImportSettings) -> dict[str, Any]:
    """What resume checks before it writes: the files must not have changed since the plan.

    Keyed by absolute path, so `resume` works from any working folder.
    """
    files = [*settings.sources, settings.mapping]
    return {str(path.resolve()): _sha256(path) for path in files}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


async def prepare(
    settings: ImportSettings, api: Api, ledger: Ledger, *, progress: bool
) -> Prepared:
    """Extract, resolve, check what exists and plan; record the plan in the ledger."""
    started = _now()
    clock = Stopwatch()
    sources = len(settings.sources)
    with stage("Reading", progress=progress, total=sources, unit=" files") as reading:
        mapping = load_mapping(settings.mapping)
        extracted = extract(
            list(settings.sources), sheet=settings.sheet, header_row=settings.header_row
        )
        mapping = mapping.renamed(extracted.renamed)
        mapping.check_columns(extracted.columns)
        reading.done(sources)
        reading.describe(f"{extracted.rows.height:,} rows")
    clock.lap("extract")
    calls: Counter[str] = Counter()
    info: dict[str, Any] = {"started_at": started, "blank_rows": extracted.blank_rows}
    info["notes"] = list(extracted.notes)

    with stage("Contact directory", progress=False, unit=" contacts") as reading:
        contacts = await _directory(settings, api, calls, info, progress)
        reading.done(contacts.height)
    clock.lap("directory")
    rows = extracted.rows
    with stage("Resolving", progress=progress, total=2 * rows.height, unit=" values") as resolving:
        index = resolve.build_index(contacts)
        clock.lap("index")
        both = (mapping.contact1, mapping.contact2)
        sides = _resolve(both, rows, index, mapping.fuzzy, extracted.numeric_cells)
        resolving.done(2 * rows.height)
        clock.lap("resolve")
        notes = render_notes(rows, mapping.note) if mapping.note else None
        draft = build_plan(rows, *sides, notes, _no_existing(), dry_run=settings.dry_run)
        resolving.describe(_status_counts(draft))
    clock.lap("plan")

    with stage("Existing pairs", progress=False, unit=" pairs") as checking:
        known = await _existing(settings, api, ledger, draft, calls, info, progress)
        # Nothing found changes nothing: the draft is the plan (planning 1M rows twice is 2 s).
        plan = (
            draft
            if known.is_empty()
            else build_plan(rows, *sides, notes, known, dry_run=settings.dry_run)
        )
        checking.done(known.height)
        checking.describe(_status_counts(plan))
    clock.lap("existing")
    info["timings"] = clock.laps
    info["api_calls"] = dict(sorted(calls.items()))
    stored = with_inputs(plan, rows, extracted.columns)
    run_id = ledger.create_run(
        settings={**settings.as_dict(api), "input_columns": extracted.columns, "info": info},
        fingerprint=fingerprint(settings),
        plan=stored,
        dry_run=settings.dry_run,
    )
    return Prepared(run_id, stored, list(extracted.columns), info, calls)


PRECISION_LOST = (
    "the spreadsheet stores this ContactId as a number, which keeps only 15 digits: format "
    "the column as Text in Excel, paste the 31-digit ids again (or export them from LACRM) "
    "and re-import"
)


def _resolve(
    sides: tuple[Side, Side],
    rows: pl.DataFrame,
    index: resolve.ContactIndex,
    fuzzy: float | None,
    numeric_cells: pl.DataFrame,
) -> list[pl.DataFrame]:
    values = [side_values(rows, side) for side in sides]
    resolved = resolve.resolve_sides(values, index, fuzzy)
    return [
        _fail_numeric_ids(result, _numeric_id_rows(side_rows, side, numeric_cells))
        for result, side_rows, side in zip(resolved, values, sides, strict=True)
    ]


def _numeric_id_rows(values: pl.DataFrame, side: Side, numeric_cells: pl.DataFrame) -> pl.Series:
    """Rows whose id for this side comes from a cell Excel stored as a number."""
    if numeric_cells.is_empty():  # every text file, and workbooks without number cells
        return pl.Series("row_id", [], dtype=pl.UInt32)
    id_columns = pl.DataFrame(
        [
            (attempt, key.columns[0])
            for attempt, key in enumerate(side.keys, start=1)
            if key.mode in ("id", "auto") and len(key.columns) == 1
        ],
        schema={"attempt": pl.UInt8, "column": pl.String},
        orient="row",
    )
    # A number format may dress an id up ("$1,234,...", "ID 1234..."): its many digits tell.
    id_like = (
        (pl.col("mode") == "id")
        | pl.col("value").str.contains(r"^\d[\d.,]*(E\+?\d+)?$")
        | (pl.col("value").str.count_matches(r"\d") >= 15)
    )
    return (
        values.join(id_columns, on="attempt")
        .join(numeric_cells, on=["row_id", "column"], how="semi")
        .filter(id_like)["row_id"]
        .unique()
    )


def _fail_numeric_ids(resolved: pl.DataFrame, row_ids: pl.Series) -> pl.DataFrame:
    """A number-typed id has lost digits: fail the row, never resolve it to some other contact."""
    if row_ids.is_empty():
        return resolved
    lost = pl.col("row_id").is_in(row_ids.implode())
    return resolved.with_columns(
        contact_id=pl.when(lost).then(None).otherwise("contact_id"),
        match=pl.when(lost).then(None).otherwise("match"),
        matched_name=pl.when(lost).then(None).otherwise("matched_name"),
        reason=pl.when(lost).then(pl.lit("id_precision_lost")).otherwise("reason"),
        detail=pl.when(lost).then(pl.lit(PRECISION_LOST)).otherwise("detail"),
    )


async def _directory(
    settings: ImportSettings, api: Api, calls: Counter[str], info: dict[str, Any], progress: bool
) -> pl.DataFrame:
    if settings.contacts is not None:
        contacts, pulled_at = directory.load_snapshot(settings.contacts)
        age = directory.snapshot_age(pulled_at)
        info["contacts_snapshot"] = {
            "path": str(settings.contacts),
            "pulled_at": pulled_at.isoformat(timespec="seconds"),
            "age_hours": round(age.age.total_seconds() / 3600, 1),
        }
        info["notes"].append(f"contacts read from the snapshot {settings.contacts}, {age.text}")
        if age.warning:
            info["notes"].append(age.warning)
            info["warnings"] = [age.warning]
        return contacts
    async with api.client() as client:
        contacts = await directory.fetch(client, progress=progress)
        calls.update(client.calls)
    return contacts


async def _existing(
    settings: ImportSettings,
    api: Api,
    ledger: Ledger,
    draft: pl.DataFrame,
    calls: Counter[str],
    info: dict[str, Any],
    progress: bool,
) -> pl.DataFrame:
    if settings.existing != "ledger" and not api.key and settings.dry_run:
        info["existing_check"] = {"mode": "skipped", "why": "offline dry run: no API key"}
        info["notes"].append(
            "pairs the CRM already holds were not looked up (offline dry run, no API key): "
            "they count as would_create here and will be skipped by the import"
        )
        return _no_existing()
    candidates = _pairs_to_create(draft)
    if candidates.is_empty():
        return _no_existing()
    if settings.existing == "ledger":
        info["existing_check"] = {"mode": "ledger"}
        created = ledger.created_pairs()
        if created.is_empty():
            warning = (
                f"--existing ledger, but the ledger {ledger.path} holds no relationship an "
                "earlier run created: nothing is skipped as existing (--existing check reads "
                "the CRM instead)"
            )
            info["notes"].append(warning)
            info.setdefault("warnings", []).append(warning)
        return created.join(candidates, on=["pair_lo", "pair_hi"], how="semi")
    async with api.client() as client:
        found = await existing.existing_pairs(client, candidates, progress=progress)
        calls.update(client.calls)
    info["existing_check"] = {
        "mode": "check",
        "pairs": candidates.height,
        "reads": found.reads,
        "contacts_read": found.contacts_read,
        "naive_reads": found.naive_reads,
    }
    return found.frame


def _pairs_to_create(draft: pl.DataFrame) -> pl.DataFrame:
    creating = pl.col("status").is_in([TO_CREATE, "would_create"])
    one, two = pl.col("contact_id_1"), pl.col("contact_id_2")
    return draft.filter(creating).select(
        pair_lo=pl.min_horizontal(one, two), pair_hi=pl.max_horizontal(one, two)
    )


def _no_existing() -> pl.DataFrame:
    return pl.DataFrame(schema=EXISTING_SCHEMA)


def _status_counts(plan: pl.DataFrame) -> str:
    counts = plan.group_by("status").len().sort("status").iter_rows()
    return ", ".join(f"{status} {n:,}" for status, n in counts)


async def write_run(
    prepared_run_id: str, api: Api, ledger: Ledger, *, progress: bool, recheck: bool = False
) -> Counter[str]:
    with stage("Writing", progress=False, unit=" calls") as writing:
        async with api.client() as client:
            try:
                await write.execute(
                    client, ledger, prepared_run_id, progress=progress, recheck=recheck
                )
            finally:
                calls = Counter(client.calls)
                writing.done(sum(calls.values()))
    return calls


def final_report(
    ledger: Ledger,
    run_id: str,
    calls: Counter[str],
    report_dir: Path,
    *,
    timings: dict[str, float] | None = None,
    progress: bool = False,
) -> tuple[dict[str, Any], ReportPaths, str]:
    """Merge the ledger's create outcomes into the plan, keep the summary, write every report.

    `calls` and `timings` are this session's; the summary adds them to what the run spent
    before (planning, or an earlier import or resume of the same run).
    """
    report, input_columns = _report_rows(ledger, run_id)
    summary = _summary(ledger, run_id, report, calls, timings or {})
    ledger.save_summary(run_id, summary)
    paths = write_reports(report, input_columns, summary, report_dir, progress=progress)
    return summary, paths, summary_text(summary, paths)


def rerender_report(
    ledger: Ledger, run_id: str, report_dir: Path, *, progress: bool = False
) -> tuple[dict[str, Any], ReportPaths, str]:
    """Every report again from the ledger alone, as the run left them."""
    report, input_columns = _report_rows(ledger, run_id)
    kept = ledger.summary(run_id)
    if kept is None:  # never finished: what it holds so far
        summary = _summary(ledger, run_id, report, Counter(), {}, finished=False)
    else:
        summary = {**kept, **count_outcomes(report)}
    paths = write_reports(report, input_columns, summary, report_dir, progress=progress)
    return summary, paths, summary_text(summary, paths)


def _report_rows(ledger: Ledger, run_id: str) -> tuple[pl.DataFrame, list[str]]:
    run = ledger.run(run_id)
    input_columns: list[str] = run.settings["input_columns"]
    planned, rows = split_inputs(ledger.plan(run_id), input_columns)
    plan = _with_outcomes(planned, ledger.outcomes(run_id))
    return report_frame(plan, rows, input_columns), input_columns


def _summary(
    ledger: Ledger,
    run_id: str,
    report: pl.DataFrame,
    calls: Counter[str],
    timings: dict[str, float],
    *,
    finished: bool = True,
) -> dict[str, Any]:
    run = ledger.run(run_id)
    info = run.settings.get("info", {})
    before = ledger.summary(run_id)
    spent = Counter(before["api_calls"] if before else info.get("api_calls", {})) + calls
    seconds = dict(before["timings_s"] if before else info.get("timings", {}))
    for name, value in timings.items():
        seconds[name] = round(seconds.get(name, 0.0) + value, 3)
    settings = {k: v for k, v in run.settings.items() if k not in {"input_columns", "info"}}
    return {
        "run_id": run_id,
        "dry_run": run.dry_run,
        **count_outcomes(report),
        "blank_rows": info.get("blank_rows", 0),
        "api_calls": dict(sorted(spent.items())),
        "started_at": info.get("started_at"),
        "finished_at": _seconds(run.finished_at or _now()) if finished else run.finished_at,
        "timings_s": seconds,
        "state": run.state,
        "existing_check": info.get("existing_check"),
        "contacts_snapshot": info.get("contacts_snapshot"),
        "notes": info.get("notes", []),
        "settings": settings,
    }


def _with_outcomes(plan: pl.DataFrame, outcomes: pl.DataFrame) -> pl.DataFrame:
    if outcomes.is_empty():
        return plan
    done = outcomes.select(
        "row_id",
        pl.col("status").alias("outcome_status"),
        pl.col("reason").alias("outcome_reason"),
        pl.col("detail").alias("outcome_detail"),
        pl.col("relationship_id").alias("outcome_relationship_id"),
    )
    pending = pl.col("status") == TO_CREATE
    merged = plan.join(done, on="row_id", how="left")
    return merged.with_columns(
        status=pl.when(pending).then(pl.col("outcome_status")).otherwise("status"),
        reason=pl.when(pending).then(pl.col("outcome_reason")).otherwise("reason"),
        detail=pl.when(pending).then(pl.col("outcome_detail")).otherwise("detail"),
        relationship_id=pl.when(pending)
        .then(pl.col("outcome_relationship_id"))
        .otherwise("relationship_id"),
    ).drop("outcome_status", "outcome_reason", "outcome_detail", "outcome_relationship_id")


def _now() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


def _seconds(stamp: str) -> str:
    return datetime.fromisoformat(stamp).isoformat(timespec="seconds")


class Stopwatch:
    """Seconds spent per stage, for the summary."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = round(now - self._last, 3)
        self._last = now


async def rollback_run(
    run_id: str, api: Api, ledger: Ledger, *, progress: bool
) -> write.RollbackStats:
    async with api.client() as client:
        return await write.rollback(client, ledger, run_id, progress=progress)


async def pull_contacts(api: Api, output: Path, *, progress: bool) -> int:
    async with api.client() as client:
        contacts = await directory.fetch(client, progress=progress)
    directory.save_snapshot(contacts, output)
    return contacts.height


def suggest_mapping(source: Path, sheet: str | None) -> str:
    extracted = extract([source], sheet=sheet)
    return mapping_module.suggest_mapping(extracted.columns, source=source.name)


def run_line(run: RunInfo) -> str:
    """One line of `lacrm-etl runs`: when, state, and what the run did or will do."""
    kind = "dry run" if run.dry_run else "import"
    counts = ", ".join(f"{name} {n:,}" for name, n in sorted(run.counts.items()) if n)
    sources = ", ".join(Path(p).name for p in run.settings.get("sources", []))
    return f"{run.run_id}  {run.state:<11} {kind:<7}  {counts or 'no rows'}  [{sources}]"


ROLLBACK_SHOWN = 20


def rollback_preview_text(ledger: Ledger, run_id: str) -> str:
    """What `rollback` without --yes prints: the relationships it would delete, as rows a
    person can find in their spreadsheet."""
    preview = write.rollback_preview(ledger, run_id)
    if preview.is_empty():
        return f"Run {run_id}: nothing to roll back (it created nothing, or it is rolled back)."
    where = ledger.plan(run_id).select("row_id", "source", "row", "name_1", "name_2")
    shown = preview.head(ROLLBACK_SHOWN).join(where, on="row_id", how="left")
    lines = [f"Run {run_id}: rollback would delete {preview.height:,} relationships it created:"]
    for item in shown.iter_rows(named=True):
        which = (
            f"RelationshipId {item['relationship_id']}"
            if item["state"] == "created"
            else "sent, outcome unknown: read back first, deleted only if it exists"
        )
        pair = (
            f"{item['name_1'] or item['contact_id_1']} and {item['name_2'] or item['contact_id_2']}"
        )
        lines.append(f"  row {item['row']} of {Path(item['source']).name}: {pair} ({which})")
    if preview.height > ROLLBACK_SHOWN:
        lines.append(f"  ... and {preview.height - ROLLBACK_SHOWN:,} more")
    lines.append("Nothing was deleted: add --yes to delete them.")
    return "\n".join(lines)


def check_unchanged(ledger: Ledger, run_id: str) -> None:
    """Refuse to resume a run whose input files changed (or vanished) since it was planned.

    Ledgers before absolute paths hold the paths as given: those resolve against the working
    folder, as they always did.
    """
    recorded: dict[str, str] = ledger.run(run_id).fingerprint
    missing = [path for path in recorded if not Path(path).is_file()]
    changed = [
        path
        for path, digest in recorded.items()
        if path not in missing and _sha256(Path(path)) != digest
    ]
    if changed or missing:
        raise InputsChanged(run_id, changed, missing)


class InputsChanged(Exception):
    """The run's input files are not the ones it was planned from: a user error (exit 2)."""

    def __init__(self, run_id: str, changed: list[str], missing: list[str] | None = None) -> None:
        super().__init__(run_id, changed, missing)
        self.run_id, self.changed, self.missing = run_id, changed, missing or []

    def __str__(self) -> str:
        what = []
        if self.changed:
            what.append(f"{', '.join(self.changed)} changed since it was planned")
        if self.missing:
            what.append(f"{', '.join(self.missing)} no longer exists")
        return (
            f"run {self.run_id} cannot be resumed: {'; '.join(what)}; run `lacrm-etl import` "
            "on the files again for a new plan (pairs already created are skipped)"
        )
