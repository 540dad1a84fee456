"""How many API requests per second the sandbox serves to one keep-alive httpx client.

Starts `lacrm-etl sandbox serve --port 0` as a subprocess (127.0.0.1 only), sends ROUNDS x N
sequential requests over one persistent connection, and prints each round's rate and the
median. The count and the wall time are both bounded. `--raw` swaps httpx for a bare socket
client, which shows how much of the time is the server's own.

    .venv/bin/python benchmarks/sandbox_throughput.py --requests 5000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import socket
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


def run_raw_round(connection: socket.socket, request: bytes, count: int) -> float:
    """Requests per second over a bare keep-alive socket: the server's cost without httpx's."""
    started = time.perf_counter()
    buffered = b""
    for _ in range(count):
        connection.sendall(request)
        while b"\r\n\r\n" not in buffered:
            buffered += _receive(connection)
        head, _, buffered = buffered.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(f"unexpected response: {head[:60]!r}")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(buffered) < length:
            buffered += _receive(connection)
        buffered = buffered[length:]
    return count / (time.perf_counter() - started)


def _receive(connection: socket.socket) -> bytes:
    chunk = connection.recv(65536)
    if not chunk:
        raise RuntimeError("the sandbox closed the connection")
    return chunk


def measure(function: str, count: int, rounds: int, raw: bool) -> list[float]:
    body = json.dumps(REQUEST_BODIES[function]).encode()
    deadline = time.monotonic() + MAX_SECONDS
    with start_sandbox(seed=example_seed()) as sandbox:
        if raw:
            return _measure_raw(sandbox.url, sandbox.api_key, body, count, rounds, deadline)
        headers = {"Authorization": sandbox.api_key, "Content-Type": "application/json"}
        with httpx.Client(headers=headers, timeout=10.0) as client:
            run_round(client, sandbox.url, body, min(count, 200))  # warm-up
            return [
                run_round(client, sandbox.url, body, count)
                for _ in range(rounds)
                if time.monotonic() < deadline
            ]


def _measure_raw(
    url: str, api_key: str, body: bytes, count: int, rounds: int, deadline: float
) -> list[float]:
    port = httpx.URL(url).port
    assert port is not None
    request = (
        b"POST /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Authorization: {api_key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10.0) as connection:
        run_raw_round(connection, request, min(count, 200))  # warm-up
        return [
            run_raw_round(connection, request, count)
            for _ in range(rounds)
            if time.monotonic() < deadline
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--function", choices=sorted(REQUEST_BODIES), default="GetContact")
    parser.add_argument(
        "--raw", action="store_true", help="a bare socket client instead of httpx (server cost)"
    )
    args = parser.parse_args()
    count = max(1, min(args.requests, MAX_REQUESTS))
    rounds = max(1, min(args.rounds, MAX_ROUNDS))
    rates = measure(args.function, count, rounds, args.raw)
    for index, rate in enumerate(rates, start=1):
        print(f"round {index}: {rate:,.0f} req/s")
    client = "raw socket" if args.raw else "httpx"
    summary = f"{args.function}, {client}, {count} requests/round"
    print(f"median: {statistics.median(rates):,.0f} req/s ({summary})")


if __name__ == "__main__":
    main()
