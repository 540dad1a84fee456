"""`lacrm-etl resume` through the real CLI: from another working folder, after the input
changed, and while another process writes the same run (refused: two writers of one run could
create a pair twice)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from etl.ledger import Ledger
from etl.sandbox.testing import RunningSandbox
from tests.e2e.conftest import StartSandbox
from tests.e2e.workload import (
    CLI_TIMEOUT_SECONDS,
    FAST,
    assert_exact_end_state,
    calls_of,
    cli_command,
    env_for,
    held,
    import_args,
    make_groups,
    report_reasons,
    resume_args,
    run_cli,
    seed,
    write_files,
)

GROUPS = make_groups(6, people=30)
LEDGER_ARGS = ("--state-db", "state.sqlite")


def plan_only(crm: RunningSandbox, folder: Path, source: str) -> str:
    """Plan an import from `folder` with relative paths, without writing; return its run id."""
    args = ["import", source, "--mapping", "mapping.yaml", "--state-db", "state.sqlite", *FAST]
    planned = run_cli(crm, folder, *args)
    assert planned.returncode == 2, planned.stderr  # no terminal, no --yes: the plan stays
    with Ledger(folder / "state.sqlite") as ledger:
        (run,) = ledger.runs()
    assert f"lacrm-etl resume {run.run_id} --yes" in planned.stderr
    return run.run_id


def resume(
    crm: RunningSandbox, cwd: Path, state_db: Path, run_id: str
) -> subprocess.CompletedProcess[str]:
    args = ["resume", run_id, "--yes", "--state-db", str(state_db), "--report-dir", "out"]
    return run_cli(crm, cwd, *args, *FAST)


def start_import(crm: RunningSandbox, cwd: Path, *args: str) -> subprocess.Popen[str]:
    """The CLI in the background, its stderr kept."""
    return subprocess.Popen(
        cli_command(*args),
        cwd=cwd,
        env=env_for(crm),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_the_first_create(crm: RunningSandbox, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + CLI_TIMEOUT_SECONDS
    while calls_of(crm, "CreateRelationship") == 0 and time.monotonic() < deadline:
        assert process.poll() is None, "the import ended before it wrote"
        time.sleep(0.01)


def test_resume_from_another_working_folder_finds_the_inputs(
    start_sandbox: StartSandbox, tmp_path: Path
) -> None:
    crm = start_sandbox(seed=seed(GROUPS))
    group, folder, elsewhere = GROUPS[0], tmp_path / "inputs", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    source, _ = write_files(group, folder)
    run_id = plan_only(crm, folder, source.name)

    resumed = resume(crm, elsewhere, folder / "state.sqlite", run_id)

    assert resumed.returncode == 0, resumed.stderr
    assert_exact_end_state(crm, group, elsewhere / "out")


def test_resume_after_the_input_changed_is_a_one_line_user_error(
    start_sandbox: StartSandbox, tmp_path: Path
) -> None:
    crm = start_sandbox(seed=seed(GROUPS))
    group = GROUPS[1]
    source, mapping = write_files(group, tmp_path)
    run_id = plan_only(crm, tmp_path, source.name)
    relationships = crm.state()["relationships"]
    source.write_text(source.read_text(encoding="utf-8") + "x,y,z\n", encoding="utf-8")
    mapping.unlink()

    resumed = resume(crm, tmp_path, tmp_path / "state.sqlite", run_id)

    assert resumed.returncode == 2, resumed.stderr
    assert "Traceback" not in resumed.stderr
    lines = resumed.stderr.strip().splitlines()
    assert len(lines) == 1, resumed.stderr
    assert f"run {run_id} cannot be resumed" in lines[0]
    assert f"{source.resolve()} changed" in lines[0]
    assert f"{mapping.resolve()} no longer exists" in lines[0]
    assert "lacrm-etl import" in lines[0]
    assert crm.state()["relationships"] == relationships
    assert crm.state()["calls"].get("CreateRelationship", 0) == 0


def test_a_second_process_cannot_write_a_run_while_the_first_writes_it(
    start_sandbox: StartSandbox, tmp_path: Path
) -> None:
    group = make_groups(3, people=30)[2]
    crm = start_sandbox(seed=seed([group]), latency=0.25)  # slow enough to overlap
    source, mapping = write_files(group, tmp_path)
    slow = [*import_args(source, mapping), "--concurrency", "2"]
    first = start_import(crm, tmp_path, *slow)
    try:
        wait_for_the_first_create(crm, first)
        with Ledger(tmp_path / "state.sqlite") as ledger:
            (run,) = ledger.runs()

        for second in (
            run_cli(crm, tmp_path, *resume_args(run.run_id)),
            run_cli(crm, tmp_path, "rollback", run.run_id, "--yes", "--state-db", "state.sqlite"),
        ):
            assert second.returncode == 2, second.stderr
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1, second.stderr
            assert "is being written or rolled back by another lacrm-etl process" in lines[0]

        assert first.wait(CLI_TIMEOUT_SECONDS) == 0, first.stderr.read() if first.stderr else ""
    finally:
        first.kill()
        first.wait()
    assert_exact_end_state(crm, group, tmp_path / "out")


@pytest.mark.parametrize(
    ("ledger", "detail"),
    [
        ("state.sqlite", "created this pair as RelationshipId"),
        ("elsewhere.sqlite", "came to hold this pair after the plan was made"),
    ],
    ids=["same ledger", "another ledger"],
)
def test_an_old_plan_resumed_after_the_file_was_imported_again_creates_nothing_twice(
    start_sandbox: StartSandbox, tmp_path: Path, ledger: str, detail: str
) -> None:
    group = GROUPS[3]
    crm = start_sandbox(seed=seed([group]))
    source, mapping = write_files(group, tmp_path)
    old_plan = plan_only(crm, tmp_path, source.name)
    elsewhere = ["--state-db", ledger, "--report-dir", "out-import"]
    imported = run_cli(crm, tmp_path, *import_args(source, mapping), *elsewhere)
    assert imported.returncode == 0, imported.stderr
    creates = calls_of(crm, "CreateRelationship")
    assert creates > 0

    resumed = resume(crm, tmp_path, tmp_path / "state.sqlite", old_plan)

    assert resumed.returncode == 0, resumed.stderr
    assert calls_of(crm, "CreateRelationship") == creates
    assert held(crm, group) == group.expected()
    assert crm.state()["duplicate_pairs"] == []
    # Every row accounted for: what the import made is, for the old plan, already there.
    wanted = [reason for *_, reason in group.rows()]
    already = ["already_exists" if reason == "created" else reason for reason in wanted]
    assert report_reasons(tmp_path / "out" / "report.csv") == already
    assert (tmp_path / "out" / "report.csv").read_text("utf-8").count(detail) == creates


def test_two_imports_of_one_file_at_once_create_each_pair_once(
    start_sandbox: StartSandbox, tmp_path: Path
) -> None:
    group = GROUPS[4]
    crm = start_sandbox(seed=seed([group]), latency=0.05)
    source, mapping = write_files(group, tmp_path)
    both = [
        start_import(crm, tmp_path, *import_args(source, mapping, "--report-dir", f"out{n}"))
        for n in (1, 2)
    ]
    try:
        codes = [process.wait(CLI_TIMEOUT_SECONDS) for process in both]
    finally:
        for process in both:
            process.kill()
            process.wait()
    assert codes == [0, 0], [process.stderr.read() for process in both if process.stderr]
    to_create = sum(reason == "created" for *_, reason in group.rows())
    assert calls_of(crm, "CreateRelationship") == to_create
    assert held(crm, group) == group.expected()
    assert crm.state()["duplicate_pairs"] == []
    created = 0
    for n in (1, 2):  # each report accounts for every row, the other run's pairs as skipped
        reasons = report_reasons(tmp_path / f"out{n}" / "report.csv")
        assert len(reasons) == len(group.rows())
        created += reasons.count("created")
    assert created == to_create


def test_a_rolled_back_run_cannot_be_resumed(start_sandbox: StartSandbox, tmp_path: Path) -> None:
    group = GROUPS[5]
    crm = start_sandbox(seed=seed([group]))
    source, _ = write_files(group, tmp_path)
    run_id = plan_only(crm, tmp_path, source.name)
    rolled = run_cli(crm, tmp_path, "rollback", run_id, "--yes", "--state-db", "state.sqlite")
    assert rolled.returncode == 0, rolled.stderr

    resumed = resume(crm, tmp_path, tmp_path / "state.sqlite", run_id)

    assert resumed.returncode == 2, resumed.stderr
    assert "was rolled back, which is final" in resumed.stderr
    assert calls_of(crm, "CreateRelationship") == 0


def test_ctrl_c_while_writing_exits_3_and_says_how_to_finish(
    start_sandbox: StartSandbox, tmp_path: Path
) -> None:
    group = GROUPS[0]
    crm = start_sandbox(seed=seed([group]), latency=0.2)
    source, mapping = write_files(group, tmp_path)
    process = start_import(crm, tmp_path, *import_args(source, mapping, "--concurrency", "2"))
    try:
        wait_for_the_first_create(crm, process)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=CLI_TIMEOUT_SECONDS)
    finally:
        process.kill()
        process.wait()
    with Ledger(tmp_path / "state.sqlite") as ledger:
        (run,) = ledger.runs()
    assert process.returncode == 3, stderr
    assert "Traceback" not in stderr
    assert f"interrupted; finish it later with: lacrm-etl resume {run.run_id}" in stderr
    reported = run_cli(crm, tmp_path, "report", run.run_id, *LEDGER_ARGS, "--report-dir", "mid")
    assert reported.returncode == 3, reported.stderr
    assert "Import not finished (aborted)" in reported.stdout
    summary = json.loads((tmp_path / "mid" / "summary.json").read_text(encoding="utf-8"))
    counted = sum(summary[status] for status in ("created", "would_create", "skipped", "failed"))
    assert counted == summary["total_rows"] == len(group.rows())
    assert summary["reasons"].get("failed/interrupted", 0) > 0

    resumed = run_cli(crm, tmp_path, *resume_args(run.run_id))
    assert resumed.returncode == 0, resumed.stderr
    assert_exact_end_state(crm, group, tmp_path / "out")


def test_a_report_folder_that_cannot_be_made_stops_the_import_before_any_create(
    start_sandbox: StartSandbox, tmp_path: Path
) -> None:
    group = GROUPS[1]
    crm = start_sandbox(seed=seed([group]))
    source, mapping = write_files(group, tmp_path)
    (tmp_path / "a-file").write_text("", encoding="utf-8")

    done = run_cli(crm, tmp_path, *import_args(source, mapping, "--report-dir", "a-file/out"))

    assert done.returncode == 2, done.stderr
    assert "cannot write the reports to a-file/out" in done.stderr
    assert "Traceback" not in done.stderr
    assert calls_of(crm, "CreateRelationship") == 0
