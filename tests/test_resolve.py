from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl import resolve as resolve_module
from etl.directory import contacts_frame
from etl.mapping import parse_side, side_values
from etl.resolve import (
    RESULT_SCHEMA,
    ContactIndex,
    build_index,
    exact_key,
    normalise_company,
    normalise_person,
    resolve_side,
)

VALUES_SCHEMA = {"row_id": pl.UInt32, "attempt": pl.UInt8, "mode": pl.String, "value": pl.String}


def cid(number: int) -> str:
    return str(10**30 + number)


def person(
    number: int,
    first: str | None,
    last: str | None,
    *,
    middle: str | None = None,
    suffix: str | None = None,
    salutation: str | None = None,
    emails: tuple[str, ...] = (),
    company: str | None = None,
) -> dict[str, Any]:
    return {
        "ContactId": cid(number),
        "IsCompany": False,
        "Name": {
            "Salutation": salutation,
            "FirstName": first,
            "MiddleName": middle,
            "LastName": last,
            "Suffix": suffix,
        },
        "Company Name": company,
        "Email": [{"Text": email, "Type": "Work"} for email in emails],
    }


def company(number: int, name: str, emails: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "ContactId": cid(number),
        "IsCompany": True,
        "Name": None,
        "Company Name": name,
        "Email": [{"Text": email, "Type": "Work"} for email in emails],
    }


DIRECTORY = [
    person(1, "José", "Müller", emails=("Jose.Muller@Example.com",)),
    person(2, "John", "Smith", emails=("john1@example.com",), company="Acme Ltd"),
    person(3, "John", "Smith", emails=("john2@example.com",)),
    person(4, "Mary", "Jones", middle="Ann", suffix="Jr", salutation="Ms"),
    company(5, "Acme Ltd", emails=("info@acme.example",)),
    person(6, "Jordan", "Lee"),
    company(7, "Jordan Lee"),
    person(8, "Anna", "Karlsson", emails=("shared@example.com",)),
    person(9, "Erik", "Karlsson", emails=("shared@example.com", "erik@example.com")),
    company(10, "Müller GmbH"),
    person(11, "Robert", "Brown"),
    person(12, "Robert", "Brown", suffix="Sr"),
    person(13, "Catherine", "Zeta-Jones"),
    company(14, "The Widget Corporation"),
]


@pytest.fixture(scope="module")
def index() -> ContactIndex:
    return build_index(contacts_frame(DIRECTORY))


