"""`lacrm-etl resume` through the real CLI: from another working folder, after the input
changed, and while another process writes the same run."""

from __future__ import annotations

import subprocess
from pathlib import Path

from etl.ledger import Ledger
from etl.sandbox.testing import RunningSandbox
from tests.e2e.conftest import StartSandbox
from tests.e2e.workload import (
    FAST,
    assert_exact_end_state,
    make_groups,
    run_cli,
    seed,
    write_files,
)

GROUPS = make_groups(2, people=30)


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
