"""Faults end to end through the real `lacrm-etl import`: the CRM answering 500s, losing
responses, answering 429 to a storm, going down for a while, and answering slower than the
client waits.

Whatever happens, nothing is lost and nothing is created twice: the run either completes, or
stops with exit 3 and `lacrm-etl resume RUN_ID --yes` completes it, to the exact end state.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from etl.lacrm import LacrmClient, LacrmError
from etl.ledger import Ledger
from etl.sandbox import testing
from etl.sandbox.testing import RunningSandbox
from etl.write import WriteStats, execute
from tests.e2e.workload import (
    CLI_TIMEOUT_SECONDS,
    Group,
    assert_exact_end_state,
    cli_command,
    env_for,
    held,
    import_args,
    make_groups,
    resume_args,
    run_cli,
    seed,
    write_files,
)

NO_FAULTS: dict[str, Any] = {
    "latency": 0.0,
    "rate_limit": 0,
    "error_rate": 0.0,
    "lost_rate": 0.0,
    "down": False,
}
MAX_RESUMES = 3
POLL_SECONDS = 0.01
GROUPS = make_groups(6)


@pytest.fixture(scope="module")
def shared_crm() -> Iterator[RunningSandbox]:
    with testing.start_sandbox(seed(GROUPS)) as running:
        yield running


@pytest.fixture
def crm(shared_crm: RunningSandbox) -> Iterator[RunningSandbox]:
    shared_crm.set_faults(**NO_FAULTS)
    yield shared_crm
    shared_crm.set_faults(**NO_FAULTS)


def finish(
    crm: RunningSandbox, folder: Path, result: subprocess.CompletedProcess[str]
) -> list[int]:
    """Resume while the run stops with exit 3, as a user would; return every exit status."""
    statuses = [result.returncode]
    for _ in range(MAX_RESUMES):
        if statuses[-1] != 3:
            break
        assert "lacrm-etl resume" in result.stderr, result.stderr
        result = run_cli(crm, folder, *resume_args(only_run(folder)))
        statuses.append(result.returncode)
    assert statuses[-1] == 0, result.stderr
    return statuses


def only_run(folder: Path) -> str:
    with Ledger(folder / "state.sqlite") as ledger:
        runs = ledger.runs()
    assert len(runs) == 1
    return runs[0].run_id


def import_group(crm: RunningSandbox, group: Group, folder: Path) -> list[int]:
    source, mapping = write_files(group, folder)
    result = run_cli(crm, folder, *import_args(source, mapping))
    return finish(crm, folder, result)


def test_500s_and_lost_responses_end_in_the_exact_end_state(
    crm: RunningSandbox, tmp_path: Path
) -> None:
    crm.set_faults(error_rate=0.2, lost_rate=0.2, fault_seed=3)
    import_group(crm, GROUPS[0], tmp_path)
    counts = crm.state()["fault_counts"]
    assert counts.get("server_errors", 0) > 0 and counts.get("lost", 0) > 0
    assert_exact_end_state(crm, GROUPS[0], tmp_path / "out")


def test_a_429_storm_is_ridden_out(crm: RunningSandbox, tmp_path: Path) -> None:
    # The client asks for 1,000 requests/s; the CRM allows 40 and answers the rest 429.
    crm.set_faults(rate_limit=40)
    assert import_group(crm, GROUPS[1], tmp_path) == [0]
    assert crm.state()["fault_counts"].get("rate_limited", 0) > 0
    assert_exact_end_state(crm, GROUPS[1], tmp_path / "out")


def start_import(crm: RunningSandbox, group: Group, folder: Path) -> subprocess.Popen[str]:
    source, mapping = write_files(group, folder)
    return subprocess.Popen(
        cli_command(*import_args(source, mapping)),
        cwd=folder,
        env=env_for(crm),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_creates(crm: RunningSandbox, count: int, process: subprocess.Popen[str]) -> None:
    before = crm.state()["calls"].get("CreateRelationship", 0)
    deadline = time.monotonic() + CLI_TIMEOUT_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        if crm.state()["calls"].get("CreateRelationship", 0) - before >= count:
            return
        time.sleep(POLL_SECONDS)
    raise AssertionError("the import never reached its write phase")


def completed(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    stdout, stderr = process.communicate(timeout=CLI_TIMEOUT_SECONDS)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_the_crm_down_for_a_while_then_back_loses_and_duplicates_nothing(
    crm: RunningSandbox, tmp_path: Path
) -> None:
    crm.set_faults(latency=0.01)
    process = start_import(crm, GROUPS[2], tmp_path)
    wait_for_creates(crm, 20, process)
    crm.set_faults(down=True)
    back = threading.Timer(2.0, lambda: crm.set_faults(down=False))
    back.start()
    try:
        statuses = finish(crm, tmp_path, completed(process))
    finally:
        back.cancel()
    assert crm.state()["fault_counts"].get("dropped", 0) > 0
    assert statuses[-1] == 0
    assert_exact_end_state(crm, GROUPS[2], tmp_path / "out")


def test_the_crm_down_past_every_retry_stops_with_exit_3_then_resume_completes(
    crm: RunningSandbox, tmp_path: Path
) -> None:
    crm.set_faults(latency=0.01)
    process = start_import(crm, GROUPS[3], tmp_path)
    wait_for_creates(crm, 30, process)
    crm.set_faults(down=True)
    stopped = completed(process)
    crm.set_faults(down=False)
    assert stopped.returncode == 3, stopped.stderr
    assert "Traceback" not in stopped.stderr
    run_id = only_run(tmp_path)
    assert f"lacrm-etl resume {run_id}" in stopped.stderr
    assert finish(crm, tmp_path, stopped) == [3, 0]
    assert_exact_end_state(crm, GROUPS[3], tmp_path / "out")


# --- slow responses past the client's timeout ------------------------------------------
# The CLI keeps the client's 30 s timeout, so this runs the same writer through the library
# with a short one.

CLIENT_TIMEOUT = 0.3


def plan_for(group: Group) -> pl.DataFrame:
    triples = group.employment()
    return pl.DataFrame(
        {
            "row_id": pl.Series(range(len(triples)), dtype=pl.UInt32),
            "status": ["to_create"] * len(triples),
            "contact_id_1": [a for a, _, _ in triples],
            "contact_id_2": [b for _, b, _ in triples],
            "relationship_id": pl.Series([None] * len(triples), dtype=pl.String),
            "note": [note for *_, note in triples],
        }
    )


async def write_with_timeout(crm: RunningSandbox, ledger: Ledger, run_id: str) -> WriteStats:
    client = LacrmClient(
        crm.api_key,
        crm.url,
        rate=1000.0,
        concurrency=8,
        timeout=CLIENT_TIMEOUT,
        backoff_base=0.05,
    )
    async with client:
        return await execute(client, ledger, run_id)


def fast_again_after_creates(crm: RunningSandbox, count: int) -> threading.Thread:
    """Latency back to 0 once `count` creates have arrived (they keep the latency they got)."""
    before = crm.state()["calls"].get("CreateRelationship", 0)

    def watch() -> None:
        deadline = time.monotonic() + CLI_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if crm.state()["calls"].get("CreateRelationship", 0) - before >= count:
                break
            time.sleep(POLL_SECONDS)
        crm.set_faults(latency=0.0)

    return threading.Thread(target=watch, daemon=True)


def test_responses_slower_than_the_timeout_then_fast_again_create_each_pair_once(
    crm: RunningSandbox, tmp_path: Path
) -> None:
    group = GROUPS[4]
    # The first creates commit after the client gave up on them; the reads that settle them,
    # and everything after, answer at once. Waiting on the sandbox's count, not a clock, keeps
    # the slow window from closing before any create arrives on a fast machine.
    crm.set_faults(latency=CLIENT_TIMEOUT * 3)
    fast = fast_again_after_creates(crm, 8)
    settled = 0
    with Ledger(tmp_path / "state.sqlite") as ledger:
        run_id = ledger.create_run(settings={}, fingerprint={}, plan=plan_for(group), dry_run=False)
        fast.start()
        try:
            for _ in range(MAX_RESUMES):
                try:
                    stats = asyncio.run(
                        asyncio.wait_for(write_with_timeout(crm, ledger, run_id), 60)
                    )
                    settled += stats.settled_created + stats.settled_absent
                    break
                except LacrmError:
                    continue  # stopped, resumable: run it again, as `resume` would
        finally:
            fast.join()
        assert ledger.run(run_id).state == "finished"
    assert settled > 0, "no create outlived the client's timeout"
    assert held(crm, group) == group.expected()
    assert crm.state()["duplicate_pairs"] == []
