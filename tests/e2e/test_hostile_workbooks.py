"""Hostile workbooks through the real command line: refused with exit 2, in bounded memory.

Each case runs `python -m etl import` as a subprocess and reads its peak RSS from wait4, so a
reader that inflates a bomb shows up as memory, not as a guess. Nothing here is a timing test
(a child still running after a minute is killed and fails the test, so a hang cannot stall CI);
the bombs are sized so that reading one in full would blow the memory bound several times over.
"""

from __future__ import annotations

import os
import resource
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

MAX_PEAK_RSS_BYTES = 500 * 1024**2
# Not a timing test: a bound, so a reader that chews on a bomb fails instead of stalling CI.
DEADLINE_SECONDS = 60.0
# Nothing listens here; the CLI must refuse the file before it would ever connect.
NOWHERE = "http://127.0.0.1:9/v2/"
MAPPING = 'contact1: {column: "Person", match: name}\ncontact2: {column: "Related To"}\n'

DECLARATION = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
DOC_RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PACKAGE_RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
SHEET = "xl/worksheets/sheet1.xml"
STRINGS = "xl/sharedStrings.xml"
# Ten levels of ten: the last entity expands to 3 * 10**9 characters.
LAUGHS = (
    '<!DOCTYPE lolz [<!ENTITY lol0 "lol">'
    + "".join(f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">' for n in range(1, 10))
    + "]>"
)
# A row referring to shared strings 2 and 3 ("Ann", "Bob"): a reader keeps every one it sees.
ROW = b'<row><c t="s"><v>2</v></c><c t="s"><v>3</v></c></row>'
BOMB_BYTES = 256 * 1024**2


def workbook_parts(strings: list[str]) -> dict[str, str]:
    """A minimal valid .xlsx with one sheet and shared strings, written by hand."""
    shared = "".join(f"<si><t>{text}</t></si>" for text in strings)
    rel = f"{DOC_RELS}/"
    return {
        "[Content_Types].xml": DECLARATION
        + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="xml" ContentType="application/xml"/></Types>',
        "_rels/.rels": DECLARATION
        + f'<Relationships xmlns="{PACKAGE_RELS}"><Relationship Id="rId1" '
        f'Type="{rel}officeDocument" Target="xl/workbook.xml"/></Relationships>',
        "xl/workbook.xml": DECLARATION
        + f'<workbook xmlns="{MAIN_NS}" xmlns:r="{DOC_RELS}"><sheets>'
        '<sheet name="People" sheetId="1" r:id="rId1"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels": DECLARATION + f'<Relationships xmlns="{PACKAGE_RELS}">'
        f'<Relationship Id="rId1" Type="{rel}worksheet" Target="worksheets/sheet1.xml"/>'
        f'<Relationship Id="rId2" Type="{rel}sharedStrings" Target="sharedStrings.xml"/>'
        "</Relationships>",
        STRINGS: DECLARATION + f'<sst xmlns="{MAIN_NS}">{shared}</sst>',
        SHEET: DECLARATION + f'<worksheet xmlns="{MAIN_NS}"><sheetData>'
        '<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c></row>'
        '<row r="2"><c r="A2" t="s"><v>2</v></c><c r="B2" t="s"><v>3</v></c></row>'
        "</sheetData></worksheet>",
    }


PEOPLE = ["Person", "Related To", "Ann", "Bob"]


def save(path: Path, parts: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in parts.items():
            archive.writestr(name, text)
    return path


def with_doctype(member: str, strings: list[str] = PEOPLE) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        parts = workbook_parts(strings)
        parts[member] = parts[member].replace(DECLARATION, DECLARATION + LAUGHS, 1)
        return save(folder / "laughs.xlsx", parts)

    return write


def rows_bomb(folder: Path, declared_size: int | None = None) -> Path:
    """A sheet of BOMB_BYTES of rows; with `declared_size`, the zip's headers claim that instead.

    Deflate shrinks the repeated rows about a thousandfold, so the file stays small.
    """
    path = folder / "bomb.xlsx"
    parts = workbook_parts(PEOPLE)
    head, tail = parts.pop(SHEET).split("</sheetData>")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in parts.items():
            archive.writestr(name, text)
        with archive.open(SHEET, "w", force_zip64=declared_size is None) as member:
            member.write(head.encode())
            block = ROW * ((1 << 20) // len(ROW))
            for _ in range(BOMB_BYTES // len(block)):
                member.write(block)
            member.write(f"</sheetData>{tail}".encode())
    if declared_size is not None:
        declare_size(path, SHEET, declared_size)
    return path


def declare_size(path: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size of `member` in its local and central headers."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    for signature, size_at, name_at, length_at in (
        (b"PK\x03\x04", 22, 30, 26),
        (b"PK\x01\x02", 24, 46, 28),
    ):
        start = data.find(signature)
        while start >= 0:
            (length,) = struct.unpack_from("<H", data, start + length_at)
            if data[start + name_at : start + name_at + length] == name:
                struct.pack_into("<I", data, start + size_at, size)
            start = data.find(signature, start + 4)
    path.write_bytes(bytes(data))


def lying_bomb(folder: Path) -> Path:
    return rows_bomb(folder, declared_size=4096)


@dataclass(frozen=True)
class Hostile:
    name: str
    make: Callable[[Path], Path]
    message: str

    def __str__(self) -> str:
        return self.name


HOSTILE = [
    Hostile(
        "entity bomb in shared strings",
        with_doctype(STRINGS, ["Person", "Related To", "&lol9;", "Bob"]),
        "cannot be read",
    ),
    Hostile("entity bomb in a sheet", with_doctype(SHEET), "cannot be read"),
    Hostile("entity bomb in the workbook", with_doctype("xl/workbook.xml"), "cannot be read"),
    Hostile("decompression bomb", rows_bomb, "refused"),
    Hostile("decompression bomb with a lying size", lying_bomb, "refused"),
]


@dataclass(frozen=True)
class Finished:
    returncode: int
    stderr: str
    peak_rss_bytes: int


def import_measured(source: Path, folder: Path) -> Finished:
    """Run the import as a child and return its exit status, stderr and peak RSS."""
    mapping = folder / "mapping.yaml"
    mapping.write_text(MAPPING, encoding="utf-8")
    stderr_path = folder / "stderr.txt"
    command = [sys.executable, "-m", "etl", "import", str(source), "-m", str(mapping), "--yes"]
    env = {**os.environ, "LACRM_API_URL": NOWHERE, "LACRM_API_KEY": "unused-key"}
    with stderr_path.open("wb") as stderr:
        child = subprocess.Popen(
            command,
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        status, usage = wait_or_kill(child, DEADLINE_SECONDS)
        child.returncode = os.waitstatus_to_exitcode(status)
    return Finished(child.returncode, stderr_path.read_text(), usage.ru_maxrss * 1024)


def wait_or_kill(
    child: subprocess.Popen[bytes], seconds: float
) -> tuple[int, resource.struct_rusage]:
    """wait4 for the child; a child still running after `seconds` is killed and the test fails."""
    deadline = time.monotonic() + seconds
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            return status, usage
        if time.monotonic() > deadline:
            child.kill()
            os.wait4(child.pid, 0)
            pytest.fail(f"the import still ran after {seconds:.0f} s: the file was not refused")
        time.sleep(0.05)


@pytest.mark.parametrize("hostile", HOSTILE, ids=str)
def test_a_hostile_workbook_is_refused_in_bounded_memory(hostile: Hostile, tmp_path: Path) -> None:
    source = hostile.make(tmp_path)
    finished = import_measured(source, tmp_path)
    assert finished.peak_rss_bytes < MAX_PEAK_RSS_BYTES, f"{finished.peak_rss_bytes:,} bytes"
    assert finished.returncode == 2, finished.stderr
    assert "Traceback" not in finished.stderr
    assert len(finished.stderr.strip().splitlines()) == 1, finished.stderr
    assert hostile.message in finished.stderr
