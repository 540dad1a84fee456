"""Realistic synthetic data for the benchmarks: a CRM, and the relationship files imported into it.

Everything is drawn from one seeded RNG, so a scale and a seed always give the same files.

- the planning CRM: N contacts and companies with Zipf-distributed first names and surnames (so
  dozens of people share a name), accents, copied full names, one to three emails each;
  written as a contacts snapshot (parquet, as `lacrm-etl contacts pull` writes) and a sandbox
  seed;
- relationships.csv: M rows, 5 columns, a random pair graph over that CRM, the two sides
  written as names (exact, "Last, First", "Dr. FIRST LAST", unaccented), emails or ContactIds,
  with planted reversed duplicates, repeated rows, self pairs, unknown names and blank cells;
  relationships.xlsx holds its first rows as a workbook;
- unknown_names.csv: misspelt names, for fuzzy matching;
- the sandbox CRM (sandbox_crm.json): people and companies for the write benchmark;
  star.csv (companies x people: each company related to its people, some pairs already in the
  CRM) and writes.csv (new pairs of a random, hub-heavy graph, by ContactId).

    .venv/bin/python -m benchmarks.generate [--scale 0.1] [--seed 7] [--out DIR]
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import os
import random
import shutil
import unicodedata
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl

from etl.directory import contacts_frame, save_snapshot

GENERATOR_VERSION = 3
DEFAULT_SEED = 7
DATA_ROOT = Path(__file__).parent / "data"
MAPPING_YAML = """\
contact1: {column: "Person", match: auto}
contact2: {column: "Related To", match: auto}
note: "{Relationship}: {Notes}"
fuzzy: false
"""
BASE_ID = 4006276277128634521894561234567
SANDBOX_BASE_ID = 4006276277999000000000000000000

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
    "Müller", "Société", "Nordic", "Café", "Łódź", "Zürich",
]  # fmt: skip
LEGAL_FORMS = ["Ltd", "Inc", "LLC", "GmbH", "Corp", "Co", "PLC", "AG", "BV", "SA"]
RELATIONSHIPS = ["Spouse", "Colleague", "Referred by", "Parent", "Employee", "Supplier contact"]
EVENTS = ["the 2019 expo", "a dinner", "school", "the Berlin office", "church", "", ""]


@dataclass(frozen=True)
class Sizes:
    """How much data: full scale is what the issues' targets are stated for."""

    contacts: int = 200_000
    rows: int = 1_000_000
    xlsx_rows: int = 100_000
    fuzzy_names: int = 10_000
    star_companies: int = 10
    star_people: int = 200
    creates: int = 2_000
    sandbox_people: int = 4_000

    def scaled(self, factor: float) -> Sizes:
        """Every size times `factor` (star companies and a floor of a few items kept)."""
        return replace(
            self,
            contacts=max(int(self.contacts * factor), 200),
            rows=max(int(self.rows * factor), 100),
            xlsx_rows=max(int(self.xlsx_rows * factor), 50),
            fuzzy_names=max(int(self.fuzzy_names * factor), 20),
            star_people=max(int(self.star_people * factor), 5),
            creates=max(int(self.creates * factor), 20),
            sandbox_people=max(int(self.sandbox_people * factor), 100),
        )


@dataclass(frozen=True)
class Dataset:
    """The generated files of one scale and seed."""

    folder: Path

    @property
    def snapshot(self) -> Path:
        return self.folder / "contacts.parquet"

    @property
    def crm_seed(self) -> Path:
        return self.folder / "crm.json"

    @property
    def relationships_csv(self) -> Path:
        return self.folder / "relationships.csv"

    @property
    def relationships_xlsx(self) -> Path:
        return self.folder / "relationships.xlsx"

    @property
    def unknown_names(self) -> Path:
        return self.folder / "unknown_names.csv"

    @property
    def sandbox_seed(self) -> Path:
        return self.folder / "sandbox_crm.json"

    @property
    def star_csv(self) -> Path:
        return self.folder / "star.csv"

    @property
    def writes_csv(self) -> Path:
        return self.folder / "writes.csv"

    @property
    def mapping(self) -> Path:
        return self.folder / "mapping.yaml"

    @property
    def manifest(self) -> Path:
        return self.folder / "manifest.json"

    def read_manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest.read_text(encoding="utf-8"))


# -- names ----------------------------------------------------------------------------------


class Zipf:
    """Draws from a list with weights 1 / (rank + flattening); cumulative, so each draw is a
    bisection instead of a pass over the weights."""

    def __init__(self, items: list[str], flattening: float) -> None:
        self.items = items
        self.cumulative = list(
            itertools.accumulate(1.0 / (r + flattening) for r in range(len(items)))
        )

    def draw(self, rng: random.Random) -> str:
        point = rng.random() * self.cumulative[-1]
        return self.items[bisect.bisect_right(self.cumulative, point)]