def values_frame(rows: list[tuple[int, int, str, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=VALUES_SCHEMA, orient="row")


def resolve_one(
    value: str | None, index: ContactIndex, mode: str = "auto", fuzzy: float | None = None
) -> dict[str, Any]:
    result = resolve_side(values_frame([(0, 0, mode, value)]), index, fuzzy=fuzzy)
    assert result.height == 1
    return result.row(0, named=True)


def assert_resolved(outcome: dict[str, Any], number: int, match: str) -> None:
    assert outcome["reason"] is None, outcome["detail"]
    assert outcome["contact_id"] == cid(number)
    assert outcome["match"] == match


# ---------------------------------------------------------------- shape


def test_result_has_one_row_per_row_id_in_order_with_the_schema(index: ContactIndex) -> None:
    values = values_frame(
        [(2, 0, "auto", "Acme Ltd"), (0, 0, "auto", cid(1)), (1, 0, "auto", None)]
    )
    result = resolve_side(values, index)
    assert result.schema == pl.Schema(RESULT_SCHEMA)
    assert result["row_id"].to_list() == [0, 1, 2]


def test_an_empty_side_gives_an_empty_result(index: ContactIndex) -> None:
    result = resolve_side(values_frame([]), index)
    assert result.height == 0
    assert result.schema == pl.Schema(RESULT_SCHEMA)


def test_an_unknown_mode_is_refused(index: ContactIndex) -> None:
    with pytest.raises(ValueError, match="unknown match mode"):
        resolve_one("x", index, mode="telepathy")


def test_a_value_seen_on_many_rows_resolves_the_same_everywhere(index: ContactIndex) -> None:
    values = values_frame([(row, 0, "auto", "acme ltd") for row in range(50)])
    result = resolve_side(values, index)
    assert result["contact_id"].unique().to_list() == [cid(5)]


# ---------------------------------------------------------------- ids


def test_a_known_id_resolves_as_id(index: ContactIndex) -> None:
    assert_resolved(resolve_one(cid(4), index, mode="id"), 4, "id")
    assert resolve_one(cid(4), index, mode="id")["matched_name"] == "Mary Ann Jones Jr"


def test_an_unknown_31_digit_id_is_not_found(index: ContactIndex) -> None:
    outcome = resolve_one(cid(999), index, mode="id")
    assert outcome["reason"] == "contact_not_found"
    assert cid(999) in outcome["detail"]


@pytest.mark.parametrize("value", ["12345", "abc", "10000000000000000000000000000001x"])
def test_an_id_that_is_not_31_digits_is_invalid(index: ContactIndex, value: str) -> None:
    assert resolve_one(value, index, mode="id")["reason"] == "invalid_id"


@pytest.mark.parametrize(
    "value",
    [
        "4.00627627712863E+30",
        "4.00627627712863e30",
        "4006276277128630000000000000000",
        "1000000000000000000000000000001.0",
        "4006276277128630000000000000000.0",
    ],
)
def test_an_id_excel_stored_as_a_number_has_lost_precision(index: ContactIndex, value: str) -> None:
    for mode in ("id", "auto"):
        outcome = resolve_one(value, index, mode=mode)
        assert outcome["reason"] == "id_precision_lost"
        assert "Text" in outcome["detail"] and "Excel" in outcome["detail"]


def test_an_id_ending_in_zeros_that_exists_still_resolves() -> None:
    real = "4006276277128630000000000000000"
    index = build_index(contacts_frame([{**person(0, "Zero", "Tail"), "ContactId": real}]))
    assert resolve_one(real, index, mode="id")["contact_id"] == real


# ---------------------------------------------------------------- emails


@pytest.mark.parametrize("value", ["jose.muller@example.com", "  JOSE.MULLER@EXAMPLE.COM "])
def test_emails_match_trimmed_and_case_folded(index: ContactIndex, value: str) -> None:
    assert_resolved(resolve_one(value, index, mode="email"), 1, "email")
    assert_resolved(resolve_one(value, index, mode="auto"), 1, "email")


def test_every_email_of_a_contact_is_a_key(index: ContactIndex) -> None:
    assert_resolved(resolve_one("erik@example.com", index), 9, "email")


def test_an_email_two_contacts_share_is_ambiguous(index: ContactIndex) -> None:
    outcome = resolve_one("shared@example.com", index, mode="email")
    assert outcome["reason"] == "ambiguous_contact"
    assert cid(8) in outcome["detail"] and cid(9) in outcome["detail"]


def test_an_unknown_email_is_not_found(index: ContactIndex) -> None:
    outcome = resolve_one("nobody@example.com", index)
    assert outcome["reason"] == "contact_not_found"
    assert "nobody@example.com" in outcome["detail"]


@pytest.mark.parametrize(
    "value",
    [
        "José Müller <jose.muller@example.com>",
        '"Müller, José" <Jose.Muller@example.com>',
        "mailto:jose.muller@example.com",
        "MAILTO:Jose.Muller@Example.com",
    ],
)
def test_an_email_copied_from_a_mail_program_resolves_by_its_address(
    index: ContactIndex, value: str
) -> None:
    assert_resolved(resolve_one(value, index), 1, "email")


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("jose.muller@exmaple.com", 1),  # the domain mistyped
        ("jose.mulller@example.com", 1),  # the name mistyped
        ("erik@example.co", 9),
        ("INFO@acme.exmple", 5),
    ],
)
def test_a_mistyped_email_suggests_the_contact_meant(
    index: ContactIndex, typed: str, meant: int
) -> None:
    outcome = resolve_one(typed, index)
    assert outcome["reason"] == "contact_not_found"
    assert outcome["contact_id"] is None
    suggested = outcome["detail"].split("Did you mean: ")[1]
    assert cid(meant) in suggested


