"""Bad input through the real command line: exit 2, one line saying what to do, no traceback,
and not one call to the CRM.

The commands run in-process through click's CliRunner (a subprocess per case would cost a
second each); the CRM is a real sandbox that counts every call it receives.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from openpyxl import Workbook

from etl.cli import cli
from etl.sandbox import testing
from etl.sandbox.testing import RunningSandbox

GOOD_CSV = "Person,Related To,Relationship,Notes\nJohn Doe,Jane Doe,Spouse,Married\n"
GOOD_MAPPING = """\
contact1: {column: "Person", match: name}
contact2: {column: "Related To", match: name}
note: "{Relationship}: {Notes}"
"""
OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


@dataclass(frozen=True)
class Case:
    """A bad source or mapping: the files it writes and the words its message must hold."""

    name: str
    source: Callable[[Path], Path]
    mapping: Callable[[Path], Path]
    message: str
    extra: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.name


def text_file(name: str, content: str) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = folder / name
        path.write_text(content, encoding="utf-8")
        return path

    return write


def bytes_file(name: str, content: bytes) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(content)
        return path

    return write


def absent(name: str) -> Callable[[Path], Path]:
    return lambda folder: folder / name


def zip_without_workbook(folder: Path) -> Path:
    path = folder / "archive.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not a spreadsheet")
    return path


def people_workbook(folder: Path) -> Path:
    book = Workbook()
    sheet = book.active
    sheet.title = "People"
    for line in GOOD_CSV.splitlines():
        sheet.append(line.split(","))
    path = folder / "book.xlsx"
    book.save(path)
    return path


def mapping(text: str) -> Callable[[Path], Path]:
    return text_file("mapping.yaml", text)


GOOD_SOURCE = text_file("people.csv", GOOD_CSV)
GOOD = mapping(GOOD_MAPPING)
ENCRYPTED = OLE2_MAGIC + b"\0" * 504 + "EncryptedPackage".encode("utf-16-le") + b"\0" * 512

CASES = [
    # the extraction issue's cases
    Case("missing file", absent("nope.csv"), GOOD, "no such file"),
    Case("empty file", text_file("empty.csv", ""), GOOD, "the file is empty"),
    Case("header only", text_file("h.csv", "Person,Related To\n"), GOOD, "no data rows"),
    Case(
        "text file named .xlsx",
        text_file("fake.xlsx", GOOD_CSV),
        GOOD,
        "not an Excel workbook (it looks like a text file)",
    ),
    Case("zip that is not a workbook", zip_without_workbook, GOOD, "not an Excel workbook"),
    Case("encrypted workbook", bytes_file("locked.xlsx", ENCRYPTED), GOOD, "password-protected"),
    Case(
        "duplicate header names",
        text_file("dup.csv", "Person,Person\nJohn Doe,Jane Doe\n"),
        GOOD,
        '"Person" twice',
    ),
    Case("unsupported extension", bytes_file("data.pdf", b"%PDF-1.4"), GOOD, "unsupported"),
    Case(
        "mapped column absent",
        text_file("typo.csv", "Persn,Related To,Relationship,Notes\nJohn Doe,Jane Doe,a,b\n"),
        GOOD,
        'Did you mean "Persn"',
    ),
    Case(
        "header row past the end",
        text_file("short.csv", GOOD_CSV),
        GOOD,
        "there is no row 9",
        ("--header-row", "9"),
    ),
    Case("unknown sheet", people_workbook, GOOD, 'no sheet "Nope"', ("--sheet", "Nope")),
    # the mapping file's cases
    Case("missing mapping file", GOOD_SOURCE, absent("nope.yaml"), "no such mapping file"),
    Case("malformed mapping", GOOD_SOURCE, mapping("contact1: [\n"), "not valid YAML"),
    Case("mapping names no contact", GOOD_SOURCE, mapping("fuzzy: false\n"), "contact1"),
    Case(
        "a side without a column",
        GOOD_SOURCE,
        mapping("contact1: {match: id}\ncontact2: Person\n"),
        "needs a column",
    ),
    Case(
        "unknown match mode",
        GOOD_SOURCE,
        mapping("contact1: {column: Person, match: phone}\ncontact2: Person\n"),
        "unknown match mode 'phone'",
    ),
    Case(
        "note names an absent column",
        GOOD_SOURCE,
        mapping(GOOD_MAPPING.replace("{Notes}", "{Remarks}")),
        '"Remarks", which is not in the input',
    ),
    Case(
        "note reaches into an attribute",
        GOOD_SOURCE,
        mapping(GOOD_MAPPING.replace("{Notes}", "{Notes.__class__}")),
        "not a column reference",
    ),
    Case(
        "note with a positional field",
        GOOD_SOURCE,
        mapping(GOOD_MAPPING.replace("{Notes}", "{0}")),
        "not a column reference",
    ),
    Case(
        "note with a format spec",
        GOOD_SOURCE,
        mapping(GOOD_MAPPING.replace("{Notes}", "{Notes!r:>99999999}")),
        "note template",
    ),
]


@pytest.fixture(scope="module")
def crm() -> Iterator[RunningSandbox]:
    with testing.start_sandbox(testing.example_seed()) as running:
        yield running


def invoke(crm: RunningSandbox, folder: Path, *args: str, key: str | None = None) -> Result:
    env = {"LACRM_API_URL": crm.url, "LACRM_API_KEY": crm.api_key if key is None else key}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=True)


def assert_refused(result: Result, message: str) -> None:
    """Exit 2 through click's own error path: one `Error: ...` line and no traceback."""
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert message in lines[0]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_exits_2_with_one_line_and_no_call_to_the_crm(
    case: Case, crm: RunningSandbox, tmp_path: Path
) -> None:
    calls_before = crm.state()["calls"]
    source, mapping_path = case.source(tmp_path), case.mapping(tmp_path)
    args = ["import", str(source), "--mapping", str(mapping_path), "--yes", *case.extra]
    assert_refused(invoke(crm, tmp_path, *args, "--state-db", "state.sqlite"), case.message)
    assert crm.state()["calls"] == calls_before
    assert not (tmp_path / "reports").exists()


def test_a_template_is_never_evaluated_even_in_a_dry_run(
    crm: RunningSandbox, tmp_path: Path
) -> None:
    """`{Notes.__class__}` would render "<class 'str'>" through str.format: it must not run."""
    source = GOOD_SOURCE(tmp_path)
    hostile = mapping(GOOD_MAPPING.replace("{Notes}", "{Notes.__class__.__mro__}"))(tmp_path)
    result = invoke(crm, tmp_path, "import", str(source), "-m", str(hostile), "--dry-run")
    assert_refused(result, "not a column reference")
    assert "class" not in result.stdout
