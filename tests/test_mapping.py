"""mapping: the YAML file, column checks, side values, note templates, suggestions."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from etl.mapping import (
    Key,
    MappingError,
    Side,
    load_mapping,
    parse_mapping,
    parse_template,
    render_notes,
    side_values,
    suggest_mapping,
)
from etl.spreadsheet import neutralise_formulas

ROWS = pl.DataFrame(
    {
        "row_id": pl.Series([0, 1, 2], dtype=pl.UInt32),
        "Person": ["0123456789012345678901234567890", "ann@x.org", None],
        "First": ["Ann", None, None],
        "Last": ["Lee", "Smith", None],
        "Email": ["a@x.org", None, "c@x.org"],
        "Relationship": ["Friend", None, None],
        "Notes": ["met in 2019", "old colleague", None],
    }
)
COLUMNS = [name for name in ROWS.columns if name != "row_id"]


def write(folder: Path, text: str) -> Path:
    path = folder / "mapping.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_the_design_example(tmp_path):
    path = write(
        tmp_path,
        """
contact1: {column: "Person", match: auto}
contact2: {match: [email, name], column: {email: "Email", name: "Last"}}
note: "{Relationship}: {Notes}"
fuzzy: 90
""",
    )
    mapping = load_mapping(path)
    assert mapping.contact1 == Side((Key("auto", ("Person",)),))
    assert mapping.contact2 == Side((Key("email", ("Email",)), Key("name", ("Last",))))
    assert mapping.note == "{Relationship}: {Notes}"
    assert mapping.fuzzy == 90.0
    mapping.check_columns(COLUMNS)


def test_split_names_and_short_forms():
    mapping = parse_mapping(
        {"contact1": {"first_name": "First", "last_name": "Last"}, "contact2": "Person"}
    )
    assert mapping.contact1 == Side((Key("person", ("First", "Last")),))
    assert mapping.contact2 == Side((Key("auto", ("Person",)),))
    assert mapping.note is None and mapping.fuzzy is None


@pytest.mark.parametrize(
    ("fuzzy", "expected"), [(False, None), (None, None), (0, None), (85.5, 85.5)]
)
def test_fuzzy_values(fuzzy, expected):
    mapping = parse_mapping({"contact1": "A", "contact2": "B", "fuzzy": fuzzy})
    assert mapping.fuzzy == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("contact1: [", "not valid YAML at line"),
        ("", "empty"),
        ("- a\n- b", "key: value"),
        ("contact1: Person", "contact2 is missing"),
        ("contact2: Person", "contact1 is missing"),
        ("contact1: A\ncontact2: B\ncontact3: C", "unknown setting contact3"),
        ("contact1: {column: A, match: phone}\ncontact2: B", "unknown match mode 'phone'"),
        ("contact1: {column: A, mode: id}\ncontact2: B", "unknown key mode"),
        ("contact1: {match: id}\ncontact2: B", "needs a column"),
        ("contact1: {first_name: F}\ncontact2: B", "first_name and last_name"),
        ("contact1: {first_name: F, last_name: L, match: email}\ncontact2: B", "person, not email"),
        ("contact1: {match: [email, id], column: {email: E}}\ncontact2: B", "one column for each"),
        ("contact1: A\ncontact2: B\nfuzzy: true", "fuzzy must be false or"),
        ("contact1: A\ncontact2: B\nfuzzy: 101", "from 0 to 100"),
        ("contact1: A\ncontact2: B\nfuzzy: high", "fuzzy must be"),
        ("contact1: A\ncontact2: B\nnote: [1]", "note must be a text template"),
    ],
)
def test_malformed_files(tmp_path, text, message):
    with pytest.raises(MappingError, match=message) as caught:
        load_mapping(write(tmp_path, text))
    assert str(tmp_path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_mapping_file(tmp_path):
    with pytest.raises(MappingError, match="no such mapping file"):
        load_mapping(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "template",
    [
        "{Notes.__class__}",
        "{0}",
        "{}",
        "{Notes:>10}",
        "{Notes!r}",
        "{Notes[0]}",
        "{Amount:.2f}",
        "{ {Notes} }",
        "text } more",
        "{Notes",
    ],
)
def test_templates_other_than_column_references_are_refused(template):
    with pytest.raises(MappingError, match="note template"):
        parse_mapping({"contact1": "A", "contact2": "B", "note": template})


def test_template_literals_and_braces():
    parsed = parse_template("{{{Relationship}}}: {Notes} (100%)")
    assert parsed.parts == (
        ("text", "{"),
        ("column", "Relationship"),
        ("text", "}: "),
        ("column", "Notes"),
        ("text", " (100%)"),
    )


def test_a_mapping_follows_the_columns_extraction_renamed():
    mapping = parse_mapping(
        {
            "contact1": "row",
            "contact2": {"match": ["email", "name"], "column": {"email": "source", "name": "B"}},
            "note": "{{{source}}} from {source}, line {row}: {Notes}",
        }
    )
    renamed = mapping.renamed({"source": "source (input)", "row": "row (input)"})
    assert renamed.contact1 == Side((Key("auto", ("row (input)",)),))
    assert renamed.contact2 == Side((Key("email", ("source (input)",)), Key("name", ("B",))))
    assert renamed.note == "{{{source (input)}}} from {source (input)}, line {row (input)}: {Notes}"
    assert parse_template(renamed.note).parts[0] == ("text", "{")
    assert mapping.renamed({}) is mapping


def test_check_columns_offers_the_closest_names():
    mapping = parse_mapping({"contact1": "Persn", "contact2": "Email"})
    with pytest.raises(MappingError) as caught:
        mapping.check_columns(COLUMNS)
    message = str(caught.value)
    assert 'contact1 names the column "Persn"' in message
    assert 'Did you mean "Person"' in message
    assert 'The columns are: "Person", "First"' in message


def test_check_columns_covers_the_note():
    mapping = parse_mapping({"contact1": "Person", "contact2": "Email", "note": "{Notse}"})
    with pytest.raises(MappingError, match=r'note names the column "Notse".*"Notes"'):
        mapping.check_columns(COLUMNS)


def test_side_values_one_row_per_row_and_key():
    side = parse_mapping(
        {
            "contact1": {
                "match": ["email", "person"],
                "column": {
                    "email": "Email",
                    "person": {"first_name": "First", "last_name": "Last"},
                },
            },
            "contact2": "Person",
        }
    ).contact1
    frame = side_values(ROWS, side)
    assert frame.schema == pl.Schema(
        {"row_id": pl.UInt32, "attempt": pl.UInt8, "mode": pl.String, "value": pl.String}
    )
    assert frame.rows() == [
        (0, 1, "email", "a@x.org"),
        (0, 2, "person", "Ann Lee"),
        (1, 1, "email", None),
        (1, 2, "person", "Smith"),
        (2, 1, "email", "c@x.org"),
        (2, 2, "person", None),
    ]


def test_ids_are_never_numbers():
    side = Side((Key("id", ("Person",)),))
    assert side_values(ROWS, side)["value"][0] == "0123456789012345678901234567890"


def test_render_notes():
    notes = render_notes(ROWS, "{Relationship}: {Notes}")
    assert notes.name == "note"
    assert notes.dtype == pl.String
    assert notes.to_list() == ["Friend: met in 2019", ": old colleague", None]
    assert render_notes(ROWS, None).to_list() == [None, None, None]
    assert render_notes(ROWS, "Imported").to_list() == ["Imported"] * 3


@given(
    st.text(
        alphabet=st.characters(categories=("L", "N", "P", "S"), exclude_characters="{}"),
        max_size=30,
    )
)
def test_rendering_never_evaluates_user_text(text):
    rows = pl.DataFrame({"row_id": pl.Series([0], dtype=pl.UInt32), "Notes": [text]})
    rendered = render_notes(rows, "{{Notes.__class__}} {Notes}").to_list()
    assert rendered == [("{Notes.__class__} " + text).strip()]


def test_suggest_mapping_round_trips(tmp_path):
    columns = ["Contact", "Related To", "E-mail", "Relationship", "Notes", "Company"]
    text = suggest_mapping(columns, "people.csv")
    assert text.startswith("# lacrm-etl mapping for people.csv")
    mapping = parse_mapping(yaml.safe_load(text))
    mapping.check_columns(columns)
    assert mapping.contact1.keys == (Key("email", ("E-mail",)), Key("name", ("Contact",)))
    assert mapping.contact2.keys == (Key("auto", ("Related To",)),)
    assert mapping.note == "{Relationship}: {Notes}"
    assert mapping.fuzzy is None


def test_suggest_mapping_with_split_names_and_company():
    text = suggest_mapping(["First Name", "Last Name", "Company"])
    mapping = parse_mapping(yaml.safe_load(text))
    assert mapping.contact1.keys == (Key("person", ("First Name", "Last Name")),)
    assert mapping.contact2.keys == (Key("company", ("Company",)),)


def test_suggest_mapping_without_guesses_fails_clearly_when_used():
    text = suggest_mapping(["Alpha", "Beta"])
    mapping = parse_mapping(yaml.safe_load(text))
    with pytest.raises(MappingError, match="CHANGE ME"):
        mapping.check_columns(["Alpha", "Beta"])


def test_suggest_mapping_quotes_awkward_names():
    columns = ["Contact #", "To", "Notes: internal"]
    mapping = parse_mapping(yaml.safe_load(suggest_mapping(columns)))
    assert mapping.contact1.keys == (Key("auto", ("Contact #",)),)
    assert mapping.contact2.keys == (Key("auto", ("To",)),)
    mapping.check_columns(columns)


def test_a_note_read_back_from_our_own_reports_reaches_the_crm_as_written() -> None:
    written = pl.DataFrame(
        {
            "Rel": ["=Boss", "+1 555 0100 (mobile)", "friend", "'quoted"],
            "Notes": ["-- call", "@x", None, "ok"],
        }
    )
    read_back = neutralise_formulas(written)  # what failed.csv and exports hold
    assert read_back["Rel"][0] == "'=Boss"
    notes = render_notes(read_back, "{Rel}: {Notes}").to_list()
    assert notes == ["=Boss: -- call", "+1 555 0100 (mobile): @x", "friend:", "'quoted: ok"]


def test_a_column_missing_because_the_header_is_lower_points_at_header_row() -> None:
    mapping = parse_mapping({"contact1": "Person", "contact2": "Related To"})
    title_row = ["Exported from OldCRM", "Column B"]
    with pytest.raises(MappingError, match=r"--header-row N says which row it is"):
        mapping.check_columns(title_row)
