"""Benchmark contact resolution against issue 4's targets.

- exact + normalised: 1,000,000 rows (2,000,000 values, many repeated) against 200,000
  contacts, in at most 3x polars' bare read of the same CSV;
- fuzzy: 10,000 distinct unresolved names against 200,000 contacts in under 60 s;
- peak memory (ru_maxrss).

Run: `.venv/bin/python -m benchmarks.bench_resolve [--rows N] [--contacts N] [--fuzzy-names N]`.
Each figure is the median of --repeat runs (3 by default).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import resource
import statistics
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from etl.directory import contacts_frame
from etl.resolve import ContactIndex, build_index, resolve_side

SEED = 4
FIRST_NAMES = [
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "William",
    "Elizabeth", "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah",
    "Charles", "Karen", "José", "María", "Zoë", "Chloé", "Renée", "André", "Søren", "Łukasz",
    "Jürgen", "Anaïs", "François", "Siobhán", "Björn", "Ana", "Li", "Wei", "Priya", "Aarav",
    "Fatima", "Omar", "Yuki", "Hana", "Olga", "Ivan", "Mateo", "Lucía", "Noah", "Emma", "Liam",
    "Olivia", "Ava", "Mia", "Ethan", "Lucas", "Amelia", "Harper", "Elijah", "Ella", "Logan",
]  # fmt: skip
SURNAME_STARTS = [
    "Sm", "J", "W", "Br", "D", "M", "G", "Rodr", "Mart", "H", "L", "Gonz", "Wil", "And", "Th",
    "T", "Mo", "Ja", "Wh", "Ha", "Cl", "Le", "Ro", "Wa", "Yo", "Al", "K", "N", "P", "Sch",
    "Müll", "Gar", "Ló", "Ó", "Fr", "St", "B", "C", "V", "Z",
]  # fmt: skip
SURNAME_MIDDLES = ["a", "e", "i", "o", "u", "ei", "ou", "ä", "é", "ar", "er", "an", "in", "on"]
SURNAME_ENDS = ["th", "son", "s", "ez", "er", "ley", "ton", "man", "berg", "ski", "ard", "ins", "o"]
COMPANY_WORDS = [
    "Acme", "Global", "North", "Star", "Blue", "River", "Summit", "Pioneer", "Atlas", "Nova",
    "Green", "Stone", "Bright", "Harbor", "Eagle", "Iron", "Silver", "Maple", "Oak", "Peak",
    "Crown", "Delta", "Vertex", "Quantum", "Union", "Royal", "Pacific", "Alpine", "Coastal",
]  # fmt: skip
LEGAL_FORMS = ["Ltd", "Inc", "LLC", "GmbH", "Corp", "Co", "PLC", "AG", "BV", "SA"]
VALUES_SCHEMA = {"row_id": pl.UInt32, "attempt": pl.UInt8, "mode": pl.String, "value": pl.String}


def contact_id(number: int) -> str:
    return str(4006276277128634521894561234567 + number * 7919)


def make_surnames(rng: random.Random, count: int) -> list[str]:
    names: set[str] = set()
    while len(names) < count:
        syllables = rng.choice(SURNAME_MIDDLES) * rng.randint(0, 1) + rng.choice(SURNAME_MIDDLES)
        names.add(rng.choice(SURNAME_STARTS) + syllables + rng.choice(SURNAME_ENDS))
    return sorted(names)


def make_first_names(rng: random.Random, count: int) -> list[str]:
    names = set(FIRST_NAMES)
    while len(names) < count:
        names.add(rng.choice(FIRST_NAMES)[:3] + rng.choice(SURNAME_MIDDLES) + rng.choice("nlrsy"))
    return sorted(names)


def zipf_weights(count: int, flattening: int) -> list[float]:
    return [1.0 / (rank + flattening) for rank in range(count)]


def make_contacts(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """GetContacts-shaped results: shared surnames, accents, duplicates, several emails."""
    # Zipf-like name frequencies: the commonest surname ~0.3% of people, first name ~2%,
    # so a 200,000-contact account holds dozens of people called the same.
    surnames = make_surnames(rng, 20_000)
    firsts = make_first_names(rng, 1_000)
    surname_weights = zipf_weights(len(surnames), flattening=50)
    first_weights = zipf_weights(len(firsts), flattening=20)
    companies = max(count // 20, 1)
    results = []
    for number in range(count):
        if number < companies:
            name = " ".join(rng.sample(COMPANY_WORDS, 3)) + f" {number} " + rng.choice(LEGAL_FORMS)
            results.append(
                {"ContactId": contact_id(number), "IsCompany": True, "Name": None,
                 "Company Name": name, "Email": [{"Text": f"info{number}@co.example"}]}
            )  # fmt: skip
            continue
        first = rng.choices(firsts, weights=first_weights)[0]
        last = rng.choices(surnames, weights=surname_weights)[0]
        emails = [
            {"Text": f"{first}.{last}.{number}.{k}@mail.example", "Type": "Work"}
            for k in range(rng.choice((1, 1, 2, 3)))
        ]
        results.append(
            {
                "ContactId": contact_id(number),
                "IsCompany": False,
                "Name": {
                    "FirstName": first,
                    "MiddleName": rng.choice(firsts) if rng.random() < 0.3 else None,
                    "LastName": last,
                    "Suffix": rng.choice(("Jr", "Sr", "III")) if rng.random() < 0.03 else None,
                },
                "Company Name": None,
                "Email": emails,
            }
        )
    return results


def spelled(rng: random.Random, contact: dict[str, Any]) -> str:
    """How a spreadsheet might name the contact: exact, or a normalised variant."""
    if contact["IsCompany"]:
        name = contact["Company Name"]
        return (
            name if rng.random() < 0.7 else name.rsplit(" ", 1)[0] + " " + rng.choice(LEGAL_FORMS)
        )
    parts = contact["Name"]
    first, last = parts["FirstName"], parts["LastName"]
    style = rng.random()
    if style < 0.6:
        return f"{first} {last}"
    if style < 0.75:
        return f"{last}, {first}"
    if style < 0.85:
        return f"Dr. {first.upper()} {last.upper()}"
    return unaccented(f"{first} {last}").lower()


def unaccented(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def make_pool(rng: random.Random, contacts: list[dict[str, Any]], size: int) -> list[str]:
    """Distinct-ish spreadsheet values: names, emails, ids, unknowns."""
    pool = []
    for _ in range(size):
        contact = rng.choice(contacts)
        kind = rng.random()
        if kind < 0.80:
            pool.append(spelled(rng, contact))
        elif kind < 0.92 and contact["Email"]:
            pool.append(rng.choice(contact["Email"])["Text"].upper())
        elif kind < 0.99:
            pool.append(contact["ContactId"])
        else:
            pool.append(f"Unknown Person{rng.randrange(10**6)}")
    return pool


def make_rows(rng: random.Random, pool: list[str], rows: int) -> pl.DataFrame:
    # Popular values repeat: a few contacts appear on many rows, as in real relationship lists.
    weights = [1.0 / (rank + 1) ** 0.5 for rank in range(len(pool))]
    contact1 = rng.choices(pool, weights=weights, k=rows)
    contact2 = rng.choices(pool, weights=weights, k=rows)
    notes = rng.choices(["Spouse", "Colleague", "Referred by", "Parent", ""], k=rows)
    return pl.DataFrame({"Person": contact1, "Related To": contact2, "Relationship": notes})


def typo(rng: random.Random, text: str) -> str:
    position = rng.randrange(1, max(len(text) - 1, 2))
    operation = rng.random()
    if operation < 0.34:
        return text[:position] + text[position + 1 :]
    if operation < 0.67:
        return text[:position] + rng.choice("aeiourstln") + text[position:]
    return text[: position - 1] + text[position] + text[position - 1] + text[position + 1 :]


def side_values(column: pl.Series) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "row_id": pl.arange(0, column.len(), eager=True).cast(pl.UInt32),
            "attempt": pl.repeat(0, column.len(), dtype=pl.UInt8, eager=True),
            "mode": pl.repeat("auto", column.len(), dtype=pl.String, eager=True),
            "value": column,
        },
        schema=VALUES_SCHEMA,
    )


def resolve_both(sides: list[pl.DataFrame], index: ContactIndex) -> list[pl.DataFrame]:
    # A fresh copy forgets what earlier repeats resolved: every repeat starts cold.
    fresh = dataclasses.replace(index)
    return [resolve_side(side, fresh) for side in sides]


def median_seconds(action: Callable[[], object], repeat: int) -> tuple[float, object]:
    timings, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = action()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), result


def figure(label: str, seconds: float, note: str) -> str:
    return f"  {label:<30}{seconds:8.2f} s  ({note})"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_bulk(
    rng: random.Random, contacts: list[dict[str, Any]], index: ContactIndex, rows: int, repeat: int
) -> None:
    frame = make_rows(rng, make_pool(rng, contacts, max(rows // 4, 10)), rows)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "relationships.csv"
        frame.write_csv(path)
        read_s, read = median_seconds(lambda: pl.read_csv(path, infer_schema=False), repeat)
    assert isinstance(read, pl.DataFrame)
    sides = [side_values(read["Person"]), side_values(read["Related To"])]
    distinct = pl.concat([side["value"] for side in sides]).n_unique()
    resolve_s, results = median_seconds(lambda: resolve_both(sides, index), repeat)
    assert isinstance(results, list)
    outcomes = pl.concat(results).group_by("match", "reason").len().sort("len", descending=True)
    print(f"\nexact + normalised: {rows:,} rows, {2 * rows:,} values ({distinct:,} distinct)")
    print(figure("polars read_csv of the file", read_s, f"median of {repeat}"))
    print(figure("resolve both sides", resolve_s, f"median of {repeat}"))
    ratio = resolve_s / read_s
    verdict = "OK" if ratio <= 3 else "OVER"
    print(f"  ratio to the bare read        {ratio:8.2f} x  (target <= 3x: {verdict})")
    print("  outcomes:", ", ".join(f"{m or r}={n:,}" for m, r, n in outcomes.iter_rows()))


def bench_fuzzy(
    rng: random.Random, contacts: list[dict[str, Any]], index: ContactIndex, names: int, repeat: int
) -> None:
    people = [c for c in contacts if not c["IsCompany"]]
    typos: set[str] = set()
    while len(typos) < names:
        parts = rng.choice(people)["Name"]
        typos.add(typo(rng, f"{parts['FirstName']} {parts['LastName']}"))
    values = side_values(pl.Series("value", sorted(typos), dtype=pl.String))
    fuzzy_s, result = median_seconds(
        lambda: resolve_side(values, dataclasses.replace(index), fuzzy=85), repeat
    )
    assert isinstance(result, pl.DataFrame)
    fuzzy = result.filter(pl.col.match.str.starts_with("fuzzy")).height
    counts = result.group_by("reason").len().sort("len", descending=True)
    verdict = "OK" if fuzzy_s < 60 else "OVER"
    print(f"\nfuzzy (threshold 85): {names:,} distinct misspelt names")
    print(figure("resolve", fuzzy_s, f"median of {repeat}; target < 60 s: {verdict}"))
    print(f"  fuzzy matches {fuzzy:,}; " + ", ".join(f"{r}={n:,}" for r, n in counts.iter_rows()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--fuzzy-names", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args(argv)
    rng = random.Random(SEED)
    print(f"polars {pl.__version__}, python {sys.version.split()[0]}")
    contacts = make_contacts(rng, options.contacts)
    directory_s, directory = median_seconds(lambda: contacts_frame(contacts), 1)
    assert isinstance(directory, pl.DataFrame)
    index_s, index = median_seconds(lambda: build_index(directory), options.repeat)
    assert isinstance(index, ContactIndex)
    print(f"directory: {options.contacts:,} contacts")
    print(figure("contacts_frame", directory_s, "once"))
    print(figure("build_index", index_s, f"median of {options.repeat}; once per run"))
    bench_bulk(rng, contacts, index, options.rows, options.repeat)
    bench_fuzzy(rng, contacts, index, options.fuzzy_names, options.repeat)
    print(f"\npeak memory (ru_maxrss): {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
