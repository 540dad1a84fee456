"""Resolve spreadsheet values (ids, emails, names) to ContactIds. Pure: frames in, frames out.

Each distinct value is resolved once, with polars joins against key tables built once per run.
Levels, best first: id / email (exact keys), exact (case and whitespace folded), normalised
(accents, punctuation, salutations, suffixes, legal forms, "Last, First"), then fuzzy (opt-in).
Two or more distinct contacts at the best level fail the value as ambiguous: never a guess.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl
from rapidfuzz import fuzz, process

MODES = ("auto", "id", "email", "name", "person", "company")
NAME_KINDS = ("name", "person", "company")

FUZZY_MARGIN = 5.0  # the best fuzzy candidate must beat the runner-up by this many points
DID_YOU_MEAN_CUTOFF = 60.0
DID_YOU_MEAN_LIMIT = 3
AMBIGUOUS_SHOWN = 5
_FUZZY_LIMIT = 8  # keys per query per block: enough for the top few distinct contacts

_ID = r"^\d{31}$"
_SCIENTIFIC = r"^[+-]?\d+(?:[.,]\d+)?[eE][+-]?\d+$"
_FLOAT_ZERO = r"^\d+[.,]0+$"
# A double keeps ~15 significant digits: an id that went through one ends in a run of zeros.
_ZERO_TAIL = r"^\d{16,}$"
_ZERO_TAIL_RUN = "0000000000"

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
_LOOKUP_SCHEMA: dict[str, pl.DataType] = {
    "mode": pl.String(),
    "value": pl.String(),
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


def person_key(text: pl.Expr) -> pl.Expr:
    """A person's name at the `normalised` level: "Dr. Müller, José Jr." -> "jose muller"."""
    words = (
        _fold_letters(text)
        .str.replace_all(r"[^\p{L}\p{N},]+", " ")
        .str.replace_all(_TITLE_WORDS, " ")
    )
    parts = words.str.split(",").list.eval(
        pl.element().str.strip_chars().filter(pl.element().str.strip_chars() != "")
    )
    # "Last, First" -> "First Last"; a value without a comma is left as it is.
    reordered = pl.concat_list(parts.list.slice(1), parts.list.slice(0, 1)).list.join(" ")
    return _collapse_spaces(reordered)


def company_key(text: pl.Expr) -> pl.Expr:
    """A company's name at the `normalised` level: "The ACME, Inc." -> "acme"."""
    words = _collapse_spaces(_fold_letters(text).str.replace_all(r"[^\p{L}\p{N}]+", " "))
    return words.str.replace_all(_TRAILING_LEGAL_FORMS, "").str.replace(r"^(?:the\s+)+", "")


def normalise_person(text: str) -> str:
    return pl.select(person_key(pl.lit(text, dtype=pl.String))).item()


def normalise_company(text: str) -> str:
    return pl.select(company_key(pl.lit(text, dtype=pl.String))).item()


def _sorted_tokens(key: pl.Expr) -> pl.Expr:
    return key.str.split(" ").list.sort().list.join(" ")


def _block(key: pl.Expr) -> pl.Expr:
    """Fuzzy blocking: the initials of the first and last words, in either order."""
    first = key.str.slice(0, 1)
    last = key.str.split(" ").list.last().str.slice(0, 1)
    return pl.when(first <= last).then(first + last).otherwise(last + first)


# ---------------------------------------------------------------- the index


@dataclass(frozen=True)
class ContactIndex:
    """Key tables over the directory, built once per run by build_index."""

    contacts: pl.DataFrame  # contact_id, is_company, name, email, company_name
    emails: pl.DataFrame  # key, contact_id
    exact: pl.DataFrame  # key, is_company, contact_id
    normalised: pl.DataFrame  # key, is_company, contact_id
    fuzzy: pl.DataFrame  # is_company, block, text, contact_id


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


