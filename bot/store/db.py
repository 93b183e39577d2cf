"""Opening the database: the engine with its SQLite settings, the session factory, and retried units of work.

How concurrent writers stay safe (many asyncio tasks, one SQLite file, or PostgreSQL):

* SQLite runs in WAL mode, so readers never block the writer and the writer never blocks readers.
* Every transaction on SQLite starts with `BEGIN IMMEDIATE` (SQLAlchemy emits BEGIN itself; the sqlite3 driver's
  own, lazy transaction handling is switched off). The write lock is taken at the start, so two transactions
  can never both read and then both try to upgrade to writing: that upgrade is the case where SQLite fails at
  once with "database is locked" whatever the timeout. With the lock taken up front, a second writer simply
  waits in `busy_timeout` (inside aiosqlite's thread, not the event loop) and then sees the first one's commit,
  so read-modify-write sequences (counting presets, appending a banned word, checking a job's status) are
  serialized and no update is lost. Read-only session factories (`make_sessions(read_only=True)`) use a plain
  deferred BEGIN instead so that autocomplete and listings never queue behind writers.
* On PostgreSQL the store takes row locks (`SELECT ... FOR UPDATE`) on the row a read-modify-write depends on
  (the user row for preset counts, the guild row, the job row); on SQLite that clause is a no-op, because
  `BEGIN IMMEDIATE` already serialized the transaction.
* A lock that outlasts the timeout ("database is locked"), a PostgreSQL serialization failure or a deadlock is
  turned into `DatabaseBusy` right where SQLAlchemy reports it (the engine's `handle_error` hook), so a raw
  driver message never reaches a user. `transaction()` re-runs the whole unit of work a few times with jittered
  back-off on that error; only when all attempts fail does the user see "the database is busy".
* `transaction()` on a SQLite engine also queues this process's writers on one FIFO `asyncio.Lock`, so they
  wait their turn without polling in SQLite's busy handler (whose sleeps of up to 100 ms made 50 concurrent
  writers about 8x slower in the tests, and are unfair under load). Other processes (say `sdbot db upgrade`
  next to a running bot) still meet `busy_timeout`. Never call `transaction()` from inside its own `fn`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InvalidRequestError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from bot.store.errors import DatabaseBusy, DatabaseUnavailable

log = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT_MS = 10_000

# Plain scheme -> the async driver we ship with (or document).
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
_DRIVER_PACKAGES = {"aiosqlite": "aiosqlite", "asyncpg": "asyncpg", "psycopg": "psycopg[binary]"}

# SQLite primary result codes: SQLITE_BUSY, SQLITE_LOCKED. PostgreSQL: serialization failure, deadlock.
_SQLITE_BUSY_CODES = {5, 6}
_PG_RETRY_STATES = {"40001", "40P01"}

BUSY_MESSAGE = "the database is busy; please try again in a moment"
READ_ONLY_MESSAGE = (
    "the database is read-only, so nothing can be saved right now; "
    "an admin must make the database file (and its folder) writable"
)
_SQLITE_READONLY = 8
TRANSACTION_ATTEMPTS = 6

P = ParamSpec("P")
T = TypeVar("T")


def parse_url(url: str | URL) -> URL:
    """The URL as SQLAlchemy reads it, with a plain `sqlite://` or `postgresql://` given its async driver."""
    if isinstance(url, URL):
        parsed = url
    else:
        if not isinstance(url, str) or not url.strip():
            raise DatabaseUnavailable("the database URL is empty; set [database] url or SDBOT_DATABASE_URL")
        try:
            parsed = make_url(url.strip())
        except (ArgumentError, ValueError):
            raise DatabaseUnavailable(
                f"database URL {_mask_unparsed(url)!r} is not valid; expected e.g. sqlite+aiosqlite:///sdbot.db "
                "or postgresql+asyncpg://user:password@host/dbname"
            ) from None
    if parsed.drivername in _ASYNC_DRIVERS:
        parsed = parsed.set(drivername=_ASYNC_DRIVERS[parsed.drivername])
    return parsed


def hide_password(url: str | URL) -> str:
    """The URL as text with any password shown as `***` (safe to print and log)."""
    try:
        return parse_url(url).render_as_string(hide_password=True)
    except DatabaseUnavailable:
        return _mask_unparsed(str(url))


def _mask_unparsed(text: str) -> str:
    # An unparseable URL may still carry "user:secret@"; keep only what precedes the password.
    scheme, sep, rest = text.partition("://")
    if sep and "@" in rest:
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return text


def sqlite_path(url: str | URL) -> Path | None:
    """The file a SQLite URL names, or None for an in-memory database (or a non-SQLite URL)."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def make_engine(url: str | URL, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS, **kwargs: Any) -> AsyncEngine:
    """An async engine for `url`; SQLite gets WAL, foreign keys, a busy timeout and `BEGIN IMMEDIATE`.

    Checks what can be checked without connecting (URL syntax, driver installed and async, the SQLite file's
    directory exists) and raises `DatabaseUnavailable` with one readable line. Use `ping()` to find out whether
    the database itself can be opened.
    """
    parsed = parse_url(url)
    shown = parsed.render_as_string(hide_password=True)
    path = sqlite_path(parsed)
    if path is not None:
        if path.is_dir():
            raise DatabaseUnavailable(f"cannot open database {shown}: {path} is a directory")
        parent = path.expanduser().absolute().parent
        if not parent.is_dir():
            raise DatabaseUnavailable(f"cannot open database {shown}: directory {parent} does not exist")
    try:
        engine = create_async_engine(parsed, **kwargs)
    except NoSuchModuleError:
        raise DatabaseUnavailable(
            f"database URL {shown}: unknown database type {parsed.drivername!r}; "
            "use sqlite+aiosqlite:// or postgresql+asyncpg://"
        ) from None
    except ModuleNotFoundError as exc:
        package = _DRIVER_PACKAGES.get(parsed.get_driver_name(), exc.name or parsed.get_driver_name())
        raise DatabaseUnavailable(
            f"database URL {shown}: the driver {parsed.get_driver_name()!r} is not installed (pip install {package})"
        ) from None
    except (InvalidRequestError, ArgumentError) as exc:
        raise DatabaseUnavailable(f"database URL {shown}: {_first_line(exc)}; use an async driver") from None

    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, busy_timeout_ms)
    _translate_errors(engine)
    return engine


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We emit BEGIN ourselves (below); the driver must not start or end transactions on its own.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL needs a lock that another connection may hold briefly.
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            # With WAL, NORMAL never corrupts and loses nothing when the process dies; only a power cut may
            # lose the last commits. The fsync per commit that FULL adds buys nothing a restart cannot redo.
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        if mode not in ("IMMEDIATE", "DEFERRED", "EXCLUSIVE"):
            raise ValueError(f"sqlite_begin must be IMMEDIATE, DEFERRED or EXCLUSIVE, not {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _translate_errors(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(ctx: Any) -> None:
        if is_busy_error(ctx.original_exception):
            log.warning("database busy: %s", _first_line(ctx.original_exception))
            raise DatabaseBusy(BUSY_MESSAGE) from ctx.sqlalchemy_exception
        if is_read_only_error(ctx.original_exception):
            log.error("database read-only: %s", _first_line(ctx.original_exception))
            raise DatabaseUnavailable(READ_ONLY_MESSAGE) from ctx.sqlalchemy_exception


def _driver_error(exc: BaseException | None) -> tuple[int | None, str | None, str]:
    """What a driver error says: SQLite's primary result code, PostgreSQL's SQLSTATE, and its text (lower case)."""
    if exc is None:
        return None, None, ""
    if isinstance(exc, DBAPIError):
        exc = exc.orig
    code = getattr(exc, "sqlite_errorcode", None)
    state = getattr(exc, "pgcode", None) or getattr(exc, "sqlstate", None)
    return (code & 0xFF if isinstance(code, int) else None), state, str(exc).lower()


def is_read_only_error(exc: BaseException | None) -> bool:
    """Whether a driver error means the database cannot be written (SQLite READONLY, PostgreSQL 25006)."""
    code, state, text = _driver_error(exc)
    return code == _SQLITE_READONLY or state == "25006" or "readonly database" in text or "read-only" in text


def is_busy_error(exc: BaseException | None) -> bool:
    """Whether a driver error means "locked, try again" (SQLite busy/locked, PostgreSQL 40001/40P01)."""
    code, state, text = _driver_error(exc)
    return (
        code in _SQLITE_BUSY_CODES
        or state in _PG_RETRY_STATES
        or "database is locked" in text
        or "database table is locked" in text
    )


def make_sessions(engine: AsyncEngine, *, read_only: bool = False) -> async_sessionmaker[AsyncSession]:
    """The session factory: one session per unit of work (`async with sessions.begin() as s:`).

    `expire_on_commit=False` keeps loaded rows readable after commit without hidden IO. `read_only=True`
    starts SQLite transactions with a deferred BEGIN, for listings and autocomplete that never write.
    """
    bind = engine.execution_options(sqlite_begin="DEFERRED") if read_only else engine
    return async_sessionmaker(bind, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    """Open one connection and run `SELECT 1`; `DatabaseUnavailable` with the reason when that fails."""
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
    except DatabaseBusy:
        raise
    except (SQLAlchemyError, OSError) as exc:
        raise unavailable(engine.url, exc) from None


async def check_writable(engine: AsyncEngine) -> None:
    """`DatabaseUnavailable` (one line) when the database can be read but not written: a read-only file, folder
    or mount, or a PostgreSQL replica. Writes nothing: a no-op UPDATE of the migrations' table, rolled back."""
    async with engine.connect() as conn:
        await conn.exec_driver_sql("UPDATE alembic_version SET version_num = version_num")
        await conn.rollback()


def unavailable(url: str | URL, exc: BaseException) -> DatabaseUnavailable:
    """The one-line error for a database that could not be opened."""
    reason = _first_line(exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc)
    return DatabaseUnavailable(f"cannot open database {hide_password(url)}: {reason}")


async def transaction(
    sessions: async_sessionmaker[AsyncSession],
    fn: Callable[Concatenate[AsyncSession, P], Awaitable[T]],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """Run `fn(session, *args, **kwargs)` in one transaction, re-running it when the database was busy.

    The whole unit of work is retried (up to `TRANSACTION_ATTEMPTS` times, jittered exponential back-off), so
    `fn` must do nothing but database work: no Discord calls, no queueing, nothing that must not happen twice.
    Other errors (including every `StoreError`) pass through on the first attempt.
    """
    delay = 0.01
    lock = _writer_lock(sessions)
    for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
        try:
            async with lock, sessions.begin() as session:
                return await fn(session, *args, **kwargs)
        except DatabaseBusy:
            if attempt == TRANSACTION_ATTEMPTS:
                raise
            log.info("database busy, retrying %s (attempt %d)", getattr(fn, "__qualname__", fn), attempt)
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, 0.5)
    raise AssertionError("unreachable")  # pragma: no cover


_WRITER_LOCKS: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()


def _writer_lock(sessions: async_sessionmaker[AsyncSession]) -> contextlib.AbstractAsyncContextManager[Any]:
    """For SQLite write sessions: one FIFO asyncio lock per engine, so this process's writers queue fairly
    instead of polling in SQLite's busy handler (other processes still meet `busy_timeout`)."""
    bind = sessions.kw.get("bind")
    if not isinstance(bind, AsyncEngine) or bind.dialect.name != "sqlite":
        return contextlib.nullcontext()
    if bind.sync_engine.get_execution_options().get("sqlite_begin", "IMMEDIATE") != "IMMEDIATE":
        return contextlib.nullcontext()
    pool = bind.sync_engine.pool  # shared by the engine and its execution-option copies
    lock = _WRITER_LOCKS.get(pool)
    if lock is None:
        lock = _WRITER_LOCKS[pool] = asyncio.Lock()
    return lock


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    text = text.splitlines()[0]
    # SQLAlchemy appends "(Background on this error at: ...)" and wraps the driver name in brackets.
    if text.startswith("(") and ") " in text:
        text = text.split(") ", 1)[1]
    return text
