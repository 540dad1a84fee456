"""The mapping file: which columns name contact 1, contact 2 and the note of each row.

```yaml
contact1: {column: "Person", match: auto}        # auto | name | person | company | email | id
contact2: {column: "Related To", match: name}
# a side may instead name split columns: {first_name: "First", last_name: "Last"}
# or try several keys in order: {match: [email, name], column: {email: "Email", name: "Name"}}
note: "{Relationship}: {Notes}"                   # template over column names, optional
fuzzy: false                                     # or a similarity threshold 0-100
```

A side may also be just a column name (`contact1: Person`, match auto). `match` defaults to
auto, and to person for split names. `fuzzy: 0` means off, like `false`.

The note template holds column references `{Column name}` and literal text; `{{` and `}}`
are literal braces. It is never evaluated: rendering concatenates columns and literals in
polars, nulls as "", and a row whose referenced columns are all empty gets no note.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl
import yaml

from etl.spreadsheet import unneutralised

MATCH_MODES = ("auto", "name", "person", "company", "email", "id")
SPLIT_MODES = ("auto", "name", "person")
TOP_LEVEL_KEYS = ("contact1", "contact2", "note", "fuzzy")
SIDE_NAMES = ("contact1", "contact2")
SPLIT_KEYS = ("first_name", "last_name")

# Python format machinery that a `{Column}` reference must not look like: positional
# fields, attribute or index access, conversions and format specs.
_FORMAT_SYNTAX = re.compile(
    r"""^\d+$                                   # {0}
      | \.\w | \[ | \]                          # {Notes.__class__} {Notes[0]}
      | ![rsa]$                                 # {Notes!r}
      | :(?=\S)[<>=^]?[+\-]?\#?0?\d*[,_]?(\.\d+)?[a-zA-Z%]?$   # {Notes:>10} {Amount:.2f}
    """,
    re.VERBOSE,
)


class MappingError(Exception):
    """A mapping file the tool cannot follow; the message says what to change."""


@dataclass(frozen=True)
class Key:
    """One way to find a contact: a match mode over one column, or (first, last) names."""

    mode: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Side:
    """Keys tried in order until one resolves."""

    keys: tuple[Key, ...]

    def columns(self) -> list[str]:
        return [column for key in self.keys for column in key.columns]

    def renamed(self, names: dict[str, str]) -> Side:
        keys = (Key(key.mode, tuple(names.get(c, c) for c in key.columns)) for key in self.keys)
        return Side(tuple(keys))


@dataclass(frozen=True)
class Template:
    """A parsed note template: literal strings and column references, in order."""

    parts: tuple[tuple[str, str], ...]  # ("text", literal) or ("column", name)

    def columns(self) -> list[str]:
        return [value for kind, value in self.parts if kind == "column"]

    def renamed(self, names: dict[str, str]) -> Template:
        parts = ((kind, names.get(v, v) if kind == "column" else v) for kind, v in self.parts)
        return Template(tuple(parts))

    def text(self) -> str:
        """The template as written in a mapping file."""
        return "".join(
            "{" + value + "}" if kind == "column" else value.replace("{", "{{").replace("}", "}}")
            for kind, value in self.parts
        )


@dataclass(frozen=True)
class Mapping:
    contact1: Side
    contact2: Side
    note: str | None
    fuzzy: float | None

    def columns(self) -> list[tuple[str, str]]:
        """(column, where it is used) for every column the mapping names."""
        used = [(column, "contact1") for column in self.contact1.columns()]
        used += [(column, "contact2") for column in self.contact2.columns()]
        if self.note is not None:
            used += [(column, "note") for column in parse_template(self.note).columns()]
        return used

    def renamed(self, names: dict[str, str]) -> Mapping:
        """The mapping naming the input columns extraction renamed ("source" is called
        "source (input)", since the reports have a "source" of their own) by their new names."""
        if not names:
            return self
        note = None if self.note is None else parse_template(self.note).renamed(names).text()
        return replace(
            self,
            contact1=self.contact1.renamed(names),
            contact2=self.contact2.renamed(names),
            note=note,
        )

    def check_columns(self, columns: list[str]) -> None:
        """Raise MappingError naming the first mapped column the input does not have."""
        present = set(columns)
        for column, where in self.columns():
            if column not in present:
                raise MappingError(absent_column_message(column, where, columns))


def absent_column_message(column: str, where: str, columns: list[str]) -> str:
    closest = closest_names(column, columns)
    hint = (
        f" Did you mean {', '.join(quote(name) for name in closest)}?"
        if closest
        else " If the header is not on the first row, --header-row N says which row it is."
    )
    listing = ", ".join(quote(name) for name in columns)
    return (
        f"The mapping's {where} names the column {quote(column)}, which is not in the input."
        f"{hint} The columns are: {listing}."
    )


def closest_names(column: str, columns: list[str]) -> list[str]:
    by_folded = {name.casefold().strip(): name for name in columns}
    matches = difflib.get_close_matches(column.casefold().strip(), by_folded, n=3, cutoff=0.6)
    return [by_folded[match] for match in matches]


def quote(text: str) -> str:
    return f'"{text}"'


# ---------------------------------------------------------------------------------------
# Loading


def load_mapping(path: str | Path) -> Mapping:
    """Read and check a mapping file; MappingError says what is wrong and where."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise MappingError(
            f"{path}: no such mapping file; `lacrm-etl mapping init` writes one."
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise MappingError(f"{path}: cannot read the mapping file ({error}).") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise MappingError(f"{path}: not valid YAML{line}; check quotes and colons.") from None
    try:
        return parse_mapping(data)
    except MappingError as error:
        raise MappingError(f"{path}: {error}") from None


