"""`lacrm-etl sandbox ...`: the local LACRM server."""

from __future__ import annotations

import click


@click.group()
def sandbox() -> None:
    """A local LACRM server for rehearsals, demos and tests."""
