"""The API key never leaves the process that was given it.

Every command runs as a real subprocess with a key nobody could mistake for anything else,
with --verbose where it has a log and with faults on where it writes, so retries and error
paths run too. The key must appear in no stdout or stderr, and in no file the commands leave
behind: reports, exports, snapshots, and the ledger (its SQLite file, its WAL, and the
compressed plan blobs inside it, decoded). A wrong key must not be echoed either.
"""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import polars as pl
import pytest

from etl.ledger import Ledger
from etl.sandbox import testing
from etl.sandbox.testing import RunningSandbox
from tests.e2e.workload import (
    CLI_TIMEOUT_SECONDS,
    Group,
    Moment,
    cli_command,
    env_for,
    import_killed_at,
    make_groups,
    seed,
    write_files,
)

KEY = "SECRET-KEY-4f1c9e"
WRONG_KEY = "WRONG-KEY-77d2a0"
SECRETS = (KEY.encode(), WRONG_KEY.encode())
GROUP = make_groups(1, people=40)[0]
FAST = ("--rate", "1000", "--concurrency", "8", "--verbose")
LEDGER = ("--state-db", "state.sqlite")


@pytest.fixture
def crm() -> Iterator[RunningSandbox]:
    with testing.start_sandbox(seed([GROUP]), api_key=KEY) as running:
        yield running


def run(crm: RunningSandbox, folder: Path, *args: str, key: str = KEY) -> tuple[int, str]:
    """Run one command; return its exit status and everything it printed."""
    done = subprocess.run(
        cli_command(*args),
        cwd=folder,
        env=env_for(crm, key),
        capture_output=True,
        timeout=CLI_TIMEOUT_SECONDS,
        stdin=subprocess.DEVNULL,
    )
    printed = done.stdout + done.stderr
    assert not any(secret in printed for secret in SECRETS), f"{args[0]} printed a key"
    return done.returncode, printed.decode("utf-8", "replace")


def run_together(crm: RunningSandbox, folder: Path, *commands: tuple[str, ...]) -> list[int]:
    """Independent commands at once: the suite's time goes to interpreter start-up."""
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        return [status for status, _ in pool.map(lambda c: run(crm, folder, *c), commands)]