def parse_mapping(data: object) -> Mapping:
    if data is None:
        raise MappingError("the mapping file is empty; it needs contact1 and contact2.")
    if not isinstance(data, dict):
        raise MappingError("a mapping file is a set of `key: value` lines (contact1, contact2…).")
    unknown = [str(key) for key in data if key not in TOP_LEVEL_KEYS]
    if unknown:
        raise MappingError(
            f"unknown setting {', '.join(unknown)}; the settings are {', '.join(TOP_LEVEL_KEYS)}."
        )
    sides = []
    for name in SIDE_NAMES:
        if data.get(name) is None:
            raise MappingError(
                f'{name} is missing; add e.g. `{name}: {{column: "Person", match: auto}}`.'
            )
        sides.append(parse_side(data[name], name))
    note = parse_note(data.get("note"))
    return Mapping(sides[0], sides[1], note, parse_fuzzy(data.get("fuzzy")))


def parse_side(value: object, name: str) -> Side:
    if isinstance(value, str):
        return Side((Key("auto", (column_name(value, name),)),))
    if not isinstance(value, dict):
        raise MappingError(
            f'{name} must be a column name or e.g. {{column: "Person", match: auto}}.'
        )
    if any(key in value for key in SPLIT_KEYS):
        return Side((split_key(value, name, value.get("match")),))
    unknown = [str(key) for key in value if key not in ("column", "match")]
    if unknown:
        raise MappingError(
            f"{name} has unknown key {', '.join(unknown)}; use column and match, "
            "or first_name and last_name."
        )
    if "column" not in value:
        raise MappingError(f'{name} needs a column, e.g. {{column: "Person", match: auto}}.')
    match = value.get("match", "auto")
    if isinstance(match, list):
        return Side(chain_keys(value["column"], match, name))
    return Side((Key(match_mode(match, name), (column_name(value["column"], name),)),))


def chain_keys(columns: object, modes: list, name: str) -> tuple[Key, ...]:
    """{match: [email, name], column: {email: "Email", name: "Name"}}: keys in match order."""
    if not modes:
        raise MappingError(f"{name}: match is an empty list; name at least one match mode.")
    checked = [match_mode(mode, name) for mode in modes]
    if len(set(checked)) != len(checked):
        raise MappingError(f"{name}: match lists a mode twice.")
    if not isinstance(columns, dict):
        column = column_name(columns, name)
        return tuple(Key(mode, (column,)) for mode in checked)
    missing = [mode for mode in checked if mode not in columns]
    extra = [str(mode) for mode in columns if mode not in checked]
    if missing or extra:
        raise MappingError(
            f"{name}: match is [{', '.join(checked)}] but column gives "
            f"[{', '.join(str(mode) for mode in columns)}]; give one column for each mode."
        )
    keys = []
    for mode in checked:
        entry = columns[mode]
        if isinstance(entry, dict):
            keys.append(split_key(entry, name, mode))
        else:
            keys.append(Key(mode, (column_name(entry, name),)))
    return tuple(keys)


def split_key(value: dict, name: str, match: object) -> Key:
    unknown = [str(key) for key in value if key not in (*SPLIT_KEYS, "match")]
    missing = [key for key in SPLIT_KEYS if key not in value]
    if unknown or missing:
        raise MappingError(
            f"{name}: split names need exactly first_name and last_name "
            f'(e.g. {{first_name: "First", last_name: "Last"}}).'
        )
    mode = "person" if match is None else match_mode(match, name)
    if mode not in SPLIT_MODES:
        raise MappingError(f"{name}: split first and last names can match as person, not {mode}.")
    return Key(mode, tuple(column_name(value[key], name) for key in SPLIT_KEYS))


def match_mode(value: object, name: str) -> str:
    if not isinstance(value, str) or value.strip().lower() not in MATCH_MODES:
        raise MappingError(
            f"{name}: unknown match mode {value!r}; use one of {', '.join(MATCH_MODES)}."
        )
    return value.strip().lower()


