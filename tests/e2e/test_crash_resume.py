"""SIGKILL the real `lacrm-etl import` at many moments, then finish it as a user would.

A kill during planning leaves no run (the user imports again); a kill during writing leaves a
run that `lacrm-etl resume RUN_ID --yes` completes. Either way the CRM must end holding exactly
the file's relationships, none twice, and the report must account for every row as an
uninterrupted run would have. The moments are chosen by a seeded random draw, so a failure
names a moment that can be replayed.
"""

from __future__ import annotations

import random
import signal
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from etl.ledger import Ledger
from etl.sandbox import testing
from etl.sandbox.testing import RunningSandbox
from tests.e2e.workload import (
    Group,
    Moment,
    assert_exact_end_state,
    cli_command,
    import_args,
    import_killed_at,
    make_groups,
    resume_args,
    run_cli,
    seed,
    write_files,
)

KILL_SEED = 8_2026
CREATES_PER_GROUP = 100
WRITE_KILLS = 9
# Slow every request a little so the write phase lasts long enough to be hit at any point.
SANDBOX_LATENCY = 0.01


def kill_moments() -> list[Moment]:
    # One draw in each equal stretch of the write phase, so the kills spread across it.
    draw = random.Random(KILL_SEED)
    stretch = CREATES_PER_GROUP // WRITE_KILLS
    writes = [draw.randrange(1 + k * stretch, 1 + (k + 1) * stretch) for k in range(WRITE_KILLS)]
    return [
        Moment("planning: contacts read", "GetContacts", 1, writing=False),
        Moment("planning: existing check", "GetRelationshipsAttachedToContact", 1, writing=False),
        *(Moment(f"after {n} creates", "CreateRelationship", n, True) for n in writes),
        Moment("every create sent", "CreateRelationship", CREATES_PER_GROUP, writing=True),
    ]


MOMENTS = kill_moments()


LANES = 3  # trials run in parallel lanes, each against its own sandbox


@dataclass
class Trial:
    moment: Moment
    group: Group
    folder: Path
    failure: str | None = None


@pytest.fixture(scope="module")
def trials(tmp_path_factory: pytest.TempPathFactory) -> list[Trial]:
    """Every kill and its recovery, run up front in parallel lanes; the tests judge them."""
    groups = make_groups(len(MOMENTS), people=CREATES_PER_GROUP)
    trials = [
        Trial(moment, group, tmp_path_factory.mktemp(f"kill{n}"))
        for n, (moment, group) in enumerate(zip(MOMENTS, groups, strict=True))
    ]
    lanes = [trials[lane::LANES] for lane in range(LANES)]
    with ThreadPoolExecutor(max_workers=LANES) as pool:
        list(pool.map(run_lane, lanes))
    return trials


def run_lane(lane: list[Trial]) -> None:
    with testing.start_sandbox(seed([t.group for t in lane]), latency=SANDBOX_LATENCY) as crm:
        for trial in lane:
            try:
                kill_and_recover(trial, crm)
            except Exception:
                trial.failure = traceback.format_exc()


def runs_left(cwd: Path) -> list[str]:
    with Ledger(cwd / "state.sqlite") as ledger:
        return [run.run_id for run in ledger.runs()]


def kill_and_recover(trial: Trial, crm: RunningSandbox) -> None:
    moment, group, folder = trial.moment, trial.group, trial.folder
    source, mapping = write_files(group, folder)
    command = cli_command(*import_args(source, mapping))
    status = import_killed_at(moment, crm, command, folder)
    assert status == -signal.SIGKILL, f"the import ended by itself ({status}) before {moment}"

    runs = runs_left(folder)
    if moment.writing:
        assert len(runs) == 1, "a kill while writing must leave its run to resume"
    if runs:
        finished = run_cli(crm, folder, *resume_args(runs[0]))
    else:
        finished = run_cli(crm, folder, *import_args(source, mapping))
    assert finished.returncode == 0, finished.stderr
    assert_exact_end_state(crm, group, folder / "out")


@pytest.mark.parametrize("moment", MOMENTS, ids=str)
def test_a_killed_import_finishes_exactly_once(moment: Moment, trials: list[Trial]) -> None:
    failure = trials[MOMENTS.index(moment)].failure
    if failure is not None:
        pytest.fail(failure, pytrace=False)
