"""Resolve spreadsheet values (ids, emails, names) to ContactIds. Pure: frames in, frames out.

Each distinct value is resolved once, with polars joins against key tables built once per run.
Levels, best first: id / email (exact keys), exact (case and whitespace folded), normalised
(accents, punctuation, salutations, suffixes, legal forms, "Last, First"), then fuzzy (opt-in).
Two or more distinct contacts at the best level fail the value as ambiguous: never a guess.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

import polars as pl
from rapidfuzz import fuzz, process

MODES = ("auto", "id", "email", "name", "person", "company")
NAME_KINDS = ("name", "person", "company")

FUZZY_MARGIN = 5.0  # the best fuzzy candidate must beat the runner-up by this many points
DID_YOU_MEAN_CUTOFF = 60.0
# Emails differ by a letter or two when mistyped; at 60 "jim@x.com" would suggest "tim@y.com".
EMAIL_DID_YOU_MEAN_CUTOFF = 80.0
DID_YOU_MEAN_LIMIT = 3
AMBIGUOUS_SHOWN = 5
_FUZZY_LIMIT = 8  # keys per query per block: enough for the top few distinct contacts

_ID = r"^\d{31}$"
# What a spreadsheet makes of an id stored as a number: scientific notation, a trailing ".0",
# or (a double keeps ~15 significant digits) a long number ending in a run of zeros.
_MANGLED_ID = r"^(?:[+-]?\d+(?:[.,]\d+)?[eE][+-]?\d+|\d+[.,]0+|\d{6,}0{10})$"
_ID_LIKE = r"^(?:\d{31}|[+-]?\d+(?:[.,]\d+)?[eE][+-]?\d+|\d+[.,]0+|\d{6,}0{10})$"

_SALUTATIONS = ("mr", "mrs", "ms", "miss", "mx", "dr", "prof")
_SUFFIXES = ("jr", "sr", "ii", "iii", "iv", "phd", "md", "esq")
_LEGAL_FORMS = (
    "inc",
    "incorporated",
    "llc",
    "llp",
    "ltd",
    "limited",
    "gmbh",
    "corp",
    "corporation",
    "co",
    "company",
    "plc",
    "sa",
    "ag",
    "bv",
    "nv",
    "pty",
    "kg",
)
# Letters NFKD does not decompose into a base letter and a mark.
_LETTER_FOLDS = {
    "ß": "ss",
    "ø": "o",
    "æ": "ae",
    "œ": "oe",
    "ł": "l",
    "đ": "d",
    "ð": "d",
    "þ": "th",
    "ı": "i",
    "ħ": "h",
}
_TITLE_WORDS = rf"\b(?:{'|'.join(_SALUTATIONS + _SUFFIXES)})\b"
_TRAILING_LEGAL_FORMS = rf"(?:\s+(?:and\s+)?(?:{'|'.join(_LEGAL_FORMS)}))+$"

_REASON_RANK = {
    None: 0,
    "ambiguous_contact": 1,
    "id_precision_lost": 2,
    "invalid_id": 3,
    "contact_not_found": 4,
    "missing_value": 5,
}

RESULT_SCHEMA: dict[str, pl.DataType] = {
    "row_id": pl.UInt32(),
    "contact_id": pl.String(),
    "match": pl.String(),
    "matched_name": pl.String(),
    "reason": pl.String(),
    "detail": pl.String(),
}
_OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    "vid": pl.UInt64(),
    **{column: dtype for column, dtype in RESULT_SCHEMA.items() if column != "row_id"},
}


# ---------------------------------------------------------------- normalisation


def exact_key(text: pl.Expr) -> pl.Expr:
    """Case and whitespace folded: the `exact` level."""
    return text.str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


def _fold_letters(text: pl.Expr) -> pl.Expr:
    """Compatibility forms, case and accents folded; joining punctuation dropped."""
    return (
        text.str.to_lowercase()
        .str.normalize("NFKD")
        .str.replace_all(r"\p{M}+", "")
        .str.to_lowercase()
        .str.replace_many(_LETTER_FOLDS)
        .str.replace_all("&", " and ", literal=True)
        .str.replace_all(r"['’ʼ`´.]+", "")
    )


def _collapse_spaces(text: pl.Expr) -> pl.Expr:
    return text.str.replace_all(r"\s+", " ").str.strip_chars()


def _person_from_folded(folded: pl.Expr) -> pl.Expr:
    words = folded.str.replace_all(r"[^\p{L}\p{N},]+", " ").str.replace_all(_TITLE_WORDS, " ")
    # "Last, First" -> "First Last" (the text after the first comma goes first).
    reordered = words.str.replace(r"^([^,]*),(.*)$", "$2 $1").str.replace_all(
        ",", " ", literal=True
    )
    return _collapse_spaces(reordered)


def _company_from_folded(folded: pl.Expr) -> pl.Expr:
    words = _collapse_spaces(folded.str.replace_all(r"[^\p{L}\p{N}]+", " "))
    return words.str.replace(_TRAILING_LEGAL_FORMS, "").str.replace(r"^(?:the\s+)+", "")


def person_key(text: pl.Expr) -> pl.Expr:
    """A person's name at the `normalised` level: "Dr. Müller, José Jr." -> "jose muller"."""
    return _person_from_folded(_fold_letters(text))