def sandbox_serve_output(folder: Path) -> bytes:
    """`sandbox serve` with the key, answering a right and a wrong key, then stopped."""
    env = {**os.environ, "LACRM_API_KEY": KEY}
    with subprocess.Popen(
        cli_command("sandbox", "serve", "--port", "0"),
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as server:
        assert server.stdout is not None
        first = server.stdout.readline()
        url = first.decode().strip().removeprefix(testing.READY_PREFIX)
        body = {"Function": "GetContacts", "Parameters": {}}
        with httpx.Client(timeout=10) as client:
            assert client.post(url, json=body, headers={"Authorization": KEY}).status_code == 200
            client.post(url, json=body, headers={"Authorization": WRONG_KEY})
        server.send_signal(signal.SIGINT)
        rest, errors = server.communicate(timeout=10)
    return first + rest + errors


def readable_texts(path: Path) -> Iterator[bytes]:
    """The file's bytes, and what compression or encoding inside it would hide."""
    data = path.read_bytes()
    yield data
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            yield from (archive.read(name) for name in archive.namelist())
    if path.suffix == ".parquet":
        yield frame_text(pl.read_parquet(path))
    if data.startswith(b"SQLite format 3"):
        yield from database_values(path)


def database_values(path: Path) -> Iterator[bytes]:
    """Every value in every table; blobs holding parquet (the stored plans) decoded."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = [
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, bytes):
                        yield value
                        yield decoded_parquet(value)
                    else:
                        yield str(value).encode()


def decoded_parquet(blob: bytes) -> bytes:
    try:
        return frame_text(pl.read_parquet(io.BytesIO(blob)))
    except Exception:  # not parquet: the raw blob was checked already
        return b""


def frame_text(frame: pl.DataFrame) -> bytes:
    return f"{frame.columns}{frame.rows()}".encode()


def leaks(folder: Path) -> list[str]:
    return [
        str(path.relative_to(folder))
        for path in sorted(folder.rglob("*"))
        if path.is_file() and any(s in text for text in readable_texts(path) for s in SECRETS)
    ]


def kill_an_import_midway(crm: RunningSandbox, group: Group, folder: Path) -> str:
    """SIGKILL an import while it writes, so the ledger's WAL still holds its pages."""
    source, mapping = write_files(group, folder)
    args = ("import", str(source), "-m", str(mapping), *LEDGER, "--yes", *FAST)
    moment = Moment("after 10 creates", "CreateRelationship", 10, writing=True)
    assert import_killed_at(moment, crm, cli_command(*args), folder) == -signal.SIGKILL
    wal = folder / "state.sqlite-wal"
    assert wal.is_file() and wal.stat().st_size > 0
    with Ledger(folder / "state.sqlite") as ledger:
        return ledger.runs()[0].run_id


def test_no_command_prints_or_stores_the_api_key(crm: RunningSandbox, tmp_path: Path) -> None:
    work = tmp_path / "work"  # everything the commands leave; the key file lives outside
    work.mkdir()
    source, mapping = write_files(GROUP, work)
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY, encoding="utf-8")
    importing = ("import", str(source), "-m", str(mapping), *LEDGER, *FAST)
    statuses = run_together(
        crm,
        work,
        ("mapping", "init", str(source), "-o", "suggested.yaml"),
        ("contacts", "pull", "-o", "contacts.parquet", *FAST),
        ("export", "-o", "before.xlsx", *FAST),
        (*importing, "--dry-run", "--report-dir", "dry"),
        (*importing, "--dry-run", "--report-dir", "dry-keyfile", "--api-key-file", str(key_file)),
    )
    assert statuses == [0, 0, 0, 0, 0]
    assert run(crm, work, *importing, "--yes", "--report-dir", "wrong", key=WRONG_KEY)[0] == 3

    crm.set_faults(latency=0.01, error_rate=0.2, lost_rate=0.2, fault_seed=5)
    run_id = kill_an_import_midway(crm, GROUP, work)
    assert leaks(work) == []
    assert run(crm, work, "resume", run_id, "--yes", *LEDGER, "--report-dir", "out", *FAST)[0] == 0
    crm.set_faults(latency=0.0, error_rate=0.0, lost_rate=0.0)
    statuses = run_together(
        crm,
        work,
        ("runs", *LEDGER),
        ("report", run_id, *LEDGER, "--report-dir", "again"),
        ("rollback", run_id, *LEDGER),
        ("export", "-o", "after.csv", *FAST),
    )
    assert statuses == [0, 0, 0, 0]
    assert run(crm, work, "rollback", run_id, "--yes", *LEDGER, *FAST)[0] == 0

    assert not any(secret in sandbox_serve_output(work) for secret in SECRETS)
    assert (work / "out" / "report.csv").is_file() and (work / "state.sqlite").is_file()
    assert leaks(work) == []


def test_key_files_from_notepad_and_powershell_work_and_a_garbled_key_is_refused(
    crm: RunningSandbox, tmp_path: Path
) -> None:
    notepad, powershell, garbled = tmp_path / "n.txt", tmp_path / "p.txt", tmp_path / "g.txt"
    notepad.write_bytes(b"\xef\xbb\xbf" + KEY.encode() + b"\r\n")  # UTF-8 with BOM, CRLF
    powershell.write_bytes((KEY + "\r\n").encode("utf-16"))  # `echo KEY > p.txt`: UTF-16 BOM
    garbled.write_text(KEY + "\u00e9", encoding="utf-8")
    for key_file in (notepad, powershell):
        pulled = ("contacts", "pull", "-o", f"{key_file.stem}.parquet", "--api-key-file")
        status, output = run(crm, tmp_path, *pulled, str(key_file), key="")
        assert status == 0, output
    status, output = run(crm, tmp_path, "contacts", "pull", "-o", "g.parquet", "--api-key-file",
                         str(garbled), key="")  # fmt: skip
    assert status == 2
    assert "characters an API key cannot have" in output
    assert "Traceback" not in output and KEY not in output
