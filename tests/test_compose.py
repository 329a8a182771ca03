"""Structural checks of the container packaging (Dockerfile, docker-compose.yml, .dockerignore).

No Docker engine is needed: the files are parsed and the properties `docker compose up --build
--scale worker=3` relies on are asserted directly.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
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
EXPECTED_COMMANDS = {
    "scheduler": ["python", "-m", "scheduler_svc", "--scheduler_port=:8081"],
    "coordinator": ["python", "-m", "coordinator_svc", "--coordinator_port=:8080"],
    "worker": [
        "python",
        "-m",
        "worker_svc",
        "--worker_port=:8000",
        "--coordinator=coordinator:8080",
        "--output-dir=/app/output",
    ],
}
PROTOC = "python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. proto/skiplock.proto"

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


def load_raw() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def load(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file as `docker compose up` sees it with no variables set."""
    resolved = resolve(load_raw(), env or {})
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


def test_works_with_no_variables_set() -> None:
    # Every interpolation has a default, so a fresh clone needs no .env to come up.
    load({})


def test_four_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"postgres", *APP_SERVICES}


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


def test_scheduler_publishes_8081(services: dict[str, dict[str, Any]]) -> None:
    ports = container_ports(services["scheduler"])
    assert ("8081", 8081) in ports


def test_scheduler_healthcheck_without_curl(services: dict[str, dict[str, Any]]) -> None:
    text = healthcheck_text(services["scheduler"])
    assert "/healthz" in text and ":8081" in text
    assert "urllib" in text and "curl" not in text


@pytest.mark.parametrize("name", ["scheduler", "coordinator"])
def test_waits_for_healthy_postgres(services: dict[str, dict[str, Any]], name: str) -> None:
    assert depends_condition(services[name], "postgres") == "service_healthy"


def test_worker_waits_for_coordinator(services: dict[str, dict[str, Any]]) -> None:
    assert depends_condition(services["worker"], "coordinator") is not None


@pytest.mark.parametrize("name", APP_SERVICES)
def test_postgres_env(services: dict[str, dict[str, Any]], name: str) -> None:
    env = environment(services[name])
    assert set(POSTGRES_NAMES) <= set(env), name
    assert env["POSTGRES_HOST"] == "postgres"
    # The services must log in with exactly what the postgres container was initialised with.
    db_env = environment(services["postgres"])
    for key in ("POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"):
        assert env[key] == db_env[key], (name, key)


def test_worker_scales(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert not worker.get("ports")
    # A shared WORKER_ADDRESS/WORKER_ID would make every replica claim one identity.
    env = environment(worker)
    assert "WORKER_ADDRESS" not in env and "WORKER_ID" not in env
    assert "hostname" not in worker


def test_worker_output_volume(services: dict[str, dict[str, Any]]) -> None:
    volumes = services["worker"].get("volumes", [])
    targets = {}
    for volume in volumes:
        if isinstance(volume, dict):
            targets[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            targets[target] = source
    assert targets.get("/app/output") == "./worker_output"


def test_worker_drain_fits_stop_grace(services: dict[str, dict[str, Any]]) -> None:
    # Workers drain for up to 30 s after SIGTERM; compose must not SIGKILL them sooner.
    assert seconds(str(services["worker"]["stop_grace_period"])) >= 35


def test_cluster_token_shared() -> None:
    raw = {name: environment(load_raw()["services"][name]) for name in ("coordinator", "worker")}
    assert raw["coordinator"]["SKIPLOCK_CLUSTER_TOKEN"] == raw["worker"]["SKIPLOCK_CLUSTER_TOKEN"]
    assert "${SKIPLOCK_CLUSTER_TOKEN" in raw["worker"]["SKIPLOCK_CLUSTER_TOKEN"]
    resolved = {name: environment(load()["services"][name]) for name in raw}
    token = resolved["worker"]["SKIPLOCK_CLUSTER_TOKEN"]
    assert token and token == resolved["coordinator"]["SKIPLOCK_CLUSTER_TOKEN"]
    chosen = load({"SKIPLOCK_CLUSTER_TOKEN": "s3cret"})["services"]
    assert environment(chosen["worker"])["SKIPLOCK_CLUSTER_TOKEN"] == "s3cret"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_commands(services: dict[str, dict[str, Any]], name: str) -> None:
    assert command(services[name]) == EXPECTED_COMMANDS[name]


def test_worker_dials_the_coordinator_service(services: dict[str, dict[str, Any]]) -> None:
    flags = dict(arg.split("=", 1) for arg in command(services["worker"]) if "=" in arg)
    host, port = flags["--coordinator"].rsplit(":", 1)
    assert host in services
    coordinator = dict(a.split("=", 1) for a in command(services[host]) if "=" in a)
    assert coordinator["--coordinator_port"].rsplit(":", 1)[1] == port


def test_python_modules_exist(services: dict[str, dict[str, Any]]) -> None:
    modules = set()
    for service in services.values():
        argv = command(service)
        for index, arg in enumerate(argv[:-1]):
            if arg == "-m":
                modules.add(argv[index + 1])
    assert modules == {"scheduler_svc", "coordinator_svc", "worker_svc"}
    for module in modules:
        assert (REPO / module).is_dir(), module


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


def runs() -> list[str]:
    return [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]


def test_dockerfile_base_and_workdir() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert ("WORKDIR", "/app") in instructions


def test_dockerfile_installs_pinned_requirements() -> None:
    assert any("pip install" in run and "-r requirements.txt" in run for run in runs())
    requirements = (REPO / "requirements.txt").read_text().splitlines()
    pins = [line for line in requirements if line.strip() and not line.startswith("#")]
    assert pins and all("==" in line for line in pins)


def test_dockerfile_generates_proto_code() -> None:
    assert (REPO / "proto" / "skiplock.proto").is_file()
    protoc = [i for i, run in enumerate(runs()) if PROTOC in run]
    pip = [i for i, run in enumerate(runs()) if "-r requirements.txt" in run]
    assert protoc and pip and pip[0] < protoc[0], "protoc needs grpcio-tools installed first"


def test_dockerfile_runs_as_non_root_with_bash_and_output_dir() -> None:
    instructions = dockerfile_instructions()
    args = dict(
        value.split("=", 1) for keyword, value in instructions if keyword == "ARG" and "=" in value
    )
    users = [interpolate(value, args) for keyword, value in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("", "root", "0")
    assert any("bash" in run for run in runs())
    assert any("/app/output" in run for run in runs())


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