def build_index(directory: pl.DataFrame) -> ContactIndex:
    """The key tables resolution joins against; build once per run."""
    contacts = directory.select(
        "contact_id",
        "is_company",
        "name",
        email=pl.col.emails.list.first(),
        company_name="company_name",
    )
    emails = (
        directory.select("contact_id", key=pl.col.emails)
        .explode("key")
        .with_columns(key=exact_key(pl.col.key))
        .filter(pl.col.key.is_not_null() & (pl.col.key != ""))
        .unique()
        .select("key", "contact_id")
    )
    exact = _keys(_name_variants(directory, with_suffix=True), exact_key(pl.col.text))
    plain = _name_variants(directory, with_suffix=False)
    normalised = pl.concat(
        [
            _keys(plain.filter(~pl.col.is_company), person_key(pl.col.text)),
            _keys(plain.filter(pl.col.is_company), company_key(pl.col.text)),
        ]
    )
    fuzzy = normalised.select(
        "is_company",
        block=_block(pl.col.key),
        text=_sorted_tokens(pl.col.key),
        contact_id="contact_id",
    ).unique()
    return ContactIndex(
        contacts=contacts, emails=emails, exact=exact, normalised=normalised, fuzzy=fuzzy
    )


# ---------------------------------------------------------------- detail texts


def _quoted(column: str = "value") -> pl.Expr:
    return pl.concat_str(pl.lit('"'), pl.col(column), pl.lit('"'))


def _candidate_text(contacts: pl.DataFrame) -> pl.DataFrame:
    """contact_id -> 'Jane Doe (id …, jane@x.com, Acme Ltd)' for failure details."""
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
    return contacts.select("contact_id", "name", candidate=pl.format("{} ({})", pl.col.name, facts))


def _candidate_lists(hits: pl.DataFrame, index: ContactIndex, shown: int) -> pl.DataFrame:
    """hits (vid, contact_id, …) -> vid, candidates (text of the first `shown`), candidate_count."""
    described = (
        hits.select("vid", "contact_id")
        .unique()
        .join(_candidate_text(index.contacts), on="contact_id", how="left")
    )
    return (
        described.sort("vid", "name", "contact_id")
        .group_by("vid")
        .agg(
            candidates=pl.col.candidate.head(shown).str.join("; "),
            candidate_count=pl.len(),
        )
    )


# ---------------------------------------------------------------- per kind of value


