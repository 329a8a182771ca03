"""Finding a PostgreSQL server for the suite and the benchmarks, and making throwaway databases
on it.

Discovery order: TEST_DATABASE_URL; a server on 127.0.0.1:5432 (user postgres, trust auth);
a testcontainers PostgreSQL when a Docker engine answers; else an embedded server in a temp dir.
SKIPLOCK_TEST_EMBEDDED_PG=1 skips straight to the embedded server.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from devtools.embedded_pg import EmbeddedPostgres

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CONTAINER_IMAGE = "postgres:17-alpine"
TEMPLATE_PREFIX = "skiplock_tpl_"
DATABASE_PREFIX = "skiplock_t_"


@dataclass
class PgServer:
    """A server the suite may create and drop databases on."""

    admin_url: str
    kind: str  # env | local | container | embedded
    _close: Callable[[], None] = field(default=lambda: None, repr=False)

    def close(self) -> None:
        self._close()


def url_with_dbname(conninfo: str, dbname: str) -> str:
    """`conninfo` (URL or key=value) pointing at another database, as a postgresql:// URL."""
    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    params.pop("dbname", None)
    user = params.pop("user", "")
    password = params.pop("password", "")
    host = params.get("host", "")
    port = params.get("port", "")
    netloc = ""
    if host and not host.startswith("/") and "," not in host:
        # Socket directories and host lists stay in the query string, where libpq accepts them.
        del params["host"]
        params.pop("port", None)
        netloc = f"[{host}]" if ":" in host else host
        if port:
            netloc += f":{port}"
    if user:
        auth = quote(user, safe="")
        if password:
            auth += ":" + quote(password, safe="")
        netloc = f"{auth}@{netloc}"
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql://{netloc}/{quote(dbname, safe='')}{query}"


def can_connect(conninfo: str, timeout: int = 2) -> bool:
    try:
        with psycopg.connect(conninfo, connect_timeout=timeout) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def docker_engine_answers(timeout: float = 2.0) -> bool:
    """A Docker engine answers GET /_ping on DOCKER_HOST (default: the local Unix socket)."""
    target = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parts = urlsplit(target)
    try:
        if parts.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(parts.path)
        elif parts.scheme == "tcp" and parts.hostname:
            sock = socket.create_connection((parts.hostname, parts.port or 2375), timeout)
        else:
            return False
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return sock.recv(64).split(b"\r\n", 1)[0].endswith(b" 200 OK")
    except OSError:
        return False


def start_embedded(fast: bool = True) -> tuple[EmbeddedPostgres, Callable[[], None]]:
    """An embedded server in a fresh temp dir, with a cleanup that stops and deletes it."""
    root = Path(tempfile.mkdtemp(prefix="skiplock-test-pg-"))
    pg = EmbeddedPostgres(root / "pg", 0, fast=fast)

    def cleanup() -> None:
        with contextlib.suppress(Exception):
            pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)

    try:
        pg.start()
    except BaseException:
        cleanup()
        raise
    return pg, cleanup


def _start_container() -> PgServer:
    from testcontainers.community.postgres import PostgresContainer

    container = PostgresContainer(
        CONTAINER_IMAGE, username="postgres", password="postgres", dbname="postgres", driver=None
    ).with_command("postgres -c fsync=off -c synchronous_commit=off -c max_connections=200")
    container.start()
    url: str = container.get_connection_url()
    return PgServer(url, "container", container.stop)


def discover_server() -> PgServer:
    from_env = os.environ.get("TEST_DATABASE_URL", "").strip()
    if from_env:
        return PgServer(from_env, "env")
    if os.environ.get("SKIPLOCK_TEST_EMBEDDED_PG") != "1":
        if can_connect(LOCAL_URL):
            return PgServer(LOCAL_URL, "local")
        if docker_engine_answers():
            return _start_container()
    pg, cleanup = start_embedded(fast=True)
    return PgServer(pg.url(), "embedded", cleanup)


# -- databases --------------------------------------------------------------------------------


def unique_name(prefix: str) -> str:
    # The pid lets a later run recognise leftovers of a crashed one.
    return f"{prefix}{os.getpid()}_{secrets.token_hex(4)}"


def _admin(admin_url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(admin_url, autocommit=True, connect_timeout=10)


def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    """CREATE DATABASE (optionally from a template); returns the new database's URL."""
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with _admin(admin_url) as conn:
        conn.execute(query)
    return url_with_dbname(admin_url, name)


@contextlib.contextmanager
def throwaway_database(
    admin_url: str,
    prefix: str = DATABASE_PREFIX,
    template: str | None = None,
    migrate: Callable[[str], object] | None = None,
) -> Iterator[str]:
    """A new database (cloned from `template`, then `migrate`d if given), dropped on exit;
    yields its URL."""
    name = unique_name(prefix)
    url = create_database(admin_url, name, template=template)
    try:
        if migrate is not None:
            migrate(url)
        yield url
    finally:
        drop_database(admin_url, name)


def drop_database(admin_url: str, name: str, force: bool = True) -> None:
    query = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
    if force:
        query += sql.SQL(" WITH (FORCE)")
    with _admin(admin_url) as conn:
        conn.execute(query)


def create_template(admin_url: str, migrate: Callable[[str], object]) -> str:
    """A migrated database to clone per test. Returns its name; nobody may connect to it after."""
    name = unique_name(TEMPLATE_PREFIX)
    url = create_database(admin_url, name)
    try:
        migrate(url)
        with _admin(admin_url) as conn:
            # CREATE DATABASE ... TEMPLATE fails while anyone is connected to the template.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(
                    sql.Identifier(name)
                )
            )
    except BaseException:
        drop_database(admin_url, name)
        raise
    return name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drop_stale_databases(admin_url: str) -> None:
    """Drop test databases left by crashed runs on this host (their pid is gone).

    No FORCE: a database still in use is skipped rather than pulled from under someone.
    """
    with _admin(admin_url) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s OR datname LIKE %s",
            (TEMPLATE_PREFIX + "%", DATABASE_PREFIX + "%"),
        ).fetchall()
    for (name,) in rows:
        pid_text = str(name).split("_")[2]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            with contextlib.suppress(psycopg.Error):
                drop_database(admin_url, str(name), force=False)
