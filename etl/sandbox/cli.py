"""`lacrm-etl sandbox ...`: the local LACRM server."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from etl.sandbox.faults import FaultSettings

if TYPE_CHECKING:
    from etl.sandbox.server import Sandbox


GROUP_EXAMPLE = """\b
Example:
    lacrm-etl sandbox serve --port 8765 --seed sample_data/crm_seed.json
"""

SERVE_EXAMPLE = """\b
Example:
    export LACRM_API_KEY=sandbox-key
    lacrm-etl sandbox serve --port 8765 --seed sample_data/crm_seed.json --rate-limit 5
    export LACRM_API_URL=http://127.0.0.1:8765/v2/
    curl -s http://127.0.0.1:8765/_sandbox/state
"""


@click.group(epilog=GROUP_EXAMPLE)
def sandbox() -> None:
    """A local LACRM server for rehearsals, demos and tests."""


@sandbox.command(epilog=SERVE_EXAMPLE)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port on 127.0.0.1; 0 picks a free one (the start line tells which).",
)
@click.option(
    "--seed",
    "seed_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON seed file of contacts and relationships (see etl/sandbox/README.md).",
)
@click.option(
    "--api-key",
    envvar="LACRM_API_KEY",
    help="The key clients must send in the Authorization header [env: LACRM_API_KEY].",
)
@click.option("--id-seed", type=int, default=0, show_default=True, help="Seed for generated ids.")
@click.option(
    "--latency",
    type=click.FloatRange(0, 600),
    default=0.0,
    help="Seconds added to every API request.",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Requests/second; above it, HTTP 429 with Retry-After.",
)
@click.option(
    "--error-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Fraction of API requests answered with HTTP 500, doing nothing.",
)
@click.option(
    "--lost-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Fraction of CreateRelationship calls that commit, then drop the connection.",
)
@click.option("--down", is_flag=True, help="Start down: drop every API connection unanswered.")
@click.option("--fault-seed", type=int, default=0, show_default=True, help="Seed for fault dice.")
def serve(
    port: int,
    seed_file: Path | None,
    api_key: str | None,
    id_seed: int,
    latency: float,
    rate_limit: float | None,
    error_rate: float,
    lost_rate: float,
    down: bool,
    fault_seed: int,
) -> None:
    """Run a local LACRM API on 127.0.0.1 until Ctrl-C or SIGTERM.

    It answers the API functions this tool uses exactly as LACRM_API.md describes, keeps its
    data in memory (the seed file is never written), and can misbehave on purpose: latency,
    rate limiting (429 + Retry-After), server errors, lost responses and outages. Change the
    faults while it runs with POST /_sandbox/faults; read what clients did with
    GET /_sandbox/state. The key is never printed.
    """
    from etl.sandbox.faults import FaultInjector
    from etl.sandbox.seed import SeedError, load_seed, load_seed_file
    from etl.sandbox.server import Sandbox

    if not api_key:
        raise click.UsageError("Give the key clients will use: --api-key KEY or LACRM_API_KEY.")
    try:
        store = load_seed_file(seed_file, id_seed) if seed_file else load_seed({}, id_seed)
    except SeedError as error:
        raise click.ClickException(f"{error}\nFix the seed file and start again.") from error
    settings = FaultSettings(latency, rate_limit, error_rate, lost_rate, down)
    app = Sandbox(store, api_key, FaultInjector(settings, fault_seed))
    try:
        asyncio.run(_serve_until_signalled(app, port))
    except OSError as error:
        raise click.ClickException(
            f"Cannot listen on port {port}: {error}. Try --port 0."
        ) from error


async def _serve_until_signalled(app: Sandbox, port: int) -> None:
    from etl.sandbox.server import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await serve(app, port, _announce, stop)


def _announce(port: int) -> None:
    # Tests and scripts read this exact line to learn the port; it must be flushed at once.
    click.echo(f"Sandbox LACRM listening on http://127.0.0.1:{port}/v2/")
    sys.stdout.flush()
