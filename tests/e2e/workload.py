"""A workload for end-to-end reliability tests: groups of contacts, a CSV per group, the CLI.

Each group is a few companies and their people. A group's file asks for every person to be
related to their company, plus rows the tool must skip (reversed duplicates, self pairs, pairs
the CRM already holds), so every run has creates, skips and an exact expected end state. Groups
share one sandbox without touching each other's contacts.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from etl.sandbox.testing import RunningSandbox

MAPPING = """\
contact1: {column: "Person", match: id}
contact2: {column: "Company", match: id}
note: "{Note}"
"""
FAST = ("--rate", "1000", "--concurrency", "8", "--quiet")
CLI_TIMEOUT_SECONDS = 120
POLL_SECONDS = 0.005
KILL_DEADLINE_SECONDS = 60.0

Pair = frozenset[str]


@dataclass(frozen=True)
class Group:
    """One group's contacts and the rows of its file."""

    number: int
    companies: tuple[str, ...]
    people: tuple[str, ...]

    def employment(self) -> list[tuple[str, str, str]]:
        """Every person joins a company: the relationships the file exists to create."""
        return [
            (person, self.companies[n % len(self.companies)], f"g{self.number} employee {n}")
            for n, person in enumerate(self.people)
        ]

    def already_held(self) -> list[tuple[str, str, str]]:
        """Seeded before the import: the file repeats these, so they are skipped."""
        return [(self.companies[0], self.companies[1], f"g{self.number} partners")]

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(Person, Company, Note, expected reason) for each data row, in file order."""
        creates = [(a, b, note, "created") for a, b, note in self.employment()]
        reversed_ = [(b, a, "again", "duplicate_in_file") for a, b, _ in self.employment()[:50:9]]
        selves = [(p, p, "self", "self_relationship") for p in self.people[:3]]
        held = [(a, b, "held", "already_exists") for a, b, _ in self.already_held()]
        return creates[:50] + reversed_ + selves + held + creates[50:]

    def contacts(self) -> set[str]:
        return set(self.companies) | set(self.people)

    def expected(self) -> Counter[tuple[Pair, str]]:
        """The CRM's relationships among this group's contacts after the import."""
        return relationship_counts(self.already_held() + self.employment())


def make_groups(count: int, people: int = 100, companies: int = 4) -> list[Group]:
    return [
        Group(
            number=g,
            companies=tuple(f"9{g:04d}{n:026d}" for n in range(companies)),
            people=tuple(f"1{g:04d}{n:026d}" for n in range(people)),
        )
        for g in range(count)
    ]


def seed(groups: list[Group]) -> dict[str, Any]:
    contacts: list[dict[str, Any]] = []
    relationships: list[dict[str, Any]] = []
    for group in groups:
        contacts += [
            {"ContactId": cid, "IsCompany": True, "Company Name": f"Company {group.number}-{n}"}
            for n, cid in enumerate(group.companies)
        ]
        contacts += [
            {"ContactId": pid, "IsCompany": False, "Name": {"FirstName": "P", "LastName": pid}}
            for pid in group.people
        ]
        relationships += [
            {"RelationshipId": f"5{group.number:04d}{n:026d}", "ContactId1": a, "ContactId2": b}
            | {"Note": note}
            for n, (a, b, note) in enumerate(group.already_held())
        ]
    return {"contacts": contacts, "relationships": relationships}


def write_files(group: Group, folder: Path) -> tuple[Path, Path]:
    """The group's CSV and the mapping file, in `folder`."""
    source = folder / f"group{group.number}.csv"
    with source.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Person", "Company", "Note"])
        writer.writerows((a, b, note) for a, b, note, _ in group.rows())
    mapping = folder / "mapping.yaml"
    mapping.write_text(MAPPING, encoding="utf-8")
    return source, mapping


def relationship_counts(triples: list[tuple[str, str, str]]) -> Counter[tuple[Pair, str]]:
    return Counter((frozenset((a, b)), note) for a, b, note in triples)


def held(crm: RunningSandbox, group: Group) -> Counter[tuple[Pair, str]]:
    """The CRM's relationships among the group's contacts, as (pair, note)."""
    contacts = group.contacts()
    return Counter(
        (frozenset((r["ContactId1"], r["ContactId2"])), r["Note"] or "")
        for r in crm.state()["relationships"]
        if r["ContactId1"] in contacts or r["ContactId2"] in contacts
    )


def env_for(crm: RunningSandbox, key: str | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "LACRM_API_URL": crm.url,
        "LACRM_API_KEY": crm.api_key if key is None else key,
    }


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "etl", *args]


def run_cli(
    crm: RunningSandbox, cwd: Path, *args: str, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(*args),
        cwd=cwd,
        env=env_for(crm, key),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        stdin=subprocess.DEVNULL,
    )


def import_args(source: Path, mapping: Path, *extra: str) -> list[str]:
    return [
        "import",
        str(source),
        "--mapping",
        str(mapping),
        "--state-db",
        "state.sqlite",
        "--report-dir",
        "out",
        "--yes",
        *FAST,
        *extra,
    ]


def resume_args(run_id: str, *extra: str) -> list[str]:
    return [
        "resume",
        run_id,
        "--yes",
        "--state-db",
        "state.sqlite",
        "--report-dir",
        "out",
        *FAST,
        *extra,
    ]


def report_reasons(path: Path) -> list[str]:
    """Each report row's outcome as the row's expected-reason vocabulary (created or a reason)."""
    report = pl.read_csv(path, infer_schema=False).sort(pl.col("row").cast(pl.Int64))
    return [
        "created" if status == "created" else str(reason)
        for status, reason in report.select("status", "reason").iter_rows()
    ]


def assert_exact_end_state(crm: RunningSandbox, group: Group, report_dir: Path) -> None:
    """The CRM holds exactly the expected relationships, and the report accounts for each row."""
    # Explicit messages: pytest rewrites asserts in test modules only, not in this helper.
    now, expected = held(crm, group), group.expected()
    extra, missing = now - expected, expected - now
    assert not extra and not missing, (
        f"{sum(extra.values())} extra, {sum(missing.values())} missing"
    )
    contacts = group.contacts()
    duplicates = [p for p in crm.state()["duplicate_pairs"] if p[0] in contacts]
    assert duplicates == [], f"{len(duplicates)} pairs hold more than one relationship"
    reasons = report_reasons(report_dir / "report.csv")
    wanted = [reason for *_, reason in group.rows()]
    assert len(reasons) == len(wanted), f"{len(reasons)} report rows for {len(wanted)} rows"
    wrong = [n for n, (got, want) in enumerate(zip(reasons, wanted, strict=True)) if got != want]
    assert not wrong, f"report rows {wrong[:5]} differ"


@dataclass(frozen=True)
class Moment:
    """Kill once the sandbox has seen `count` calls of `function` from this import."""

    label: str
    function: str
    count: int
    writing: bool

    def __str__(self) -> str:
        return self.label


def calls_of(crm: RunningSandbox, function: str) -> int:
    return int(crm.state()["calls"].get(function, 0))


def import_killed_at(moment: Moment, crm: RunningSandbox, command: list[str], cwd: Path) -> int:
    """Start the import, SIGKILL it at `moment`; return its exit status (-9 when killed)."""
    before = calls_of(crm, moment.function)
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env_for(crm),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + KILL_DEADLINE_SECONDS
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if calls_of(crm, moment.function) - before >= moment.count:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(POLL_SECONDS)
    finally:
        if process.poll() is None and time.monotonic() >= deadline:
            process.kill()
        process.wait(KILL_DEADLINE_SECONDS)
    return process.returncode
