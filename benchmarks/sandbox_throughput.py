"""How many API requests per second the sandbox serves to one keep-alive httpx client.

Starts `lacrm-etl sandbox serve --port 0` as a subprocess (127.0.0.1 only), sends ROUNDS x N
sequential requests over one persistent connection, and prints each round's rate and the
median. The count and the wall time are both bounded.

    .venv/bin/python benchmarks/sandbox_throughput.py --requests 5000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import httpx

from etl.sandbox.testing import BOB_ID, JANE_ID, JOHN_ID, example_seed, start_sandbox

MAX_REQUESTS = 100_000
MAX_ROUNDS = 20
MAX_SECONDS = 120.0
REQUEST_BODIES: dict[str, dict[str, Any]] = {
    "GetContact": {"Function": "GetContact", "Parameters": {"ContactId": JOHN_ID}},
    "CreateRelationship": {
        "Function": "CreateRelationship",
        "Parameters": {"ContactId1": BOB_ID, "ContactId2": JANE_ID, "Note": "bench"},
    },
}


def run_round(client: httpx.Client, url: str, body: bytes, count: int) -> float:
    """Requests per second for `count` sequential requests."""
    started = time.perf_counter()
    for _ in range(count):
        # The body is encoded once: the client's own JSON work is not the server's speed.
        response = client.post(url, content=body)
        if response.status_code != 200:
            raise RuntimeError(f"unexpected HTTP {response.status_code}: {response.text}")
    return count / (time.perf_counter() - started)


def measure(function: str, count: int, rounds: int) -> list[float]:
    rates: list[float] = []
    body = json.dumps(REQUEST_BODIES[function]).encode()
    deadline = time.monotonic() + MAX_SECONDS
    with start_sandbox(seed=example_seed()) as sandbox:
        headers = {"Authorization": sandbox.api_key, "Content-Type": "application/json"}
        with httpx.Client(headers=headers, timeout=10.0) as client:
            run_round(client, sandbox.url, body, min(count, 200))  # warm-up
            for _ in range(rounds):
                if time.monotonic() > deadline:
                    break
                rates.append(run_round(client, sandbox.url, body, count))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--function", choices=sorted(REQUEST_BODIES), default="GetContact")
    args = parser.parse_args()
    count = max(1, min(args.requests, MAX_REQUESTS))
    rounds = max(1, min(args.rounds, MAX_ROUNDS))
    rates = measure(args.function, count, rounds)
    for index, rate in enumerate(rates, start=1):
        print(f"round {index}: {rate:,.0f} req/s")
    print(
        f"median: {statistics.median(rates):,.0f} req/s ({args.function}, {count} requests/round)"
    )


if __name__ == "__main__":
    main()