def test_an_email_far_from_every_known_one_gets_no_suggestion(index: ContactIndex) -> None:
    for value in ("zed@example.com", "jose.muller@unrelated.org", "not an email @"):
        outcome = resolve_one(value, index, mode="email")
        assert outcome["reason"] == "contact_not_found"
        assert "Did you mean" not in outcome["detail"], value


# ---------------------------------------------------------------- names: levels


def test_exact_ignores_case_and_whitespace(index: ContactIndex) -> None:
    assert_resolved(resolve_one("  josé   MÜLLER ", index), 1, "exact")


def test_names_match_with_and_without_the_middle_name(index: ContactIndex) -> None:
    assert_resolved(resolve_one("Mary Ann Jones Jr", index), 4, "exact")
    assert_resolved(resolve_one("Mary Jones Jr", index), 4, "exact")
    assert_resolved(resolve_one("Mary Ann Jones", index), 4, "normalised")


@pytest.mark.parametrize("value", ["Jose Muller", "JOSE MULLER", "José Muller", "JOSÉ MULLER"])
def test_accents_fold_at_the_normalised_level(index: ContactIndex, value: str) -> None:
    assert_resolved(resolve_one(value, index), 1, "normalised")


@pytest.mark.parametrize("value", ["Müller, José", "Muller,Jose", "MÜLLER , JOSÉ"])
def test_last_comma_first_is_reordered(index: ContactIndex, value: str) -> None:
    assert_resolved(resolve_one(value, index), 1, "normalised")


@pytest.mark.parametrize(
    "value", ["Ms. Mary Jones", "Dr Mary Jones", "Mary Jones, PhD", "Jones, Mary Ann, Jr."]
)
def test_salutations_and_suffixes_are_ignored(index: ContactIndex, value: str) -> None:
    assert_resolved(resolve_one(value, index), 4, "normalised")


def test_punctuation_and_repeated_spaces_are_dropped(index: ContactIndex) -> None:
    assert_resolved(resolve_one("Catherine   Zeta Jones", index), 13, "normalised")
    assert_resolved(resolve_one("catherine zeta-jones!", index), 13, "normalised")


@pytest.mark.parametrize(
    "value", ["ACME", "Acme Inc.", "Acme, LLC", "acme limited", "ACME Corp", "Acme Co."]
)
def test_company_legal_forms_fold(index: ContactIndex, value: str) -> None:
    assert_resolved(resolve_one(value, index, mode="company"), 5, "normalised")
    assert_resolved(resolve_one(value, index, mode="name"), 5, "normalised")


def test_company_accents_and_leading_the_fold(index: ContactIndex) -> None:
    assert_resolved(resolve_one("Muller", index, mode="company"), 10, "normalised")
    assert_resolved(resolve_one("Widget Corp", index, mode="company"), 14, "normalised")


def test_exact_beats_normalised(index: ContactIndex) -> None:
    # "Robert Brown" is exactly one contact; normalised (suffix ignored) it is two.
    assert_resolved(resolve_one("Robert Brown", index), 11, "exact")
    assert_resolved(resolve_one("Robert Brown Sr", index), 12, "exact")
    assert resolve_one("Robert Brown, Sr.", index)["reason"] == "ambiguous_contact"


def test_a_name_that_normalises_to_nothing_is_not_found(index: ContactIndex) -> None:
    assert resolve_one("Mr.", index)["reason"] == "contact_not_found"
    assert resolve_one("!!!", index)["reason"] == "contact_not_found"


# ---------------------------------------------------------------- ambiguity


