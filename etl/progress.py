"""What the terminal shows while a run works: progress bars on stderr and the --verbose log.

Bars only when stderr is a terminal and --quiet is off; the log only with --verbose. Neither
ever shows the API key: the log names stages, counts and timings, never settings or headers.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

TICK_SECONDS = 0.5
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger("etl")


def show_bars(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def configure_logging(verbose: bool) -> None:
    """--verbose: the package's INFO log on stderr. httpx stays quiet (it logs every request)."""
    if not verbose:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


class Stage:
    """One stage's bar and tally; `done(n)` counts work finished."""

    def __init__(self, bar: tqdm[Any]) -> None:
        self.bar = bar
        self.count = 0
        self.note = ""

    def done(self, n: int = 1) -> None:
        self.count += n
        self.bar.update(n)

    def describe(self, note: str) -> None:
        """What the stage found, shown after its bar and logged when it ends."""
        self.note = note
        self.bar.set_postfix_str(note, refresh=True)


@contextmanager
def stage(
    name: str, *, progress: bool, total: int | None = None, unit: str = " rows"
) -> Iterator[Stage]:
    """A bar for a stage, kept ticking (elapsed time) while a blocking call runs, and log lines
    at its start and end."""
    log.info("%s: started", name)
    started = time.perf_counter()
    bar = tqdm(desc=name, total=total, unit=unit, file=sys.stderr, disable=not progress)
    current = Stage(bar)
    stop = threading.Event()
    ticker = threading.Thread(target=_tick, args=(bar, stop), daemon=True)
    if progress:
        ticker.start()
    try:
        with bar:
            yield current
    finally:
        stop.set()
        if ticker.is_alive():
            ticker.join()
    elapsed = time.perf_counter() - started
    found = f", {current.note}" if current.note else ""
    log.info("%s: done, %s%s in %.2f s", name, f"{current.count:,}{unit}", found, elapsed)


def _tick(bar: tqdm[Any], stop: threading.Event) -> None:
    """tqdm redraws only on update; a stage that blocks in one call still shows its clock."""
    while not stop.wait(TICK_SECONDS):
        bar.refresh()