def column_name(value: object, name: str) -> str:
    if isinstance(value, bool) or value is None:
        raise MappingError(f'{name}: a column must be the header text, e.g. "Person".')
    text = str(value).strip()  # YAML reads a header like 2024 as a number
    if not text:
        raise MappingError(f"{name}: the column name is empty.")
    return text


def parse_fuzzy(value: object) -> float | None:
    if value is None or value is False:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise MappingError(
            f"fuzzy must be false or a similarity threshold from 0 to 100 (e.g. 90), not {value!r}."
        )
    # A threshold of 0 would match every contact to anything; people write 0 to mean off.
    return float(value) if value > 0 else None


def parse_note(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MappingError('note must be a text template such as "{Relationship}: {Notes}".')
    parse_template(value)
    return value


# ---------------------------------------------------------------------------------------
# Note templates


def parse_template(template: str) -> Template:
    """Split a template into literals and `{Column}` references; refuse anything else."""
    parts: list[tuple[str, str]] = []
    literal: list[str] = []
    position = 0
    while position < len(template):
        char = template[position]
        pair = template[position : position + 2]
        if pair in ("{{", "}}"):
            literal.append(char)
            position += 2
        elif char == "}":
            raise MappingError(template_error(template, "a } without its {; write }} for a brace"))
        elif char == "{":
            end = template.find("}", position + 1)
            if end == -1:
                raise MappingError(template_error(template, "a { without its }"))
            if literal:
                parts.append(("text", "".join(literal)))
                literal = []
            parts.append(("column", reference(template, template[position + 1 : end])))
            position = end + 1
        else:
            literal.append(char)
            position += 1
    if literal:
        parts.append(("text", "".join(literal)))
    return Template(tuple(parts))


def reference(template: str, inside: str) -> str:
    name = inside.strip()
    if not name:
        raise MappingError(template_error(template, "an empty {}; put a column name inside"))
    if "{" in name:
        raise MappingError(template_error(template, "a { inside a reference"))
    if _FORMAT_SYNTAX.search(name):
        raise MappingError(
            template_error(
                template,
                f"{{{inside}}}, which is not a column reference; only {{Column name}} is "
                "allowed, with no formatting or attributes",
            )
        )
    return name


def template_error(template: str, problem: str) -> str:
    return f"the note template {template!r} has {problem}."


def render_notes(rows: pl.DataFrame, template: str | None) -> pl.Series:
    """One note per row: columns and literals concatenated in polars, nulls as ""."""
    if template is None:
        return pl.Series("note", [None] * rows.height, dtype=pl.String)
    parsed = parse_template(template)
    referenced = parsed.columns()
    if not referenced:
        text = "".join(value for _, value in parsed.parts).strip() or None
        return pl.repeat(text, rows.height, dtype=pl.String, eager=True).alias("note")
    # Only columns holding a leading apostrophe pay for the regex (most hold none).
    distinct = list(dict.fromkeys(referenced))
    starts_quoted = rows.select(
        pl.col(column).cast(pl.String).str.starts_with("'").any() for column in distinct
    ).row(0)
    guarded = {column for column, quoted in zip(distinct, starts_quoted, strict=True) if quoted}
    pieces = [
        _column_text(value, value in guarded) if kind == "column" else pl.lit(value)
        for kind, value in parsed.parts
    ]
    everything_empty = pl.all_horizontal(pl.col(column).is_null() for column in referenced)
    text = pl.when(everything_empty).then(None).otherwise(pl.concat_str(pieces).str.strip_chars())
    return rows.select(text.cast(pl.String).alias("note")).to_series()


def _column_text(column: str, guarded: bool) -> pl.Expr:
    text = pl.col(column).cast(pl.String)
    return (unneutralised(text) if guarded else text).fill_null("")


# ---------------------------------------------------------------------------------------
# Side values


def side_values(rows: pl.DataFrame, side: Side) -> pl.DataFrame:
    """row_id, attempt (1 = first key), mode, value: one row per data row and key."""
    frames = [
        rows.select(
            "row_id",
            pl.lit(attempt, dtype=pl.UInt8).alias("attempt"),
            pl.lit(key.mode, dtype=pl.String).alias("mode"),
            key_value(key).alias("value"),
        )
        for attempt, key in enumerate(side.keys, start=1)
    ]
    return pl.concat(frames).sort("row_id", "attempt", maintain_order=True)


def key_value(key: Key) -> pl.Expr:
    if len(key.columns) == 1:
        return pl.col(key.columns[0]).cast(pl.String)
    joined = pl.concat_str(
        [pl.col(column) for column in key.columns], separator=" ", ignore_nulls=True
    )
    return pl.when(joined.str.len_bytes() > 0).then(joined.str.strip_chars())


# ---------------------------------------------------------------------------------------
# `lacrm-etl mapping init`: a first mapping guessed from the headers

_GUESSES = {
    "contact1": (
        "contact",
        "contact 1",
        "contact1",
        "person",
        "name",
        "full name",
        "from",
        "contact name",
        "client",
        "customer",
        "person 1",
        "name 1",
    ),
    "contact2": (
        "related to",
        "related",
        "to",
        "contact 2",
        "contact2",
        "related contact",
        "related name",
        "person 2",
        "name 2",
        "relation",
        "other contact",
    ),
    "email1": ("email", "e-mail", "email address", "contact email", "email 1", "email1"),
    "email2": ("related email", "related to email", "email 2", "email2", "to email"),
    "company": (
        "company",
        "company name",
        "organisation",
        "organization",
        "employer",
        "account",
        "business",
    ),
    "relationship": ("relationship", "relationship type", "type", "relation type", "role"),
    "notes": ("notes", "note", "comments", "comment", "description", "details"),
    "first_name": ("first name", "first", "firstname", "given name"),
    "last_name": ("last name", "last", "lastname", "surname", "family name"),
}


def suggest_mapping(columns: list[str], source: str | None = None) -> str:
    """A commented YAML mapping guessed from the headers, for the user to check and edit."""
    found = {role: guess_column(columns, names) for role, names in _GUESSES.items()}
    taken: set[str] = set()
    side1 = suggest_side(found, "contact1", "email1", taken)
    side2 = suggest_side(found, "contact2", "email2", taken)
    if side2 is None and found["company"] and found["company"] not in taken:
        side2 = f"{{column: {yaml_text(found['company'])}, match: company}}"
        taken.add(found["company"])
    note = suggest_note(found)
    lines = [
        f"# lacrm-etl mapping{f' for {source}' if source else ''}, guessed from its headers.",
        "# Check each line before importing: `lacrm-etl import SOURCE --mapping THIS --dry-run`.",
        f"# Columns in the file: {', '.join(columns)}",
        "#",
        "# contact1 and contact2 are the two contacts of each relationship.",
        "# match says how a value is looked up: auto (31 digits -> id, has @ -> email, else",
        "# name), name, person, company, email or id. Other forms of a side:",
        '#   split names:  {first_name: "First", last_name: "Last"}',
        '#   a fallback:   {match: [email, name], column: {email: "Email", name: "Name"}}',
        f"contact1: {side1 or CHANGE_ME}",
        f"contact2: {side2 or CHANGE_ME}",
        "",
        "# The note on each relationship: {Column name} references and text ({{ }} for braces).",
        f"note: {yaml_text(note)}" if note else '# note: "{Relationship}: {Notes}"',
        "",
        "# fuzzy: false matches names exactly (after case and spacing); a number from 0 to",
        "# 100 also accepts names at least that similar (90 is a careful start).",
        "fuzzy: false",
        "",
    ]
    return "\n".join(lines)


CHANGE_ME = '{column: "CHANGE ME: a column naming a contact", match: auto}'


def suggest_side(
    found: dict[str, str | None], role: str, email: str, taken: set[str]
) -> str | None:
    name_column = found[role] if found[role] not in taken else None
    email_column = found[email] if found[email] not in taken else None
    if role == "contact1" and name_column is None and found["first_name"] and found["last_name"]:
        taken.update((found["first_name"], found["last_name"]))
        return (
            f"{{first_name: {yaml_text(found['first_name'])}, "
            f"last_name: {yaml_text(found['last_name'])}}}"
        )
    if name_column and email_column:
        taken.update((name_column, email_column))
        return (
            f"{{match: [email, name], column: {{email: {yaml_text(email_column)}, "
            f"name: {yaml_text(name_column)}}}}}"
        )
    column = name_column or email_column
    if column is None:
        return None
    taken.add(column)
    return f"{{column: {yaml_text(column)}, match: auto}}"


def suggest_note(found: dict[str, str | None]) -> str | None:
    usable = [found[role] for role in ("relationship", "notes") if found[role]]
    usable = [column for column in usable if "{" not in column and "}" not in column]
    return ": ".join(f"{{{column}}}" for column in usable) or None


def guess_column(columns: list[str], names: tuple[str, ...]) -> str | None:
    by_folded = {normalise_header(column): column for column in reversed(columns)}
    for name in names:
        if normalise_header(name) in by_folded:
            return by_folded[normalise_header(name)]
    return None


def normalise_header(header: str) -> str:
    return " ".join(re.sub(r"[_\-.#:]+", " ", header.casefold()).split())


def yaml_text(text: str) -> str:
    """A YAML double-quoted scalar (JSON's string escapes are valid YAML)."""
    return json.dumps(text, ensure_ascii=False)