def test_an_ambiguous_name_never_resolves(index: ContactIndex) -> None:
    for fuzzy in (None, 50.0):
        outcome = resolve_one("John Smith", index, fuzzy=fuzzy)
        assert outcome["contact_id"] is None
        assert outcome["reason"] == "ambiguous_contact"
        for number, email in ((2, "john1@example.com"), (3, "john2@example.com")):
            assert cid(number) in outcome["detail"]
            assert email in outcome["detail"]
        assert "Acme Ltd" in outcome["detail"]


def test_ambiguity_lists_at_most_five_candidates() -> None:
    directory = contacts_frame([person(n, "Sam", "Taylor") for n in range(8)])
    outcome = resolve_one("Sam Taylor", build_index(directory))
    assert outcome["reason"] == "ambiguous_contact"
    assert outcome["detail"].count("(id ") == 5
    assert "and 3 more" in outcome["detail"]


def test_a_person_and_a_company_of_one_name(index: ContactIndex) -> None:
    assert resolve_one("Jordan Lee", index, mode="name")["reason"] == "ambiguous_contact"
    assert resolve_one("Jordan Lee", index, mode="auto")["reason"] == "ambiguous_contact"
    assert_resolved(resolve_one("Jordan Lee", index, mode="company"), 7, "exact")
    assert_resolved(resolve_one("Jordan Lee", index, mode="person"), 6, "exact")


def test_person_mode_does_not_see_companies(index: ContactIndex) -> None:
    assert resolve_one("Acme Ltd", index, mode="person")["reason"] == "contact_not_found"
    assert resolve_one("José Müller", index, mode="company")["reason"] == "contact_not_found"


# ---------------------------------------------------------------- missing, fallbacks


@pytest.mark.parametrize("value", [None, "", "   "])
def test_a_missing_value_fails_as_missing(index: ContactIndex, value: str | None) -> None:
    for mode in ("auto", "id", "email", "name"):
        assert resolve_one(value, index, mode=mode)["reason"] == "missing_value"


def test_the_first_attempt_that_resolves_wins(index: ContactIndex) -> None:
    values = values_frame(
        [
            (0, 0, "email", "nobody@example.com"),
            (0, 1, "name", "José Müller"),
            (1, 0, "email", "john2@example.com"),
            (1, 1, "name", "José Müller"),
            (2, 0, "email", None),
            (2, 1, "name", "Acme Ltd"),
        ]
    )
    result = resolve_side(values, index)
    assert result["contact_id"].to_list() == [cid(1), cid(3), cid(5)]
    assert result["match"].to_list() == ["exact", "email", "exact"]


def test_ambiguous_is_reported_over_not_found(index: ContactIndex) -> None:
    values = values_frame([(0, 0, "email", "nobody@example.com"), (0, 1, "name", "John Smith")])
    assert resolve_side(values, index)["reason"].to_list() == ["ambiguous_contact"]
    values = values_frame([(0, 0, "name", "John Smith"), (0, 1, "email", "nobody@example.com")])
    assert resolve_side(values, index)["reason"].to_list() == ["ambiguous_contact"]


def test_not_found_is_reported_over_missing(index: ContactIndex) -> None:
    values = values_frame([(0, 0, "email", None), (0, 1, "name", "Nobody Atall")])
    assert resolve_side(values, index)["reason"].to_list() == ["contact_not_found"]
    values = values_frame([(0, 0, "email", None), (0, 1, "name", None)])
    assert resolve_side(values, index)["reason"].to_list() == ["missing_value"]


# ---------------------------------------------------------------- fuzzy, did you mean


def test_fuzzy_is_off_unless_asked(index: ContactIndex) -> None:
    assert resolve_one("Catherine Zeta-Jonse", index)["reason"] == "contact_not_found"


def test_fuzzy_resolves_a_clear_winner_with_its_score(index: ContactIndex) -> None:
    outcome = resolve_one("Catherine Zeta-Jonse", index, fuzzy=85)
    assert outcome["contact_id"] == cid(13)
    assert outcome["match"].startswith("fuzzy:")
    assert int(outcome["match"].split(":")[1]) >= 85
    assert outcome["matched_name"] == "Catherine Zeta-Jones"