def contact_id(number: int, base: int = BASE_ID) -> str:
    return str(base + number * 7919)


def make_surnames(rng: random.Random, count: int) -> list[str]:
    """Distinct surnames in a random order of popularity."""
    names: set[str] = set()
    while len(names) < count:
        syllables = rng.choice(SURNAME_MIDDLES) * rng.randint(0, 1) + rng.choice(SURNAME_MIDDLES)
        names.add(rng.choice(SURNAME_STARTS) + syllables + rng.choice(SURNAME_ENDS))
    return shuffled(rng, names)


def make_first_names(rng: random.Random, count: int) -> list[str]:
    """The common first names first, then rarer made-up ones."""
    names: set[str] = set(FIRST_NAMES)
    while len(names) < count:
        names.add(rng.choice(FIRST_NAMES)[:3] + rng.choice(SURNAME_MIDDLES) + rng.choice("nlrsy"))
    return FIRST_NAMES + shuffled(rng, names - set(FIRST_NAMES))


def shuffled(rng: random.Random, items: set[str]) -> list[str]:
    """A seeded order: sorting first, as a set's own order changes from run to run."""
    ordered = sorted(items)
    rng.shuffle(ordered)
    return ordered


def company_names(rng: random.Random, count: int) -> list[str]:
    """Distinct company names; a few differ only by legal form (ambiguous once normalised)."""
    names: set[str] = set()
    while len(names) < count:
        names.add(" ".join(rng.sample(COMPANY_WORDS, 3)) + " " + rng.choice(LEGAL_FORMS))
    return shuffled(rng, names)


