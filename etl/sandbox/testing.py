"""Run the sandbox as a real subprocess from tests, demos and benchmarks.

    with start_sandbox(seed=example_seed(), rate_limit=5) as crm:
        crm.url                      # http://127.0.0.1:PORT/v2/  (give it to the client)
        crm.call("GetContacts", SearchTerms="Doe")   # direct call for setup; raises on errors
        crm.post("GetContact", {...}, api_key="x")   # the raw httpx.Response, for checks
        crm.set_faults(lost_rate=1.0)                # change faults while it runs
        crm.state()["duplicate_pairs"]               # what the clients did

The process is `python -m etl sandbox serve --port 0 ...`: the same command a person runs.
The key goes through the environment (LACRM_API_KEY), never the command line.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

DEFAULT_API_KEY = "sandbox-test-key"
READY_PREFIX = "Sandbox LACRM listening on "
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 5.0
SERVE_COMMAND = ("-m", "etl", "sandbox", "serve", "--port", "0")
CLI_FAULT_OPTIONS = ("latency", "rate_limit", "error_rate", "lost_rate", "fault_seed", "id_seed")

JOHN_ID = "4006276277128630492722513572984"
JANE_ID = "4006276277130936335731728609578"
ACME_ID = "4006276277133242178740941787075"
BOB_ID = "4006276277133242178740942694237"
INITECH_ID = "4006276277133242178740942376433"
JOHN_JANE_RELATIONSHIP_ID = "4006276277128630492722514552832"


class SandboxCallError(Exception):
    """A direct call the sandbox did not answer with HTTP 200."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}: {response.text}")
        self.response = response


def example_seed() -> dict[str, Any]:
    """A small account: three people, two companies, one relationship (John-Jane)."""
    return {
        "contacts": [
            _person(JOHN_ID, "John", "Doe", "john.doe@example.com", "Acme Ltd"),
            _person(JANE_ID, "Jane", "Doe", "jane@example.org", ""),
            {"ContactId": ACME_ID, "IsCompany": True, "Company Name": "Acme Ltd"},
            _person(BOB_ID, "Bob", "Smith", "bob@initech.example", "Initech"),
            {"ContactId": INITECH_ID, "IsCompany": True, "Company Name": "Initech"},
        ],
        "relationships": [
            {
                "RelationshipId": JOHN_JANE_RELATIONSHIP_ID,
                "ContactId1": JOHN_ID,
                "ContactId2": JANE_ID,
                "Note": "John and Jane are married",
            }
        ],
    }


def _person(contact_id: str, first: str, last: str, email: str, company: str) -> dict[str, Any]:
    return {
        "ContactId": contact_id,
        "IsCompany": False,
        "Name": {"FirstName": first, "LastName": last},
        "Company Name": company,
        "Email": [{"Text": email, "Type": "Work"}],
    }


class RunningSandbox:
    """A started sandbox subprocess and a keep-alive client to reach it."""

    def __init__(
        self, process: subprocess.Popen[bytes], url: str, api_key: str, workdir: Path
    ) -> None:
        self.process = process
        self.url = url
        self.api_key = api_key
        self.base_url = url.removesuffix("/v2/")
        self._workdir = workdir
        self._client = httpx.Client(timeout=10.0)

    def post(
        self,
        function: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        api_key: str | None = None,
    ) -> httpx.Response:
        """One raw API request; `api_key` overrides the right key (to test a bad one)."""
        body = {"Function": function, "Parameters": dict(parameters or {})}
        headers = {"Authorization": self.api_key if api_key is None else api_key}
        return self._client.post(self.url, json=body, headers=headers)

    def call(self, function: str, **parameters: Any) -> Any:
        """An API call for test setup: the JSON result, or SandboxCallError if not HTTP 200."""
        response = self.post(function, parameters)
        if response.status_code != 200:
            raise SandboxCallError(response)
        return response.json()

    def state(self) -> dict[str, Any]:
        """GET /_sandbox/state: relationships, calls, write_calls, duplicate_pairs, ..."""
        return self._control("GET", "state")

    def set_faults(self, **settings: Any) -> dict[str, Any]:
        """Change faults (latency, rate_limit, error_rate, lost_rate, down, fault_seed)."""
        return self._control("POST", "faults", settings)

    def reset_counters(self) -> None:
        self._control("POST", "reset-counters", {})

    def _control(self, method: str, action: str, body: Any = None) -> Any:
        url = f"{self.base_url}/_sandbox/{action}"
        response = self._client.request(method, url, json=body)
        if response.status_code != 200:
            raise SandboxCallError(response)
        return response.json()

    def stop(self) -> None:
        """Terminate the server (bounded wait, then kill) and clean up."""
        self._client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_SECONDS)
        if self.process.stdout is not None:
            self.process.stdout.close()
        _remove_tree(self._workdir)

    def __enter__(self) -> RunningSandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_sandbox(
    seed: Mapping[str, Any] | Path | None = None,
    *,
    api_key: str = DEFAULT_API_KEY,
    down: bool = False,
    **options: float | int | None,
) -> RunningSandbox:
    """Start `lacrm-etl sandbox serve --port 0` and wait for its start line.

    `seed` is a seed object (written to a temporary file) or a seed file path; `options` are
    the CLI's fault options by their Python names: latency, rate_limit, error_rate,
    lost_rate, fault_seed (and id_seed).
    """
    unknown = sorted(set(options) - set(CLI_FAULT_OPTIONS))
    if unknown:
        raise TypeError(f"Unknown sandbox options {unknown}; known: {list(CLI_FAULT_OPTIONS)}.")
    workdir = Path(tempfile.mkdtemp(prefix="lacrm-sandbox-"))
    command = [sys.executable, *SERVE_COMMAND]
    if seed is not None:
        command += ["--seed", str(_seed_path(seed, workdir))]
    for name, value in options.items():
        if value is not None:
            command += [f"--{name.replace('_', '-')}", str(value)]
    if down:
        command.append("--down")
    env = {**os.environ, "LACRM_API_KEY": api_key}
    stderr_path = workdir / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, env=env)
    try:
        url = _read_url(process, stderr_path)
    except BaseException:
        process.kill()
        process.wait(STOP_TIMEOUT_SECONDS)
        _remove_tree(workdir)
        raise
    return RunningSandbox(process, url, api_key, workdir)


def _seed_path(seed: Mapping[str, Any] | Path, workdir: Path) -> Path:
    if isinstance(seed, Path):
        return seed
    path = workdir / "seed.json"
    path.write_text(json.dumps(seed), encoding="utf-8")
    return path


def _read_url(process: subprocess.Popen[bytes], stderr_path: Path) -> str:
    assert process.stdout is not None
    line = _read_line(process.stdout, time.monotonic() + START_TIMEOUT_SECONDS)
    text = line.decode("utf-8").strip()
    if not text.startswith(READY_PREFIX):
        stderr = stderr_path.read_text(encoding="utf-8", errors="replace")
        raise RuntimeError(f"The sandbox did not start (said {text!r}).\n{stderr}")
    return text.removeprefix(READY_PREFIX)


def _read_line(stream: IO[bytes], deadline: float) -> bytes:
    """One line from a pipe, or whatever arrived before EOF or the deadline."""
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                break
            chunk = os.read(stream.fileno(), 1024)
            if not chunk:
                break
            line += chunk
    return line


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
