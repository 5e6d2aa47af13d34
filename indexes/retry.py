"""Riding out a database that drops out for a moment (a PostgreSQL restart, a busy SQLite file).

A transient error (the connection lost or refused, SQLite locked or busy) is retried with
exponential backoff for at most CLIPLAB_DB_RETRY_SECONDS (60 by default); after that the run
stops with a sentence saying that it can simply be run again: every committed batch is kept.
The retried operation must be one transaction that is safe to run twice.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from cliplab.engine.errors import CliplabError

log = logging.getLogger(__name__)
T = TypeVar("T")
_SQLITE_TRANSIENT = ("database is locked", "database is busy", "disk i/o error", "unable to open database")


def retry_seconds() -> float:
    return float(os.environ.get("CLIPLAB_DB_RETRY_SECONDS", "60"))


def is_transient(error: BaseException) -> bool:
    """A database error that may go away by itself (never a bug such as a missing table)."""
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated or isinstance(error, InterfaceError):
        return True
    if not isinstance(error, OperationalError):
        return False
    module = type(error.orig).__module__ if error.orig is not None else ""
    if module.startswith("sqlite3"):
        return any(text in str(error.orig).lower() for text in _SQLITE_TRANSIENT)
    return True  # psycopg / other drivers: OperationalError is the server or the network going away


def retrying(operation: Callable[[], T], what: str, seconds: float | None = None) -> T:
    """operation(), retried on transient database errors for a bounded time (see the module docstring)."""
    limit = retry_seconds() if seconds is None else seconds
    deadline = time.monotonic() + limit
    delay = 0.25
    while True:
        try:
            return operation()
        except DBAPIError as error:
            if not is_transient(error):
                raise
            if time.monotonic() + delay > deadline:
                first = str(error.orig or error).strip().splitlines()[0] if str(error.orig or error).strip() else ""
                raise CliplabError(
                    f"The catalog database stopped answering while {what} and did not come back within "
                    f"{limit:g} s ({first}); everything committed so far is kept, so once the database is "
                    "back, simply run the same command again to finish.") from error
            log.warning("catalog database error while %s (%s); retrying in %.2g s", what,
                        type(error.orig or error).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 4.0)