def test_fuzzy_below_the_threshold_is_not_found(index: ContactIndex) -> None:
    outcome = resolve_one("Catherine Zeta-Jonse", index, fuzzy=99)
    assert outcome["reason"] == "contact_not_found"
    assert "Catherine Zeta-Jones" in outcome["detail"]


def test_fuzzy_never_picks_between_close_candidates(index: ContactIndex) -> None:
    outcome = resolve_one("Jon Smith", index, fuzzy=80)
    assert outcome["reason"] == "ambiguous_contact"
    assert outcome["contact_id"] is None


def test_fuzzy_never_overrides_exact_or_normalised(index: ContactIndex) -> None:
    assert_resolved(resolve_one("Jose Muller", index, fuzzy=50), 1, "normalised")


def test_fuzzy_respects_person_and_company_modes(index: ContactIndex) -> None:
    assert resolve_one("Acme Ltdd", index, mode="person", fuzzy=70)["contact_id"] is None
    assert resolve_one("Acmee", index, mode="company", fuzzy=70)["contact_id"] == cid(5)


def test_not_found_names_suggest_up_to_three_candidates(index: ContactIndex) -> None:
    outcome = resolve_one("Jose Mueller", index)
    assert outcome["reason"] == "contact_not_found"
    assert "Did you mean" in outcome["detail"] and cid(1) in outcome["detail"]
    assert resolve_one("Robert Browne", index)["detail"].count("(id ") <= 3


def test_not_found_suggests_the_three_closest_of_many() -> None:
    spellings = ["Tayler", "Taylr", "Taylore", "Taylar", "Tayloe", "Taylour"]
    directory = contacts_frame([person(n, "Sam", last) for n, last in enumerate(spellings)])
    outcome = resolve_one("Sam Tayloor", build_index(directory))
    assert outcome["reason"] == "contact_not_found"
    suggested = outcome["detail"].split("Did you mean: ")[1]
    assert suggested.count("(id ") == 3
    # the two that score 90.9 first (by id), then one of those scoring 90
    assert suggested.startswith(f"Sam Taylore (id {cid(2)}); Sam Taylour (id {cid(5)}); ")
    assert "Sam Taylr" in suggested


def test_fuzzy_takes_a_winner_only_when_it_leads_by_the_margin() -> None:
    clear = build_index(
        contacts_frame([person(1, "Jonathan", "Smith"), person(2, "Jonathan", "Smyth")])
    )
    outcome = resolve_one("Jonathan Smitth", clear, fuzzy=85)  # 96.6 against 89.7
    assert_resolved(outcome, 1, "fuzzy:96")
    assert "the next candidate scored 89" in outcome["detail"]

    close = build_index(
        contacts_frame([person(1, "Jonathan", "Smith"), person(2, "Jonathan", "Smitthe")])
    )
    outcome = resolve_one("Jonathan Smitth", close, fuzzy=85)  # 96.6 against 96.8: no winner
    assert outcome["contact_id"] is None
    assert outcome["reason"] == "ambiguous_contact"
    assert cid(1) in outcome["detail"] and cid(2) in outcome["detail"]


def test_fuzzy_forgives_a_slip_at_the_start_of_a_word() -> None:
    directory = contacts_frame([person(1, "Anna", "Thatcher"), person(2, "Anna", "Tanner")])
    outcome = resolve_one("Anna hTatcher", build_index(directory), fuzzy=85)
    assert_resolved(outcome, 1, "fuzzy:92")


def test_a_side_in_split_first_and_last_columns_resolves(index: ContactIndex) -> None:
    rows = pl.DataFrame(
        {"row_id": [0, 1], "First": ["José", "John"], "Last": ["Müller", "Smith"]},
        schema_overrides={"row_id": pl.UInt32},
    )
    side = parse_side({"first_name": "First", "last_name": "Last"}, "contact1")
    result = resolve_side(side_values(rows, side), index)
    assert_resolved(result.row(0, named=True), 1, "exact")
    assert result.row(1, named=True)["reason"] == "ambiguous_contact"