def _classify(mode: pl.Expr, value: pl.Expr) -> pl.Expr:
    mangled = (
        value.str.contains(_SCIENTIFIC)
        | value.str.contains(_FLOAT_ZERO)
        | (value.str.contains(_ZERO_TAIL) & value.str.ends_with(_ZERO_TAIL_RUN))
    )
    auto = (
        pl.when(value.str.contains(_ID) | mangled)
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


def _resolved(frame: pl.DataFrame, match: pl.Expr, detail: pl.Expr | None = None) -> pl.DataFrame:
    return frame.select(
        "mode",
        "value",
        "contact_id",
        match=match,
        matched_name="name",
        reason=pl.lit(None, dtype=pl.String),
        detail=pl.lit(None, dtype=pl.String) if detail is None else detail,
    )


def _failed(frame: pl.DataFrame, reason: str, detail: pl.Expr) -> pl.DataFrame:
    return frame.select(
        "mode",
        "value",
        contact_id=pl.lit(None, dtype=pl.String),
        match=pl.lit(None, dtype=pl.String),
        matched_name=pl.lit(None, dtype=pl.String),
        reason=pl.lit(reason),
        detail=detail,
    )


def _resolve_missing(values: pl.DataFrame) -> pl.DataFrame:
    return _failed(values, "missing_value", pl.lit("The cell is empty: there is nothing to match."))


def _resolve_ids(values: pl.DataFrame, index: ContactIndex) -> pl.DataFrame:
    found = values.join(index.contacts, left_on="value", right_on="contact_id", how="inner")
    found = found.with_columns(contact_id=pl.col.value)
    rest = values.join(index.contacts, left_on="value", right_on="contact_id", how="anti")
    mangled = (
        pl.col.value.str.contains(_SCIENTIFIC)
        | pl.col.value.str.contains(_FLOAT_ZERO)
        | (pl.col.value.str.contains(_ZERO_TAIL) & pl.col.value.str.ends_with(_ZERO_TAIL_RUN))
    )
    lost = rest.filter(mangled)
    invalid = rest.filter(~mangled & ~pl.col.value.str.contains(_ID))
    unknown = rest.filter(~mangled & pl.col.value.str.contains(_ID))
    return pl.concat(
        [
            _resolved(found, pl.lit("id")),
            _failed(
                lost,
                "id_precision_lost",
                pl.format(
                    "{} looks like a contact id that Excel stored as a number, which lost its "
                    "last digits. Format the column as Text in Excel, paste the ids again and "
                    "re-export the file.",
                    _quoted(),
                ),
            ),
            _failed(
                invalid,
                "invalid_id",
                pl.format(
                    "{} is not a contact id: LACRM ids are 31 digits. Check the column, or match "
                    "this side by name or email instead.",
                    _quoted(),
                ),
            ),
            _failed(
                unknown,
                "contact_not_found",
                pl.format("No contact has the id {}.", pl.col.value),
            ),
        ]
    )


def _resolve_emails(values: pl.DataFrame, index: ContactIndex) -> pl.DataFrame:
    keyed = values.with_row_index("vid").with_columns(key=exact_key(pl.col.value))
    hits = keyed.join(index.emails, on="key", how="inner")
    return _decide(keyed, hits.with_columns(level=pl.lit(0, pl.UInt8)), index, ["email"])


# ---------------------------------------------------------------- names


def _exact_hits(keyed: pl.DataFrame, index: ContactIndex) -> pl.DataFrame:
    hits = keyed.join(index.exact, left_on="exact_key", right_on="key", how="inner")
    return hits.filter(_kind_allows(pl.col.kind, pl.col.is_company))


def _kind_allows(kind: pl.Expr, is_company: pl.Expr) -> pl.Expr:
    return (kind == "name") | ((kind == "company") == is_company)


def _normalised_probes(keyed: pl.DataFrame) -> pl.DataFrame:
    people = keyed.filter(pl.col.kind != "company").select(
        "vid", key=person_key(pl.col.value), is_company=pl.lit(False)
    )
    companies = keyed.filter(pl.col.kind != "person").select(
        "vid", key=company_key(pl.col.value), is_company=pl.lit(True)
    )
    return pl.concat([people, companies]).filter(pl.col.key != "")


def _resolve_names(values: pl.DataFrame, index: ContactIndex, fuzzy: float | None) -> pl.DataFrame:
    keyed = values.with_row_index("vid").with_columns(exact_key=exact_key(pl.col.value))
    exact = _exact_hits(keyed, index).select("vid", "contact_id", level=pl.lit(0, pl.UInt8))
    pending = keyed.join(exact, on="vid", how="anti")
    probes = _normalised_probes(pending)
    normalised = probes.join(index.normalised, on=["key", "is_company"], how="inner").select(
        "vid", "contact_id", level=pl.lit(1, pl.UInt8)
    )
    hits = pl.concat([exact, normalised])
    decided = _decide(keyed, hits, index, ["exact", "normalised"])
    unresolved = decided.filter(pl.col.reason == "contact_not_found").select("mode", "value")
    if unresolved.is_empty():
        return decided
    settled = decided.filter(pl.col.reason.is_null() | (pl.col.reason != "contact_not_found"))
    unresolved_keyed = keyed.join(unresolved, on=["mode", "value"], how="semi")
    return pl.concat([settled, _resolve_fuzzy(unresolved_keyed, index, fuzzy)])


def _decide(
    keyed: pl.DataFrame, hits: pl.DataFrame, index: ContactIndex, levels: list[str]
) -> pl.DataFrame:
    """From (vid, contact_id, level) hits: one contact at the best level resolves, more fail."""
    best = (
        hits.select("vid", "contact_id", "level")
        .unique()
        .filter(pl.col.level == pl.col.level.min().over("vid"))
    )
    counts = best.group_by("vid").agg(
        contact_id=pl.col.contact_id.first(), level=pl.col.level.first(), count=pl.len()
    )
    level_name = pl.col.level.replace_strict(
        list(range(len(levels))), levels, return_dtype=pl.String
    )
    single = (
        counts.filter(pl.col.count == 1)
        .join(keyed, on="vid")
        .join(index.contacts.select("contact_id", "name"), on="contact_id", how="left")
    )
    several = counts.filter(pl.col.count > 1).select("vid", "level")
    ambiguous = keyed.join(several, on="vid").join(
        _candidate_lists(best.join(several, on="vid", how="semi"), index, AMBIGUOUS_SHOWN),
        on="vid",
    )
    missing = keyed.join(counts, on="vid", how="anti")
    return pl.concat(
        [
            _resolved(single, level_name),
            _failed(ambiguous, "ambiguous_contact", _ambiguous_detail(level_name)),
            _failed(missing, "contact_not_found", _not_found_detail()),
        ]
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


# ---------------------------------------------------------------- fuzzy


def _fuzzy_queries(keyed: pl.DataFrame) -> pl.DataFrame:
    return (
        _normalised_probes(keyed)
        .select("vid", "is_company", block=_block(pl.col.key), text=_sorted_tokens(pl.col.key))
        .filter(pl.col.text != "")
    )


def _block_scores(
    queries: list[tuple[int, str]], texts: list[str], ids: list[str], cutoff: float
) -> Iterator[tuple[int, str, float]]:
    # A loop over queries, each scored against its block in C: never rows x contacts in Python.
    for vid, text in queries:
        found = process.extract(
            text, texts, scorer=fuzz.ratio, processor=None, limit=_FUZZY_LIMIT, score_cutoff=cutoff
        )
        for _, score, position in found:
            yield vid, ids[position], score


def fuzzy_scores(queries: pl.DataFrame, index: ContactIndex, cutoff: float) -> pl.DataFrame:
    """queries (vid, is_company, block, text) -> vid, contact_id, score (best per contact)."""
    choices = {
        key: (group["text"].to_list(), group["contact_id"].to_list())
        for key, group in index.fuzzy.group_by("is_company", "block")
    }
    rows: list[tuple[int, str, float]] = []
    for key, group in queries.group_by("is_company", "block"):
        if key not in choices:
            continue
        texts, ids = choices[key]
        pairs = list(zip(group["vid"].to_list(), group["text"].to_list(), strict=True))
        rows.extend(_block_scores(pairs, texts, ids, cutoff))
    scores = pl.DataFrame(
        rows, schema={"vid": pl.UInt32, "contact_id": pl.String, "score": pl.Float64}, orient="row"
    )
    return scores.group_by("vid", "contact_id").agg(pl.col.score.max())


def _ranked(scores: pl.DataFrame) -> pl.DataFrame:
    ordered = scores.sort("vid", "score", "contact_id", descending=[False, True, False])
    ranked = ordered.with_columns(rank=pl.int_range(pl.len()).over("vid"))
    return ranked.with_columns(
        best=pl.col.score.max().over("vid"),
        runner_up=pl.col.score.filter(pl.col.rank == 1).first().over("vid").fill_null(0.0),
    )


def _resolve_fuzzy(keyed: pl.DataFrame, index: ContactIndex, fuzzy: float | None) -> pl.DataFrame:
    cutoff = (
        DID_YOU_MEAN_CUTOFF if fuzzy is None else min(fuzzy - FUZZY_MARGIN, DID_YOU_MEAN_CUTOFF)
    )
    ranked = _ranked(fuzzy_scores(_fuzzy_queries(keyed), index, max(cutoff, 0.0)))
    if fuzzy is None:
        return _not_found(keyed, ranked, index)
    clear = (pl.col.best >= fuzzy) & (pl.col.best - pl.col.runner_up >= FUZZY_MARGIN)
    close = (pl.col.best >= fuzzy) & ~clear
    accepted = ranked.filter(clear & (pl.col.rank == 0))
    contested = ranked.filter(close & (pl.col.score >= pl.col.best - FUZZY_MARGIN))
    settled = pl.concat([accepted.select("vid"), contested.select("vid")]).unique()
    return pl.concat(
        [
            _fuzzy_accepted(keyed, accepted, index),
            _fuzzy_contested(keyed, contested, index),
            _not_found(keyed.join(settled, on="vid", how="anti"), ranked, index),
        ]
    )


def _fuzzy_accepted(
    keyed: pl.DataFrame, accepted: pl.DataFrame, index: ContactIndex
) -> pl.DataFrame:
    frame = keyed.join(accepted, on="vid").join(
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
        pl.concat_str(pl.lit('"'), pl.col.name, pl.lit('"')),
        score,
        runner_up,
    )
    return _resolved(frame, pl.format("fuzzy:{}", score), detail)


def _fuzzy_contested(
    keyed: pl.DataFrame, contested: pl.DataFrame, index: ContactIndex
) -> pl.DataFrame:
    lists = _candidate_lists(contested, index, AMBIGUOUS_SHOWN)
    frame = keyed.join(lists, on="vid")
    return _failed(frame, "ambiguous_contact", _ambiguous_detail(pl.lit("fuzzy")))


def _not_found(keyed: pl.DataFrame, ranked: pl.DataFrame, index: ContactIndex) -> pl.DataFrame:
    suggestions = ranked.filter(
        (pl.col.rank < DID_YOU_MEAN_LIMIT) & (pl.col.score >= DID_YOU_MEAN_CUTOFF)
    )
    described = (
        suggestions.join(_candidate_text(index.contacts), on="contact_id", how="left")
        .sort("vid", "rank")
        .group_by("vid")
        .agg(suggestion=pl.col.candidate.str.join("; "))
    )
    frame = keyed.join(described, on="vid", how="left")
    detail = pl.concat_str(
        _not_found_detail(),
        pl.format(" Did you mean: {}?", pl.col.suggestion),
        ignore_nulls=True,
    )
    return _failed(frame, "contact_not_found", detail)


# ---------------------------------------------------------------- the side


def _check_modes(values: pl.DataFrame) -> None:
    unknown = set(values["mode"].unique().to_list()) - set(MODES)
    if unknown:
        raise ValueError(f"unknown match mode(s) {sorted(unknown)}; use one of {', '.join(MODES)}")


def _resolve_distinct(
    distinct: pl.DataFrame, index: ContactIndex, fuzzy: float | None
) -> pl.DataFrame:
    by_kind = {
        kind: distinct.filter(pl.col.kind == kind)
        for kind in ("missing", "id", "email", *NAME_KINDS)
    }
    names = pl.concat([by_kind[kind] for kind in NAME_KINDS])
    parts = [
        _resolve_missing(by_kind["missing"]),
        _resolve_ids(by_kind["id"], index),
        _resolve_emails(by_kind["email"], index),
        _resolve_names(names, index, fuzzy),
    ]
    return pl.concat(
        [part.cast(_LOOKUP_SCHEMA) for part in parts if not part.is_empty()]
        or [pl.DataFrame(schema=_LOOKUP_SCHEMA)]
    )


def _best_attempt(joined: pl.DataFrame) -> pl.DataFrame:
    """The first attempt that resolves; otherwise the most informative failure."""
    rank = pl.col.reason.replace_strict(_REASON_RANK, default=9, return_dtype=pl.UInt8)
    return (
        joined.with_columns(_rank=rank)
        .sort("row_id", "_rank", "attempt")
        .unique("row_id", keep="first", maintain_order=True)
    )


def resolve_side(
    values: pl.DataFrame, index: ContactIndex, fuzzy: float | None = None
) -> pl.DataFrame:
    """values (row_id, attempt, mode, value) -> one row per row_id with RESULT_SCHEMA."""
    _check_modes(values)
    trimmed = values.with_columns(value=pl.col.value.str.strip_chars())
    distinct = (
        trimmed.select("mode", "value")
        .unique()
        .with_columns(kind=_classify(pl.col.mode, pl.col.value))
    )
    lookups = _resolve_distinct(distinct, index, fuzzy)
    joined = trimmed.join(lookups, on=["mode", "value"], how="left", nulls_equal=True)
    if joined["row_id"].n_unique() != joined.height:
        joined = _best_attempt(joined)
    return joined.sort("row_id").select(list(RESULT_SCHEMA)).cast(RESULT_SCHEMA)