def company_key(text: pl.Expr) -> pl.Expr:
    """A company's name at the `normalised` level: "The ACME, Inc." -> "acme"."""
    return _company_from_folded(_fold_letters(text))


def normalise_person(text: str) -> str:
    return pl.select(person_key(pl.lit(text, dtype=pl.String))).item()


def normalise_company(text: str) -> str:
    return pl.select(company_key(pl.lit(text, dtype=pl.String))).item()


def _sorted_tokens(key: pl.Expr) -> pl.Expr:
    return key.str.split(" ").list.sort().list.join(" ")


_BLOCK_COLUMNS = ("broad", "narrow_a", "narrow_b", "word_low", "word_high", "local", "domain")
_DID_YOU_MEAN_BLOCKS = ("narrow_a", "narrow_b")
# The word blocks catch a typo in the first letter of the other word ("Jon hSmith").
_FUZZY_BLOCKS = ("broad", "word_low", "word_high")


def _with_blocks(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    """Add blocking keys over the name's first and last words, taken in alphabetical order, so
    "Smith John", "John Smith" and "John A Smith" share blocks.

    broad: the initials of both words, and word_low / word_high: the first three letters of
    one word alone (fuzzy matching, opt-in, thorough);
    narrow_a / narrow_b: one more letter of one word or the other (did-you-mean, cheap).
    """
    ends = frame.with_columns(
        _first=pl.col(key).str.extract(r"^(\S+)"), _last=pl.col(key).str.extract(r"(\S+)$")
    )
    words = ends.with_columns(
        _low=pl.min_horizontal("_first", "_last"), _high=pl.max_horizontal("_first", "_last")
    )
    low, high = pl.col._low, pl.col._high
    return words.with_columns(
        broad=low.str.slice(0, 1) + high.str.slice(0, 1),
        narrow_a="a:" + low.str.slice(0, 1) + high.str.slice(0, 2),
        narrow_b="b:" + low.str.slice(0, 2) + high.str.slice(0, 1),
        word_low="w:" + low.str.slice(0, 3),
        word_high="w:" + high.str.slice(0, 3),
    ).drop("_first", "_last", "_low", "_high")


_EMAIL_BLOCKS = ("local", "domain")


def _with_email_blocks(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    """local: the part before the @ (a typo in the domain); domain: the domain and the first
    letter of the local part (a typo after the first letter)."""
    local = pl.col(key).str.extract(r"^(.+)@")
    domain = pl.col(key).str.extract(r"@([^@]+)$")
    return frame.with_columns(
        local="l:" + local, domain="d:" + local.str.slice(0, 1) + "@" + domain
    )


def email_address(text: pl.Expr) -> pl.Expr:
    """The address in "Jane Doe <jane@x.com>" (as mail programs copy it) or "mailto:jane@x.com";
    otherwise the text as it is."""
    inner = text.str.extract(r"<\s*([^<>\s]+@[^<>\s]+)\s*>")
    return pl.coalesce(inner, text).str.replace(r"^(?i:mailto:)", "")


# ---------------------------------------------------------------- the index


@dataclass(frozen=True)
class Choices:
    """What fuzzy matching scores against: every name once per block key, blocks contiguous."""

    texts: list[str]  # sorted-token names, for rapidfuzz
    contact_ids: pl.Series  # by the same position
    blocks: dict[tuple[bool, str], tuple[int, int]]  # (is_company, block) -> start, end


def _stack_blocks(frame: pl.DataFrame, block_columns: tuple[str, ...]) -> pl.DataFrame:
    """One row per (row, block key), sorted so each block is a contiguous run."""
    columns = [column for column in frame.columns if column not in _BLOCK_COLUMNS]
    stacked = pl.concat([frame.select(*columns, block=column) for column in block_columns])
    return stacked.sort("is_company", "block")


def _runs(stacked: pl.DataFrame) -> Iterator[tuple[tuple[bool, str], int, int]]:
    """((is_company, block), start, end) of each contiguous block of a _stack_blocks frame."""
    sizes = stacked.group_by("is_company", "block", maintain_order=True).len()
    start = 0
    for is_company, block, size in sizes.iter_rows():
        yield (is_company, block), start, start + size
        start += size


def _choices(names: pl.DataFrame, wanted: pl.DataFrame, block_columns: tuple[str, ...]) -> Choices:
    """The names in the blocks some query falls in (is_company, block of `wanted`), for rapidfuzz.

    Unmatched values are few and their blocks hold a sliver of the directory: only that sliver
    has its words sorted and is handed to rapidfuzz.
    """
    in_wanted = [
        names.join(wanted.rename({"block": column}), on=["is_company", column], how="semi").select(
            "is_company", "contact_id", "key", block=column
        )
        for column in block_columns
    ]
    stacked = (
        pl.concat(in_wanted)
        .select("is_company", "contact_id", "block", text=_sorted_tokens(pl.col.key))
        .unique()
        .sort("is_company", "block", "text", "contact_id")
    )
    return Choices(
        texts=stacked["text"].to_list(),
        contact_ids=stacked["contact_id"],
        blocks={key: (start, end) for key, start, end in _runs(stacked)},
    )


@dataclass(frozen=True)
class ContactIndex:
    """Key tables over the directory, built once per run by build_index.

    Raw key tables (key, is_company, contact_id) list every match; tallies (key -> how many
    distinct contacts, and the one when there is one) let most values resolve with a 1:1 join.
    """

    contacts: pl.DataFrame  # contact_id, is_company, name, email, company_name
    emails: pl.DataFrame  # key, is_company, contact_id
    exact: pl.DataFrame  # key, is_company, contact_id
    normalised: pl.DataFrame  # key, is_company, contact_id
    email_tally: tuple[pl.DataFrame, pl.DataFrame]  # people's, then companies'
    exact_tally: tuple[pl.DataFrame, pl.DataFrame]
    normalised_tally: tuple[pl.DataFrame, pl.DataFrame]
    # Outcomes already worked out, per fuzzy setting: the same value on the other side of the
    # relationship (or in the next call) is not resolved twice. Deterministic, so still pure.
    memory: dict[float | None, pl.DataFrame] = field(
        init=False, default_factory=dict, repr=False, compare=False
    )

    @cached_property
    def names(self) -> pl.DataFrame:
        """is_company, contact_id, key (normalised), broad, narrow_a, narrow_b.

        Only fuzzy matching and did-you-mean need it: built on first use, so a file whose
        every name matches exactly or normalised never pays for it.
        """
        return _with_blocks(self.normalised, "key")

    @cached_property
    def email_names(self) -> pl.DataFrame:
        """The emails as did-you-mean scores them (is_company, contact_id, key, blocks);
        built on first use, when an email matched no contact."""
        emails = self.emails.select(is_company=pl.lit(False), contact_id="contact_id", key="key")
        return _with_email_blocks(emails, "key")


def _name_variants(directory: pl.DataFrame, with_suffix: bool) -> pl.DataFrame:
    """contact_id, is_company, text: a person's name with and without the middle name."""
    suffix = [pl.col.suffix] if with_suffix else []
    people = directory.filter(~pl.col.is_company)
    companies = directory.filter(pl.col.is_company)
    forms = (
        [pl.col.first_name, pl.col.middle_name, pl.col.last_name, *suffix],
        [pl.col.first_name, pl.col.last_name, *suffix],
    )
    frames = [
        people.select(
            "contact_id", "is_company", text=pl.concat_str(parts, separator=" ", ignore_nulls=True)
        )
        for parts in forms
    ]
    frames.append(companies.select("contact_id", "is_company", text=pl.col.company_name))
    return pl.concat(frames)


def _keys(variants: pl.DataFrame, key: pl.Expr) -> pl.DataFrame:
    return (
        variants.select("is_company", "contact_id", key=key)
        .filter(pl.col.key.is_not_null() & (pl.col.key != ""))
        .unique()
        .select("key", "is_company", "contact_id")
    )


def _email_keys(directory: pl.DataFrame) -> pl.DataFrame:
    return (
        directory.select("contact_id", "is_company", key=pl.col.emails)
        .explode("key")
        .with_columns(key=exact_key(pl.col.key))
        .filter(pl.col.key.is_not_null() & (pl.col.key != ""))
        .unique()
        .select("key", "is_company", "contact_id")
    )


def _normalised_keys(directory: pl.DataFrame) -> pl.DataFrame:
    plain = _name_variants(directory, with_suffix=False)
    return pl.concat(
        [
            _keys(plain.filter(~pl.col.is_company), person_key(pl.col.text)),
            _keys(plain.filter(pl.col.is_company), company_key(pl.col.text)),
        ]
    )


def _tally(keys: pl.DataFrame, who: str) -> pl.DataFrame:
    """key -> {who}_count (distinct contacts) and {who}_id (one of them)."""
    return keys.group_by("key").agg(
        pl.len().cast(pl.UInt32).alias(f"{who}_count"),
        pl.col.contact_id.first().alias(f"{who}_id"),
    )


def _tallies(keys: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    return (
        _tally(keys.filter(~pl.col.is_company), "person"),
        _tally(keys.filter(pl.col.is_company), "company"),
    )


def build_index(directory: pl.DataFrame) -> ContactIndex:
    """The key tables resolution joins against; build once per run."""
    contacts = directory.select(
        "contact_id",
        "is_company",
        "name",
        email=pl.col.emails.list.first(),
        company_name="company_name",
    )
    emails = _email_keys(directory)
    exact = _keys(_name_variants(directory, with_suffix=True), exact_key(pl.col.text))
    normalised = _normalised_keys(directory)
    return ContactIndex(
        contacts=contacts,
        emails=emails,
        exact=exact,
        normalised=normalised,
        email_tally=_tallies(emails),
        exact_tally=_tallies(exact),
        normalised_tally=_tallies(normalised),
    )


# ---------------------------------------------------------------- detail texts


def _quoted(column: str = "value") -> pl.Expr:
    return pl.concat_str(pl.lit('"'), pl.col(column), pl.lit('"'))


def _candidate_text() -> pl.Expr:
    """'Jane Doe (id …, jane@x.com, Acme Ltd)': who a candidate is, for failure details."""
    kind = pl.when(pl.col.is_company).then(pl.lit("company")).otherwise(pl.lit(None))
    company = pl.when(pl.col.is_company).then(pl.lit(None)).otherwise(pl.col.company_name)
    facts = pl.concat_str(
        kind,
        pl.lit("id ") + pl.col.contact_id,
        pl.col.email,
        company,
        separator=", ",
        ignore_nulls=True,
    )
    return pl.format("{} ({})", pl.col.name, facts)


def _candidate_lists(hits: pl.DataFrame, index: ContactIndex, shown: int) -> pl.DataFrame:
    """hits (vid, contact_id) -> vid, candidates (the first `shown` by id), candidate_count."""
    firsts = hits.group_by("vid").agg(
        contact_id=pl.col.contact_id.bottom_k(shown).sort(), candidate_count=pl.len()
    )
    return (
        firsts.explode("contact_id")
        .join(index.contacts, on="contact_id", how="left")
        .group_by("vid", maintain_order=True)
        .agg(
            candidates=_candidate_text().str.join("; "),
            candidate_count=pl.col.candidate_count.first(),
        )
    )


def _ambiguous_detail(level_name: pl.Expr) -> pl.Expr:
    more = (
        pl.when(pl.col.candidate_count > AMBIGUOUS_SHOWN)
        .then(pl.format(" and {} more", pl.col.candidate_count - AMBIGUOUS_SHOWN))
        .otherwise(pl.lit(""))
    )
    return pl.format(
        "{} matches {} contacts ({} match): {}{}. Use an email or a contact id to say which.",
        _quoted(),
        pl.col.candidate_count,
        level_name,
        pl.col.candidates,
        more,
    )


def _not_found_detail() -> pl.Expr:
    return (
        pl.when(pl.col.kind == "email")
        .then(pl.format("No contact has the email {}.", _quoted()))
        .when(pl.col.kind == "company")
        .then(pl.format("No company is named {}.", _quoted()))
        .when(pl.col.kind == "person")
        .then(pl.format("No person is named {}.", _quoted()))
        .otherwise(pl.format("No contact or company is named {}.", _quoted()))
    )


# ---------------------------------------------------------------- outcomes per distinct value


def _resolved(frame: pl.DataFrame, match: pl.Expr, detail: pl.Expr | None = None) -> pl.DataFrame:
    return frame.select(
        "vid",
        "contact_id",
        match=match,
        matched_name="name",
        reason=pl.lit(None, dtype=pl.String),
        detail=pl.lit(None, dtype=pl.String) if detail is None else detail,
    )


def _failed(frame: pl.DataFrame, reason: str, detail: pl.Expr) -> pl.DataFrame:
    return frame.select(
        "vid",
        contact_id=pl.lit(None, dtype=pl.String),
        match=pl.lit(None, dtype=pl.String),
        matched_name=pl.lit(None, dtype=pl.String),
        reason=pl.lit(reason),
        detail=detail,
    )


@dataclass(frozen=True)
class _Level:
    """The values one level resolved, found ambiguous, or left for the next level."""

    resolved: pl.DataFrame
    ambiguous: pl.DataFrame
    pending: pl.DataFrame


def _counted(
    frame: pl.DataFrame,
    tallies: tuple[pl.DataFrame, pl.DataFrame],
    index: ContactIndex,
    person_key: str,
    company_key: str,
) -> _Level:
    """Join a level's tallies; the value's kind says whether people, companies or both count."""
    people, companies = tallies
    joined = frame.join(people, left_on=person_key, right_on="key", how="left").join(
        companies, left_on=company_key, right_on="key", how="left"
    )
    counted = joined.with_columns(
        _people=pl.when(pl.col.kind == "company")
        .then(0)
        .otherwise(pl.col.person_count.fill_null(0)),
        _companies=pl.when(pl.col.kind == "person")
        .then(0)
        .otherwise(pl.col.company_count.fill_null(0)),
    ).with_columns(_count=pl.col._people + pl.col._companies)
    drop = ["person_count", "person_id", "company_count", "company_id"]
    single = counted.filter(pl.col._count == 1).select(
        pl.exclude(drop),
        contact_id=pl.when(pl.col._people == 1).then(pl.col.person_id).otherwise(pl.col.company_id),
    )
    # Names are looked up for the values resolved, not tallied for every key of the directory.
    names = index.contacts.select("contact_id", "name")
    return _Level(
        resolved=single.join(names, on="contact_id", how="left"),
        ambiguous=counted.filter(pl.col._count > 1).drop(drop),
        pending=counted.filter(pl.col._count == 0).drop([*drop, "_people", "_companies", "_count"]),
    )


def _probes(frame: pl.DataFrame, person_key: str, company_key: str) -> pl.DataFrame:
    """vid, key, is_company: the person and/or company form of each value, as its kind allows."""
    people = frame.filter(pl.col.kind != "company").select(
        "vid", key=pl.col(person_key), is_company=pl.lit(False)
    )
    companies = frame.filter(pl.col.kind != "person").select(
        "vid", key=pl.col(company_key), is_company=pl.lit(True)
    )
    return pl.concat([people, companies]).filter(pl.col.key != "")


def _ambiguous(
    level: _Level, keys: pl.DataFrame, index: ContactIndex, name: str, keys_in: tuple[str, str]
) -> pl.DataFrame:
    """Fail each ambiguous value, naming its first few candidates."""
    frame = level.ambiguous
    hits = _probes(frame, *keys_in).join(keys, on=["key", "is_company"])
    candidates = _candidate_lists(hits, index, AMBIGUOUS_SHOWN)
    return _failed(
        frame.join(candidates, on="vid"), "ambiguous_contact", _ambiguous_detail(pl.lit(name))
    )


def _resolve_missing(values: pl.DataFrame) -> pl.DataFrame:
    return _failed(values, "missing_value", pl.lit("The cell is empty: there is nothing to match."))


def _resolve_ids(values: pl.DataFrame, index: ContactIndex) -> pl.DataFrame:
    contacts = index.contacts.select("contact_id", "name")
    found = values.join(contacts, left_on="value", right_on="contact_id", how="inner")
    rest = values.join(contacts, left_on="value", right_on="contact_id", how="anti")
    mangled = pl.col.value.str.contains(_MANGLED_ID)
    well_formed = pl.col.value.str.contains(_ID)
    return pl.concat(
        [
            _resolved(found.with_columns(contact_id=pl.col.value), pl.lit("id")),
            _failed(
                rest.filter(mangled),
                "id_precision_lost",
                pl.format(
                    "{} looks like a contact id that Excel stored as a number, which lost its "
                    "last digits. Format the column as Text in Excel, paste the ids again and "
                    "re-export the file.",
                    _quoted(),
                ),
            ),
            _failed(
                rest.filter(~mangled & ~well_formed),
                "invalid_id",
                pl.format(
                    "{} is not a contact id: LACRM ids are 31 digits. Check the column, or match "
                    "this side by name or email instead.",
                    _quoted(),
                ),
            ),
            _failed(
                rest.filter(~mangled & well_formed),
                "contact_not_found",
                pl.format("No contact has the id {}.", pl.col.value),
            ),
        ]
    )


def _resolve_emails(values: pl.DataFrame, index: ContactIndex) -> pl.DataFrame:
    keyed = values.with_columns(key=exact_key(email_address(pl.col.value)))
    level = _counted(keyed, index.email_tally, index, "key", "key")
    return pl.concat(
        [
            _resolved(level.resolved, pl.lit("email")),
            _ambiguous(level, index.emails, index, "email", ("key", "key")),
            _emails_not_found(level.pending, index),
        ]
    )


def _emails_not_found(unmatched: pl.DataFrame, index: ContactIndex) -> pl.DataFrame:
    if unmatched.is_empty():
        return _failed(unmatched, "contact_not_found", _not_found_detail())
    queries = _with_email_blocks(
        unmatched.select("vid", "key", is_company=pl.lit(False), text="key"), "key"
    ).drop("key")
    scores = _scores(queries, index.email_names, _EMAIL_BLOCKS, EMAIL_DID_YOU_MEAN_CUTOFF)
    return _not_found(unmatched, _ranked(scores), index)


def _resolve_names(values: pl.DataFrame, index: ContactIndex, fuzzy: float | None) -> pl.DataFrame:
    exact = _counted(
        values.with_columns(key=exact_key(pl.col.value)), index.exact_tally, index, "key", "key"
    )
    folded = exact.pending.with_columns(_folded=_fold_letters(pl.col.value))
    pending = folded.select(
        pl.exclude("_folded", "key"),
        person_key=_person_from_folded(pl.col._folded),
        company_key=_company_from_folded(pl.col._folded),
    )
    normalised = _counted(pending, index.normalised_tally, index, "person_key", "company_key")
    normalised_keys = ("person_key", "company_key")
    settled = [
        _resolved(exact.resolved, pl.lit("exact")),
        _ambiguous(exact, index.exact, index, "exact", ("key", "key")),
        _resolved(normalised.resolved, pl.lit("normalised")),
        _ambiguous(normalised, index.normalised, index, "normalised", normalised_keys),
    ]
    unmatched = normalised.pending
    if unmatched.is_empty():
        return pl.concat(settled)
    probes = _probes(unmatched, *normalised_keys)
    return pl.concat([*settled, _resolve_fuzzy(unmatched, probes, index, fuzzy)])


# ---------------------------------------------------------------- fuzzy and did-you-mean


def _block_scores(
    queries: list[tuple[int, str]], texts: list[str], offset: int, cutoff: float
) -> Iterator[tuple[int, int, float]]:
    # A loop over queries, each scored against its block in C: never rows x contacts in Python.
    for vid, text in queries:
        found = process.extract(
            text, texts, scorer=fuzz.ratio, processor=None, limit=_FUZZY_LIMIT, score_cutoff=cutoff
        )
        for _, score, position in found:
            yield vid, offset + position, score


def fuzzy_scores(
    probes: pl.DataFrame, index: ContactIndex, block_columns: tuple[str, ...], cutoff: float
) -> pl.DataFrame:
    """probes (vid, key, is_company) -> vid, contact_id, score: the best score per contact.

    The score is rapidfuzz's ratio of the sorted words (token_sort_ratio), 0-100.
    """
    keyed = probes.select("vid", "is_company", "key", text=_sorted_tokens(pl.col.key))
    queries = _with_blocks(keyed, "key").drop("key")
    return _scores(queries, index.names, block_columns, cutoff)


def _scores(
    queries: pl.DataFrame, names: pl.DataFrame, block_columns: tuple[str, ...], cutoff: float
) -> pl.DataFrame:
    """queries (vid, is_company, text, blocks) scored against the names sharing a block."""
    stacked = _stack_blocks(queries, block_columns)
    choices = _choices(names, stacked.select("is_company", "block").unique(), block_columns)
    vids, texts = stacked["vid"].to_list(), stacked["text"].to_list()
    rows: list[tuple[int, int, float]] = []
    for key, start, end in _runs(stacked):
        if key in choices.blocks:
            first, last = choices.blocks[key]
            pairs = list(zip(vids[start:end], texts[start:end], strict=True))
            rows.extend(_block_scores(pairs, choices.texts[first:last], first, cutoff))
    scores = pl.DataFrame(
        rows, schema={"vid": pl.UInt64, "position": pl.UInt32, "score": pl.Float64}, orient="row"
    )
    return (
        scores.with_columns(contact_id=choices.contact_ids.gather(scores["position"]))
        .group_by("vid", "contact_id")
        .agg(pl.col.score.max())
    )


def _ranked(scores: pl.DataFrame) -> pl.DataFrame:
    ordered = scores.sort("vid", "score", "contact_id", descending=[False, True, False])
    ranked = ordered.with_columns(rank=pl.int_range(pl.len()).over("vid"))
    return ranked.with_columns(
        best=pl.col.score.max().over("vid"),
        runner_up=pl.col.score.filter(pl.col.rank == 1).first().over("vid").fill_null(0.0),
    )


def _resolve_fuzzy(
    unmatched: pl.DataFrame, probes: pl.DataFrame, index: ContactIndex, fuzzy: float | None
) -> pl.DataFrame:
    if fuzzy is None:
        scores = fuzzy_scores(probes, index, _DID_YOU_MEAN_BLOCKS, DID_YOU_MEAN_CUTOFF)
        return _not_found(unmatched, _ranked(scores), index)
    cutoff = max(min(fuzzy - FUZZY_MARGIN, DID_YOU_MEAN_CUTOFF), 0.0)
    ranked = _ranked(fuzzy_scores(probes, index, _FUZZY_BLOCKS, cutoff))
    clear = (pl.col.best >= fuzzy) & (pl.col.best - pl.col.runner_up >= FUZZY_MARGIN)
    close = (pl.col.best >= fuzzy) & ~clear
    accepted = ranked.filter(clear & (pl.col.rank == 0))
    contested = ranked.filter(close & (pl.col.score >= pl.col.best - FUZZY_MARGIN))
    settled = pl.concat([accepted.select("vid"), contested.select("vid")])
    return pl.concat(
        [
            _fuzzy_accepted(unmatched, accepted, index),
            _fuzzy_contested(unmatched, contested, index),
            _not_found(unmatched.join(settled, on="vid", how="anti"), ranked, index),
        ]
    )


def _fuzzy_accepted(
    unmatched: pl.DataFrame, accepted: pl.DataFrame, index: ContactIndex
) -> pl.DataFrame:
    frame = unmatched.join(accepted, on="vid").join(
        index.contacts.select("contact_id", "name"), on="contact_id", how="left"
    )
    score = pl.col.score.floor().cast(pl.Int64)
    runner_up = (
        pl.when(pl.col.runner_up > 0)
        .then(pl.format("the next candidate scored {}", pl.col.runner_up.floor().cast(pl.Int64)))
        .otherwise(pl.lit("no other candidate came close"))
    )
    detail = pl.format(
        "{} was matched by similarity to {} (score {}; {}).",
        _quoted(),
        _quoted("name"),
        score,
        runner_up,
    )
    return _resolved(frame, pl.format("fuzzy:{}", score), detail)


def _fuzzy_contested(
    unmatched: pl.DataFrame, contested: pl.DataFrame, index: ContactIndex
) -> pl.DataFrame:
    candidates = _candidate_lists(contested, index, AMBIGUOUS_SHOWN)
    frame = unmatched.join(candidates, on="vid")
    return _failed(frame, "ambiguous_contact", _ambiguous_detail(pl.lit("fuzzy")))


def _not_found(unmatched: pl.DataFrame, ranked: pl.DataFrame, index: ContactIndex) -> pl.DataFrame:
    suggestions = (
        ranked.filter((pl.col.rank < DID_YOU_MEAN_LIMIT) & (pl.col.score >= DID_YOU_MEAN_CUTOFF))
        .join(unmatched.select("vid"), on="vid", how="semi")
        .join(index.contacts, on="contact_id", how="left")
        .sort("vid", "rank")
        .group_by("vid", maintain_order=True)
        .agg(suggestion=_candidate_text().str.join("; "))
    )
    frame = unmatched.join(suggestions, on="vid", how="left")
    detail = pl.concat_str(
        _not_found_detail(),
        pl.format(" Did you mean: {}?", pl.col.suggestion),
        ignore_nulls=True,
    )
    return _failed(frame, "contact_not_found", detail)


# ---------------------------------------------------------------- the side


def _classify(mode: pl.Expr, value: pl.Expr) -> pl.Expr:
    auto = (
        pl.when(value.str.contains(_ID_LIKE))
        .then(pl.lit("id"))
        .when(value.str.contains("@", literal=True))
        .then(pl.lit("email"))
        .otherwise(pl.lit("name"))
    )
    return (
        pl.when(value.is_null() | (value == ""))
        .then(pl.lit("missing"))
        .when(mode == "auto")
        .then(auto)
        .otherwise(mode)
    )


def _check_modes(distinct: pl.DataFrame) -> None:
    unknown = set(distinct["mode"].unique().to_list()) - set(MODES)
    if unknown:
        raise ValueError(f"unknown match mode(s) {sorted(unknown)}; use one of {', '.join(MODES)}")


def _check_fuzzy(fuzzy: float | None) -> None:
    if fuzzy is not None and not 0 <= fuzzy <= 100:
        raise ValueError(f"the fuzzy threshold must be between 0 and 100, not {fuzzy}")


def _resolve_distinct(
    distinct: pl.DataFrame, index: ContactIndex, fuzzy: float | None
) -> pl.DataFrame:
    """vid, mode, value -> vid, mode, value and the outcome, once per distinct value."""
    _check_modes(distinct)
    classified = distinct.select(
        "vid",
        "mode",
        value=pl.col.value.str.strip_chars(),
        kind=_classify(pl.col.mode, pl.col.value.str.strip_chars()),
    )
    parts = [
        _resolve_missing(classified.filter(pl.col.kind == "missing")),
        _resolve_ids(classified.filter(pl.col.kind == "id"), index),
        _resolve_emails(classified.filter(pl.col.kind == "email"), index),
        _resolve_names(classified.filter(pl.col.kind.is_in(NAME_KINDS)), index, fuzzy),
    ]
    outcomes = pl.concat([part.cast(_OUTCOME_SCHEMA) for part in parts])
    return distinct.join(outcomes, on="vid", how="left")


def _lookups(rows: pl.DataFrame, index: ContactIndex, fuzzy: float | None) -> pl.DataFrame:
    """The outcome of every distinct value of rows, reusing the ones the index remembers."""
    distinct = rows.select("vid", "mode", "value").unique("vid")
    known = index.memory.get(fuzzy)
    if known is not None:
        distinct = distinct.join(known, on="vid", how="anti")
    fresh = _resolve_distinct(distinct, index, fuzzy)
    lookups = fresh if known is None else pl.concat([known, fresh])
    index.memory[fuzzy] = lookups
    return lookups


def _join_outcomes(rows: pl.DataFrame, lookups: pl.DataFrame) -> pl.DataFrame | None:
    """rows + their outcomes; None if two values shared a hash (then vid cannot be trusted)."""
    joined = rows.join(lookups, on="vid", how="left", maintain_order="left", suffix="_seen")
    same = (pl.col.mode == pl.col.mode_seen) & pl.col.value.eq_missing(pl.col.value_seen)
    if not joined.select(same.all()).item():
        return None
    return joined


def _by_value_ids(values: pl.DataFrame, index: ContactIndex, fuzzy: float | None) -> pl.DataFrame:
    """The slow, collision-proof way: number the distinct values instead of hashing them."""
    distinct = (
        values.select("mode", "value")
        .unique()
        .with_row_index("vid")
        .with_columns(pl.col.vid.cast(pl.UInt64))
    )
    rows = values.join(distinct, on=["mode", "value"], how="left", nulls_equal=True)
    return rows.join(_resolve_distinct(distinct, index, fuzzy).drop("mode", "value"), on="vid")


def _best_attempt(joined: pl.DataFrame) -> pl.DataFrame:
    """Per row: the first attempt that resolves; otherwise the most informative failure."""
    rank = pl.col.reason.replace_strict(_REASON_RANK, default=9, return_dtype=pl.UInt8)
    return (
        joined.with_columns(_rank=rank)
        .sort("row_id", "_rank", "attempt")
        .unique("row_id", keep="first", maintain_order=True)
    )


def resolve_side(
    values: pl.DataFrame, index: ContactIndex, fuzzy: float | None = None
) -> pl.DataFrame:
    """values (row_id, attempt, mode, value) -> one row per row_id with RESULT_SCHEMA.

    fuzzy: None (off) or a similarity threshold 0-100 for names nothing else matched.
    """
    return resolve_sides([values], index, fuzzy)[0]


def resolve_sides(
    sides: list[pl.DataFrame], index: ContactIndex, fuzzy: float | None = None
) -> list[pl.DataFrame]:
    """resolve_side for each of several sides; their distinct values are resolved in one batch
    (both sides of a relationship file share most values, and a batch has a fixed cost)."""
    _check_fuzzy(fuzzy)
    hashed = [values.with_columns(vid=pl.struct("mode", "value").hash()) for values in sides]
    lookups = _lookups(pl.concat(hashed), index, fuzzy)
    return [
        _side_result(values, rows, lookups, index, fuzzy)
        for values, rows in zip(sides, hashed, strict=True)
    ]


def _side_result(
    values: pl.DataFrame,
    rows: pl.DataFrame,
    lookups: pl.DataFrame,
    index: ContactIndex,
    fuzzy: float | None,
) -> pl.DataFrame:
    joined = _join_outcomes(rows, lookups)
    if joined is None:
        joined = _by_value_ids(values, index, fuzzy)
    if joined["row_id"].n_unique() != joined.height:
        joined = _best_attempt(joined)
    elif not joined["row_id"].is_sorted():
        joined = joined.sort("row_id")
    return joined.select(list(RESULT_SCHEMA)).cast(RESULT_SCHEMA)
