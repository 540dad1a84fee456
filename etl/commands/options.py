"""What several commands share: the library's errors as messages, and common options."""

from __future__ import annotations

import codecs
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from etl import pipeline
from etl.directory import SnapshotError
from etl.export import ExportError
from etl.extract import ExtractError
from etl.lacrm import DEFAULT_API_URL, AuthError, LacrmError
from etl.ledger import LedgerError
from etl.mapping import MappingError

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_STATE_DB = Path(".lacrm-etl/state.sqlite")


class BadInput(click.ClickException):
    """Bad usage or input: nothing was written to the CRM (exit 2)."""

    exit_code = 2


class Aborted(click.ClickException):
    """The CRM refused the key or could not be reached; the run can be resumed (exit 3)."""

    exit_code = 3


@contextmanager
def user_errors(run_id: str | None = None) -> Iterator[None]:
    """Turn the library's exceptions into one line a person can act on, never a traceback."""
    try:
        yield
    except (
        ExtractError,
        MappingError,
        LedgerError,
        SnapshotError,
        ExportError,
        pipeline.MissingApiKey,
        pipeline.InputsChanged,
    ) as error:
        raise BadInput(str(error)) from None
    except AuthError as error:
        raise Aborted(f"{error}; nothing more was written") from None
    except LacrmError as error:
        raise Aborted(
            f"the CRM could not be reached or kept failing: {error}{_resume_hint(run_id)}"
        ) from None
    except OSError as error:
        raise BadInput(f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")) from None
    except KeyboardInterrupt:
        raise Aborted(f"interrupted{_resume_hint(run_id)}") from None


def _resume_hint(run_id: str | None) -> str:
    return f"; finish it later with: lacrm-etl resume {run_id}" if run_id else ""


def api_options(command: F) -> F:
    """Where the CRM is, how to authenticate, and how hard to push it."""

    @click.option(
        "--api-url",
        envvar="LACRM_API_URL",
        default=DEFAULT_API_URL,
        show_default=True,
        help="The LACRM API endpoint (env LACRM_API_URL).",
    )
    @click.option(
        "--api-key-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="A file holding the API key (default: env LACRM_API_KEY). Never printed.",
    )
    @click.option(
        "--rate",
        type=click.FloatRange(min=0.1),
        default=2.0,
        show_default=True,
        help="Requests per second at most (LACRM publishes no limit; 429s slow it further).",
    )
    @click.option(
        "--concurrency",
        type=click.IntRange(min=1, max=64),
        default=4,
        show_default=True,
        help="Requests in flight at most.",
    )
    @functools.wraps(command)
    def wrapper(
        *args: Any,
        api_url: str,
        api_key_file: Path | None,
        rate: float,
        concurrency: int,
        **kw: Any,
    ) -> Any:
        key = _read_key(api_key_file)
        kw["api"] = pipeline.Api(key=key, url=api_url, rate=rate, concurrency=concurrency)
        return command(*args, **kw)

    return wrapper  # type: ignore[return-value]


def _read_key(path: Path | None) -> str | None:
    where = f"the key file {path}" if path is not None else "LACRM_API_KEY"
    key = _key_file_text(path) if path is not None else os.environ.get("LACRM_API_KEY", "")
    key = key.strip()
    if not key.isascii() or not key.isprintable():
        # Never shown: a key is a secret even when it is a wrong one.
        raise BadInput(
            f"{where} holds characters an API key cannot have (accents, or invisible ones); "
            "copy the key again from LACRM (Settings > API) as plain text"
        )
    return key or None


def _key_file_text(path: Path) -> str:
    """Notepad writes a BOM, PowerShell's `>` writes UTF-16: both read as the key they hold."""
    raw = path.read_bytes()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadInput(
            f"the key file {path} is not text; save just the key in it, as plain text"
        ) from None


def state_db_option(command: F) -> F:
    return click.option(
        "--state-db",
        type=click.Path(dir_okay=False, path_type=Path),
        default=DEFAULT_STATE_DB,
        show_default=True,
        help="The run ledger (SQLite) that makes runs resumable and reversible.",
    )(command)


def report_dir_option(command: F) -> F:
    return click.option(
        "--report-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Where the reports go [default: reports/RUN_ID].",
    )(command)


def output_options(command: F) -> F:
    command = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")(command)
    return click.option("--verbose", "-v", is_flag=True, help="Log each stage as it runs.")(command)
