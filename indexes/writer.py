"""One writer at a time per catalog, on SQLite and PostgreSQL alike; readers never wait for it.

The writer holds the single row of the `writer_lock` table (pid, host, start time, heartbeat),
taken by an INSERT (the primary key lets only one process win) or, when the row left behind is
stale, by a compare-and-set UPDATE on its token. A row is stale when its process is gone (same
host, pid not running: a `kill -9`) or its heartbeat, refreshed every HEARTBEAT_SECONDS by a
background thread, is older than STALE_SECONDS (another host, or a hung process). Searches and
other readers never look at the lock. The lock is re-entrant within one thread; other threads of the
process holding it wait for their turn (the app's indexing jobs and its folder watcher).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from cliplab.engine.errors import CliplabError
from cliplab.indexes.catalog import Catalog, WriterLock
from cliplab.indexes.retry import retrying

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 60.0
LOCK_ID = 1


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # naive UTC: the same in every database


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def stale_because(row: WriterLock, now: datetime | None = None) -> str | None:
    """Why the lock row is stale (its holder is gone), or None while it is held."""
    if row.host == socket.gethostname() and not _running(row.pid):
        return f"pid {row.pid} is not running"
    age = ((now or _now()) - row.heartbeat_at).total_seconds()
    if age > STALE_SECONDS:
        return f"no heartbeat for {age:.0f} s"
    return None


def held_message(row: WriterLock) -> str:
    return (f"Cannot write to the catalog: another indexer is running (pid {row.pid} since "
            f"{row.started_at:%Y-%m-%d %H:%M:%S} UTC, on {row.host}). Wait for it to finish (searching works "
            "meanwhile), or stop it, then run this again.")


def _acquire(catalog: Catalog) -> str:
    token = uuid.uuid4().hex
    for _attempt in range(5):
        now = _now()
        mine = dict(token=token, pid=os.getpid(), host=socket.gethostname(), started_at=now, heartbeat_at=now)
        try:
            with catalog.session() as session, session.begin():
                row = session.get(WriterLock, LOCK_ID)
                if row is None:
                    session.add(WriterLock(id=LOCK_ID, **mine))
                    session.flush()
                    return token
                why = stale_because(row, now)
                if why is None:
                    raise CliplabError(held_message(row))
                # the dead holder, read before the update: the ORM writes the new values into `row` too
                left_by, left_on = row.pid, row.host
                taken = session.execute(update(WriterLock).where(WriterLock.id == LOCK_ID,
                                                                 WriterLock.token == row.token).values(**mine))
                if taken.rowcount == 1:
                    log.warning("took over the catalog's writer lock left by pid %s on %s (%s)", left_by, left_on, why)
                    return token
        except IntegrityError:  # another process inserted the row first: look again
            continue
    raise CliplabError("Cannot write to the catalog: other processes keep taking its writer lock; try again.")


@dataclass
class _Held:
    token: str
    thread: int
    depth: int
    stop: threading.Event
    beat: threading.Thread


def _heartbeat(catalog: Catalog, token: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            with catalog.session() as session, session.begin():
                result = session.execute(update(WriterLock).where(WriterLock.id == LOCK_ID, WriterLock.token == token)
                                         .values(heartbeat_at=_now()))
            if result.rowcount == 0:
                log.error("the catalog's writer lock was taken over by another process")
        except DBAPIError as error:  # the database is away for a moment: the next beat tries again
            log.warning("writer-lock heartbeat failed: %s", type(error.orig or error).__name__)


@contextmanager
def writer_lock(catalog: Catalog) -> Iterator[None]:
    """Hold the catalog's writer lock for the block (raises CliplabError while another process holds it)."""
    held: _Held | None = catalog.__dict__.get("_writer")
    if held is not None and held.thread == threading.get_ident():
        held.depth += 1
        try:
            yield
        finally:
            held.depth -= 1
        return
    # threads of one process (the app's indexing jobs and its folder watcher) take turns: one waits for
    # the other instead of being told that "another indexer" runs
    gate = catalog.__dict__.setdefault("_writer_gate", threading.Lock())
    with gate:
        yield from _hold(catalog)


def _hold(catalog: Catalog) -> Iterator[None]:
    token = retrying(lambda: _acquire(catalog), "taking the writer lock")
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(catalog, token, stop), daemon=True, name="writer-heartbeat")
    catalog.__dict__["_writer"] = _Held(token, threading.get_ident(), 1, stop, beat)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        catalog.__dict__.pop("_writer", None)
        try:
            retrying(lambda: _release(catalog, token), "releasing the writer lock", seconds=10)
        except CliplabError:  # the row goes stale by itself: the next writer takes it over
            log.warning("could not release the catalog's writer lock; it expires by itself")


def _release(catalog: Catalog, token: str) -> None:
    with catalog.session() as session, session.begin():
        session.execute(delete(WriterLock).where(WriterLock.id == LOCK_ID, WriterLock.token == token))


def holder(catalog: Catalog) -> WriterLock | None:
    """The current lock row (None when no writer runs), for status displays."""
    with catalog.session() as session:
        return session.get(WriterLock, LOCK_ID)

