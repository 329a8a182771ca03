"""Shared fixtures: a real PostgreSQL (see devtools/databases.py), one migrated template database
per session cloned for each test, and real service processes (devtools/cluster.py)."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path

import httpx
import psycopg
import pytest

from devtools import databases
from devtools.cluster import Cluster, Launcher, python_module
from devtools.embedded_pg import EmbeddedPostgres

_reports = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Kept so fixtures can tell in teardown whether the test failed (and print service logs).
    report = yield
    item.stash.setdefault(_reports, {})[report.when] = report
    return report


def failed_so_far(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_reports, {})
    return any(r.failed for r in reports.values())


# -- database -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[databases.PgServer]:
    server = databases.discover_server()
    try:
        if server.kind == "local":
            databases.drop_stale_databases(server.admin_url)
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def pg_admin_url(pg_server: databases.PgServer) -> str:
    """URL of a maintenance database on the test server; may CREATE/DROP DATABASE."""
    return pg_server.admin_url


@pytest.fixture(scope="session")
def template_database(pg_admin_url: str) -> Iterator[str]:
    """Name of a database migrated once per session; each test gets a copy of it."""
    from store.migrate import migrate

    name = databases.create_template(pg_admin_url, migrate)
    try:
        yield name
    finally:
        databases.drop_database(pg_admin_url, name)


def _new_database(pg_admin_url: str, template: str | None) -> Iterator[str]:
    name = databases.unique_name(databases.DATABASE_PREFIX)
    url = databases.create_database(pg_admin_url, name, template=template)
    try:
        yield url
    finally:
        databases.drop_database(pg_admin_url, name)


@pytest.fixture
def database_url(pg_admin_url: str, template_database: str) -> Iterator[str]:
    """URL of a fresh, fully migrated database of this test's own, dropped afterwards."""
    yield from _new_database(pg_admin_url, template_database)


@pytest.fixture
def empty_database_url(pg_admin_url: str) -> Iterator[str]:
    """URL of a database with nothing in it: no schema, no migrations."""
    yield from _new_database(pg_admin_url, None)


@pytest.fixture(scope="module")
def module_database_url(pg_admin_url: str, template_database: str) -> Iterator[str]:
    """Like `database_url`, shared by the tests of one module (e.g. for a module-wide cluster)."""
    yield from _new_database(pg_admin_url, template_database)


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection to `database_url`."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def embedded_pg() -> Iterator[EmbeddedPostgres]:
    """A private server this test may kill and restart, holding a migrated `skiplock` database
    (connect with `embedded_pg.url("skiplock")`)."""
    from store.migrate import migrate

    pg, cleanup = databases.start_embedded(fast=True)
    try:
        pg.ensure_database("skiplock")
        migrate(pg.url("skiplock"))
        yield pg
    finally:
        cleanup()


# -- service processes ----------------------------------------------------------------------

ClusterFactory = Callable[..., Cluster]


@pytest.fixture
def cluster_factory(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> Iterator[ClusterFactory]:
    """make(workers=2, coordinators=1, slots=4, *, start=True, database_url=None, token=None,
    env=None, launcher=python_module) -> Cluster. Unstarted with start=False. All are stopped
    at teardown, and their logs printed if the test failed."""
    clusters: list[Cluster] = []

    def make(
        workers: int = 2,
        coordinators: int = 1,
        slots: int = 4,
        *,
        start: bool = True,
        database_url: str | None = None,
        token: str | None = None,
        env: Mapping[str, str | None] | None = None,
        launcher: Launcher = python_module,
    ) -> Cluster:
        log_dir = tmp_path / f"cluster{len(clusters) + 1}"
        cluster = Cluster(
            database_url or default_url, log_dir, token=token, env=env, launcher=launcher
        )
        clusters.append(cluster)
        if start:
            cluster.start(workers=workers, coordinators=coordinators, slots=slots)
        return cluster

    default_url = database_url
    try:
        yield make
    finally:
        failed = failed_so_far(request)
        for cluster in clusters:
            if failed:
                print(cluster.logs())
            cluster.stop()


@pytest.fixture
def cluster(cluster_factory: ClusterFactory) -> Cluster:
    """A running cluster: one coordinator, the scheduler and workers worker-1, worker-2."""
    return cluster_factory()


@pytest.fixture(scope="module")
def module_cluster(
    request: pytest.FixtureRequest,
    module_database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """A running cluster (one coordinator, the scheduler, worker-1 and worker-2 with 4 slots
    each) shared by a module's tests that only submit independent work, on the module's
    database. Its logs are printed if one of those tests failed."""
    cluster = Cluster(module_database_url, tmp_path_factory.mktemp("cluster"))
    failed_before = request.session.testsfailed
    try:
        cluster.start(workers=2, slots=4)
        yield cluster
    finally:
        if request.session.testsfailed > failed_before:
            print(cluster.logs())
        cluster.stop()


@pytest.fixture(scope="module")
def api(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A scheduler alone (no coordinator, so tasks stay queued) for a module's tests, on the
    module's database."""
    cluster = Cluster(module_database_url, tmp_path_factory.mktemp("scheduler"))
    try:
        cluster.start_scheduler()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def http(api: Cluster) -> httpx.Client:
    """A client for the `api` scheduler."""
    return api.http