def unaccented(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


# -- the CRM --------------------------------------------------------------------------------


def make_contacts(
    rng: random.Random, count: int, base: int = BASE_ID, company_share: float = 0.05
) -> list[dict[str, Any]]:
    """GetContacts-shaped contacts: shared surnames, accents, copied names, several emails."""
    # The commonest surname ~1.3% of people, the commonest first name ~4%: a 200,000-contact
    # account holds dozens of people with the same name, as real ones do.
    surnames = Zipf(make_surnames(rng, max(count // 5, 50)), flattening=50)
    firsts = Zipf(make_first_names(rng, 1_000), flattening=20)
    companies = company_names(rng, int(count * company_share))
    contacts: list[dict[str, Any]] = []
    for number in range(count):
        identifier = contact_id(number, base)
        if number < len(companies):
            contacts.append(company(identifier, companies[number], number))
            continue
        if contacts and rng.random() < 0.01:
            first, last = _copied_name(rng, contacts)
        else:
            first, last = firsts.draw(rng), surnames.draw(rng)
        contacts.append(person(rng, identifier, first, last, firsts, companies))
    return contacts


def _copied_name(rng: random.Random, contacts: list[dict[str, Any]]) -> tuple[str, str]:
    """A second person with exactly the name of an earlier one (father and son, namesakes)."""
    while True:
        other = rng.choice(contacts)
        if not other["IsCompany"]:
            return other["Name"]["FirstName"], other["Name"]["LastName"]


def company(identifier: str, name: str, number: int) -> dict[str, Any]:
    slug = unaccented(name.split()[0]).lower()
    return {
        "ContactId": identifier,
        "IsCompany": True,
        "Company Name": name,
        "Email": [{"Text": f"info{number}@{slug}.example", "Type": "Work"}],
    }


def person(
    rng: random.Random,
    identifier: str,
    first: str,
    last: str,
    firsts: Zipf,
    companies: list[str],
) -> dict[str, Any]:
    local = unaccented(f"{first}.{last}").lower()
    emails = [
        {"Text": f"{local}.{identifier[-6:]}{k or ''}@mail{k}.example", "Type": "Work"}
        for k in range(rng.choice((1, 1, 1, 2, 3)))
    ]
    name: dict[str, str] = {"FirstName": first, "LastName": last}
    if rng.random() < 0.3:
        name["MiddleName"] = firsts.draw(rng)
    if rng.random() < 0.03:
        name["Suffix"] = rng.choice(("Jr", "Sr", "III"))
    return {
        "ContactId": identifier,
        "IsCompany": False,
        "Name": name,
        "Company Name": rng.choice(companies) if companies and rng.random() < 0.2 else "",
        "Email": emails,
    }


def write_crm(contacts: list[dict[str, Any]], snapshot: Path | None, seed: Path) -> None:
    if snapshot is not None:
        save_snapshot(contacts_frame(contacts), snapshot)
    seed.write_text(json.dumps({"contacts": contacts}, ensure_ascii=False), encoding="utf-8")


# -- relationship files ---------------------------------------------------------------------


def spelled(rng: random.Random, contact: dict[str, Any]) -> str:
    """How a spreadsheet might name the contact: exact, or a variant that normalises to it."""
    if contact["IsCompany"]:
        name: str = contact["Company Name"]
        if rng.random() < 0.7:
            return name
        return name.rsplit(" ", 1)[0] + " " + rng.choice(LEGAL_FORMS)
    first, last = contact["Name"]["FirstName"], contact["Name"]["LastName"]
    style = rng.random()
    if style < 0.6:
        return f"{first} {last}"
    if style < 0.75:
        return f"{last}, {first}"
    if style < 0.85:
        return f"Dr. {first.upper()} {last.upper()}"
    return unaccented(f"{first} {last}").lower()


def typo(rng: random.Random, text: str) -> str:
    position = rng.randrange(1, max(len(text) - 1, 2))
    operation = rng.random()
    if operation < 0.34:
        return text[:position] + text[position + 1 :]
    if operation < 0.67:
        return text[:position] + rng.choice("aeiourstln") + text[position:]
    return text[: position - 1] + text[position] + text[position - 1] + text[position + 1 :]


def make_pool(rng: random.Random, contacts: list[dict[str, Any]], size: int) -> list[str]:
    """The distinct-ish values a spreadsheet uses: names, emails, ids and 1% unknown names."""
    pool = []
    for _ in range(size):
        contact = rng.choice(contacts)
        kind = rng.random()
        if kind < 0.80:
            pool.append(spelled(rng, contact))
        elif kind < 0.90:
            email: str = rng.choice(contact["Email"])["Text"]
            pool.append(email.upper() if rng.random() < 0.2 else email)
        elif kind < 0.99:
            pool.append(contact["ContactId"])
        else:
            pool.append(f"{rng.choice(FIRST_NAMES)} Unknown{rng.randrange(10**6)}")
    return pool


@dataclass
class Planted:
    """How many of each anomaly the generator put in a relationship file."""

    reversed_duplicates: int = 0
    repeated_rows: int = 0
    self_pairs: int = 0
    blank_cells: int = 0


def make_rows(
    rng: random.Random, contacts: list[dict[str, Any]], rows: int
) -> tuple[pl.DataFrame, Planted]:
    """A random pair graph: popular values on many rows, plus the planted anomalies."""
    pool = make_pool(rng, contacts, max(rows // 4, 10))
    popularity = Zipf(pool, flattening=100.0)
    person = [popularity.draw(rng) for _ in range(rows)]
    related = [popularity.draw(rng) for _ in range(rows)]
    planted = Planted()
    for row in range(1, rows):
        roll = rng.random()
        if roll < 0.04:  # the same pair written the other way round further down
            earlier = rng.randrange(row)
            person[row], related[row] = related[earlier], person[earlier]
            planted.reversed_duplicates += 1
        elif roll < 0.06:
            earlier = rng.randrange(row)
            person[row], related[row] = person[earlier], related[earlier]
            planted.repeated_rows += 1
        elif roll < 0.07:
            contact = rng.choice(contacts)
            person[row], related[row] = spelled(rng, contact), contact["Email"][0]["Text"]
            planted.self_pairs += 1
        elif roll < 0.073:
            person[row] = ""
            planted.blank_cells += 1
    frame = pl.DataFrame(
        {
            "Person": person,
            "Related To": related,
            "Relationship": [rng.choice(RELATIONSHIPS) for _ in range(rows)],
            "Notes": [f"met at {e}" if e else "" for e in rng.choices(EVENTS, k=rows)],
            "Since": [
                f"{rng.randint(1990, 2024)}-{rng.randint(1, 12):02d}-01" for _ in range(rows)
            ],
        }
    )
    return frame, planted


def write_xlsx(frame: pl.DataFrame, path: Path) -> None:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Relationships")
    sheet.append(frame.columns)
    for row in frame.iter_rows():
        sheet.append(list(row))
    workbook.save(path)


def unknown_names(rng: random.Random, contacts: list[dict[str, Any]], count: int) -> pl.DataFrame:
    """Distinct misspelt person names: what fuzzy matching is for."""
    people = [c for c in contacts if not c["IsCompany"]]
    names: set[str] = set()
    while len(names) < count:
        parts = rng.choice(people)["Name"]
        names.add(typo(rng, f"{parts['FirstName']} {parts['LastName']}"))
    return pl.DataFrame({"Name": sorted(names)})


# -- the sandbox CRM: star and random graphs by id ------------------------------------------


def sandbox_crm(rng: random.Random, sizes: Sizes) -> tuple[dict[str, Any], pl.DataFrame]:
    """The sandbox's contacts, some relationships already there, and the star file."""
    people = make_contacts(rng, sizes.sandbox_people, SANDBOX_BASE_ID, company_share=0.0)
    names = company_names(rng, sizes.star_companies)
    companies = [
        company(contact_id(sizes.sandbox_people + n, SANDBOX_BASE_ID), name, n)
        for n, name in enumerate(names)
    ]
    star_rows: list[dict[str, str]] = []
    existing: list[dict[str, str]] = []
    members = rng.sample(people, min(len(people), sizes.star_companies * sizes.star_people))
    for number, firm in enumerate(companies):
        team = members[number * sizes.star_people : (number + 1) * sizes.star_people]
        for member in team:
            star_rows.append(
                {
                    "Person": member["Email"][0]["Text"],
                    "Related To": firm["Company Name"],
                    "Relationship": "Employee",
                    "Notes": f"joined {firm['Company Name']}",
                    "Since": f"{rng.randint(2000, 2024)}",
                }
            )
            if rng.random() < 0.1:  # already in the CRM: the check must find it
                existing.append(_relationship(firm["ContactId"], member["ContactId"], "Employee"))
    seed = {"contacts": [*people, *companies], "relationships": existing}
    return seed, pl.DataFrame(star_rows)


def _relationship(one: str, two: str, note: str) -> dict[str, str]:
    return {"ContactId1": one, "ContactId2": two, "Note": note}


def random_pairs(rng: random.Random, ids: list[str], count: int) -> pl.DataFrame:
    """`count` distinct new pairs by ContactId; a few hubs, many contacts seen once or twice."""
    popularity = Zipf(ids, flattening=20.0)
    pairs: set[tuple[str, str]] = set()
    while len(pairs) < count:
        one, two = popularity.draw(rng), rng.choice(ids)
        if one != two:
            pairs.add((min(one, two), max(one, two)))
    ordered = sorted(pairs)
    rng.shuffle(ordered)
    return pl.DataFrame(
        {
            "Person": [p[0] for p in ordered],
            "Related To": [p[1] for p in ordered],
            "Relationship": [rng.choice(RELATIONSHIPS) for _ in ordered],
            "Notes": ["benchmark" for _ in ordered],
            "Since": ["2024" for _ in ordered],
        }
    )


# -- the whole dataset ----------------------------------------------------------------------


def generate(folder: Path, sizes: Sizes, seed: int = DEFAULT_SEED) -> Dataset:
    """Write every file of the dataset into `folder` (created, emptied first)."""
    dataset = Dataset(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    contacts = make_contacts(rng, sizes.contacts)
    write_crm(contacts, dataset.snapshot, dataset.crm_seed)
    rows, planted = make_rows(rng, contacts, sizes.rows)
    rows.write_csv(dataset.relationships_csv)
    write_xlsx(rows.head(sizes.xlsx_rows), dataset.relationships_xlsx)
    unknown_names(rng, contacts, sizes.fuzzy_names).write_csv(dataset.unknown_names)
    sandbox_seed, star = sandbox_crm(rng, sizes)
    dataset.sandbox_seed.write_text(json.dumps(sandbox_seed, ensure_ascii=False), "utf-8")
    star.write_csv(dataset.star_csv)
    people = [c["ContactId"] for c in sandbox_seed["contacts"] if not c["IsCompany"]]
    random_pairs(rng, people, sizes.creates).write_csv(dataset.writes_csv)
    dataset.mapping.write_text(MAPPING_YAML, encoding="utf-8")
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "sizes": asdict(sizes),
        "planted": asdict(planted),
        "sandbox_existing_relationships": len(sandbox_seed["relationships"]),
    }
    dataset.manifest.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return dataset


def ensure_dataset(sizes: Sizes, seed: int = DEFAULT_SEED, root: Path = DATA_ROOT) -> Dataset:
    """The dataset for these sizes and seed, generated only if it is not on disk already."""
    name = f"v{GENERATOR_VERSION}-seed{seed}-{sizes.contacts}c-{sizes.rows}r"
    dataset = Dataset(root / name)
    if dataset.manifest.is_file():
        manifest = dataset.read_manifest()
        if manifest.get("sizes") == asdict(sizes) and manifest.get("seed") == seed:
            return dataset
    return generate(dataset.folder, sizes, seed)


def scale_from_environment() -> float:
    return float(os.environ.get("BENCH_SCALE", "1"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=scale_from_environment())
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, help=f"folder [default: under {DATA_ROOT}]")
    options = parser.parse_args(argv)
    sizes = Sizes().scaled(options.scale)
    if options.out is not None:
        dataset = generate(options.out, sizes, options.seed)
    else:
        dataset = ensure_dataset(sizes, options.seed)
    print(f"{dataset.folder}: {json.dumps(dataset.read_manifest())}")


if __name__ == "__main__":
    main()