def test_suggestions_survive_word_order_and_a_middle_initial() -> None:
    directory = contacts_frame(
        [person(1, "Robert", "Browning"), person(2, "Elizabeth", "Barrett", middle="Moulton")]
    )
    index = build_index(directory)
    for typed, expected in [
        ("Robert A. Browning", 1),  # a middle initial the CRM does not hold
        ("Browning Robrt", 1),  # surname first, and a typo
        ("Barret Elizabeth", 2),  # the CRM holds a middle name the file leaves out
    ]:
        outcome = resolve_one(typed, index)
        assert outcome["reason"] == "contact_not_found", typed
        assert cid(expected) in outcome["detail"].split("Did you mean: ")[1], typed


def test_nothing_close_means_no_suggestion(index: ContactIndex) -> None:
    assert "Did you mean" not in resolve_one("Xavier Quux", index)["detail"]


# ---------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("José Müller", "jose muller"),
        ("Müller, José", "jose muller"),
        ("Dr. JOSÉ  MÜLLER, Jr.", "jose muller"),
        ("O'Brien, Seán", "sean obrien"),
        ("Straße", "strasse"),
        ("Zoë Ørsted", "zoe orsted"),
        ("ﬁona", "fiona"),
    ],
)
def test_normalise_person(text: str, expected: str) -> None:
    assert normalise_person(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ACME, Inc.", "acme"),
        ("Müller GmbH", "muller"),
        ("Smith & Co.", "smith"),
        ("The Widget Corporation", "widget"),
        ("Barnes & Noble", "barnes and noble"),
        ("Co", "co"),
    ],
)
def test_normalise_company(text: str, expected: str) -> None:
    assert normalise_company(text) == expected


names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30
) | st.from_regex(r"(Dr\.? |Mr )?[A-Za-zÀ-ÿ'.\- ]{0,12}(, [A-Za-zÀ-ÿ ]{0,10})?( Jr| Ltd| Inc\.)?")


@given(names)
@settings(max_examples=300, deadline=None)
def test_normalising_a_person_is_idempotent(text: str) -> None:
    once = normalise_person(text)
    assert normalise_person(once) == once


@given(names)
@settings(max_examples=300, deadline=None)
def test_normalising_a_company_is_idempotent(text: str) -> None:
    once = normalise_company(text)
    assert normalise_company(once) == once


# ---------------------------------------------------------------- resolution is sound

FIRSTS = ["José", "Jose", "Anna", "Ánna", "Li", "Mary"]
LASTS = ["Müller", "Muller", "Smith", "Zeta-Jones", "Ng"]
COMPANIES = ["Acme Ltd", "ACME", "Müller GmbH", "The Widget Co", "Smith & Co"]


def directory_strategy() -> st.SearchStrategy[list[dict[str, Any]]]:
    entry = st.one_of(
        st.tuples(
            st.just("person"),
            st.sampled_from(FIRSTS),
            st.sampled_from(LASTS),
            st.sampled_from([None, "Ann", "B."]),
            st.sampled_from([None, "Jr", "PhD"]),
        ),
        st.tuples(st.just("company"), st.sampled_from(COMPANIES)),
    )
    return st.lists(entry, min_size=1, max_size=12).map(
        lambda entries: [
            person(n, e[1], e[2], middle=e[3], suffix=e[4], emails=(f"{e[1]}{n % 3}@x.com",))
            if e[0] == "person"
            else company(n, e[1])
            for n, e in enumerate(entries)
        ]
    )


