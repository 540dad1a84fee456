"""Fixtures for end-to-end tests: a real sandbox LACRM server in a subprocess.

- `sandbox`: a running sandbox seeded with `example_seed()` (three people, two companies,
  one relationship); see etl/sandbox/testing.py for the helper's methods.
- `start_sandbox(seed=..., **faults)`: start more, each with its own seed (an object or a
  Path) and start-up faults (latency, rate_limit, error_rate, lost_rate, fault_seed, down).

Every sandbox a test starts is terminated when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from etl.sandbox import testing
from etl.sandbox.testing import RunningSandbox

StartSandbox = Callable[..., RunningSandbox]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def start_sandbox() -> Iterator[StartSandbox]:
    started: list[RunningSandbox] = []

    def start_one(seed: Any = None, **faults: Any) -> RunningSandbox:
        running = testing.start_sandbox(seed, **faults)
        started.append(running)
        return running

    yield start_one
    for running in started:
        running.stop()


@pytest.fixture
def sandbox(start_sandbox: StartSandbox) -> RunningSandbox:
    return start_sandbox(seed=testing.example_seed())
