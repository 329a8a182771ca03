"""Numbered plain-SQL migrations, applied in order under an advisory lock.

Every service calls `migrate` at start; the advisory lock makes concurrent starts safe and the
version table makes it idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from common.loops import Backoff
from store.db import Conn

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Arbitrary but fixed: every skiplock process agrees on it.
MIGRATION_LOCK_KEY = 0x5C1B_10C4
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    found = []
    for path in sorted(MIGRATIONS_DIR.iterdir()):
        match = _NAME.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), path.name, path.read_text()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 001.. without gaps, found {versions}")
    return found


def latest_version() -> int:
    return len(available_migrations())


# Wait for the migration lock: one migrator at a time, however many services start at once.
LOCK_MIGRATIONS = "SELECT pg_advisory_lock(%(key)s)"
# Let the next migrator in.
UNLOCK_MIGRATIONS = "SELECT pg_advisory_unlock(%(key)s)"
# The version table, before the first migration.
CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY, name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())
"""
# The migrations applied so far.
APPLIED_VERSIONS = "SELECT version FROM schema_migrations"
# Record a migration as applied, in the transaction that applied it.
RECORD_VERSION = "INSERT INTO schema_migrations (version, name) VALUES (%(version)s, %(name)s)"


def migrate(conninfo: str) -> int:
    """Apply every pending migration; return the schema version now in place."""
    lock = {"key": MIGRATION_LOCK_KEY}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(LOCK_MIGRATIONS, lock)
        try:
            conn.execute(CREATE_VERSION_TABLE)
            applied = {row[0] for row in conn.execute(APPLIED_VERSIONS)}
            for migration in available_migrations():
                if migration.version in applied:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        RECORD_VERSION, {"version": migration.version, "name": migration.name}
                    )
            return latest_version()
        finally:
            conn.execute(UNLOCK_MIGRATIONS, lock)


async def migrate_until_done(conninfo: str, stop: asyncio.Event) -> bool:
    """Apply migrations, retrying while the database is unreachable; False if stopped first."""
    backoff = Backoff(0.5, 5.0)
    while not stop.is_set():
        try:
            await asyncio.to_thread(migrate, conninfo)
            return True
        except psycopg.OperationalError as exc:
            log.warning("database not reachable for migrations (%s); retrying", exc)
            await backoff.wait(stop)
    return False


# Whether the version table exists yet (a statement naming a missing table fails when parsed,
# even in a branch that never runs, so this is asked first).
SCHEMA_MIGRATIONS_EXIST = "SELECT to_regclass('schema_migrations') IS NOT NULL"

# The highest migration applied.
SCHEMA_VERSION = "SELECT max(version) FROM schema_migrations"


async def schema_version(conn: Conn) -> int | None:
    """The highest migration applied; None before the first migration."""
    cur = await conn.execute(SCHEMA_MIGRATIONS_EXIST)
    exists = await cur.fetchone()
    if not exists or not exists[0]:
        return None
    cur = await conn.execute(SCHEMA_VERSION)
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])