def value_strategy() -> st.SearchStrategy[str]:
    full = st.builds(
        lambda first, last, style: {
            0: f"{first} {last}",
            1: f"{last}, {first}",
            2: f"Dr. {first.upper()} {last}",
            3: f"{first}  {last} Jr",
        }[style],
        st.sampled_from(FIRSTS),
        st.sampled_from(LASTS),
        st.integers(0, 3),
    )
    emails = st.builds(
        lambda first, n: f" {first.upper()}{n}@X.COM", st.sampled_from(FIRSTS), st.integers(0, 2)
    )
    return st.one_of(
        full, st.sampled_from(COMPANIES), st.sampled_from(["acme inc", "widget"]), emails
    )


def contact_keys(contact: dict[str, Any], match: str) -> set[str]:
    name = contact["Name"] or {}
    first, middle, last, suffix = (
        name.get(part) for part in ("FirstName", "MiddleName", "LastName", "Suffix")
    )
    if match == "email":
        return {pl.select(exact_key(pl.lit(e["Text"]))).item() for e in contact["Email"]}
    if contact["IsCompany"]:
        text = contact["Company Name"]
        return {exact_key_of(text)} if match == "exact" else {normalise_company(text)}
    if match == "exact":
        return {
            exact_key_of(" ".join(p for p in parts if p))
            for parts in ((first, middle, last, suffix), (first, last, suffix))
        }
    return {
        normalise_person(" ".join(p for p in parts if p))
        for parts in ((first, middle, last), (first, last))
    }


def exact_key_of(text: str) -> str:
    return pl.select(exact_key(pl.lit(text))).item()


def value_key(value: str, match: str, is_company: bool) -> str:
    if match in ("exact", "email"):
        return exact_key_of(value)
    return normalise_company(value) if is_company else normalise_person(value)


@given(directory_strategy(), st.lists(value_strategy(), min_size=1, max_size=10))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_resolution_only_returns_a_contact_whose_key_matches(
    entries: list[dict[str, Any]], values: list[str]
) -> None:
    index = build_index(contacts_frame(entries))
    frame = values_frame([(row, 0, "auto", value) for row, value in enumerate(values)])
    result = resolve_side(frame, index)
    by_id = {entry["ContactId"]: entry for entry in entries}
    for value, outcome in zip(values, result.iter_rows(named=True), strict=True):
        if outcome["contact_id"] is None:
            continue
        contact = by_id[outcome["contact_id"]]
        match = outcome["match"]
        assert value_key(value, match, contact["IsCompany"]) in contact_keys(contact, match)
        rivals = [
            other
            for other in entries
            if other["ContactId"] != contact["ContactId"]
            and value_key(value, match, other["IsCompany"]) in contact_keys(other, match)
        ]
        assert not rivals, f"{value!r} resolved although {len(rivals)} other contact(s) match"


# ---------------------------------------------------------------- machinery


def test_a_hash_collision_falls_back_to_exact_value_ids(
    index: ContactIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = values_frame(
        [(0, 0, "auto", "Acme Ltd"), (1, 0, "auto", "John Smith"), (2, 0, "email", None)]
    )
    expected = resolve_side(values, build_index(contacts_frame(DIRECTORY)))
    monkeypatch.setattr(resolve_module, "_join_outcomes", lambda rows, lookups: None)
    assert resolve_side(values, index).equals(expected)


def test_values_resolved_once_are_remembered_per_fuzzy_setting() -> None:
    index = build_index(contacts_frame(DIRECTORY))
    first = resolve_side(values_frame([(0, 0, "auto", "Catherine Zeta-Jonse")]), index)
    again = resolve_side(values_frame([(5, 0, "auto", "Catherine Zeta-Jonse")]), index)
    fuzzy = resolve_side(values_frame([(0, 0, "auto", "Catherine Zeta-Jonse")]), index, fuzzy=85)
    assert first["reason"].to_list() == again["reason"].to_list() == ["contact_not_found"]
    assert again["row_id"].to_list() == [5]
    assert fuzzy["contact_id"].to_list() == [cid(13)]


@pytest.mark.parametrize("threshold", [-1, 101])
def test_a_fuzzy_threshold_outside_0_100_is_refused(index: ContactIndex, threshold: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        resolve_one("x", index, fuzzy=threshold)
