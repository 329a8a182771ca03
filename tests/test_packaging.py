"""The package: pyproject.toml agrees with the pinned requirements, and a wheel built from the
checkout's files carries the generated gRPC code, the data files and four working commands.

The wheel is built without build isolation, with this virtualenv's setuptools and grpcio-tools
(so the suite needs no network); `pip install .` with isolation runs the same build hook.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from collections.abc import Callable
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from devtools.cluster import REPO_ROOT, Cluster
from tests.support.cli import describe, run_cli

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
SCRIPTS = {
    "skiplock": "skiplock_cli.main:main",
    "skiplock-scheduler": "scheduler_svc.__main__:main",
    "skiplock-coordinator": "coordinator_svc.__main__:run",
    "skiplock-worker": "worker_svc.__main__:run",
}
MODULE_SCRIPTS = {
    "scheduler_svc": "skiplock-scheduler",
    "coordinator_svc": "skiplock-coordinator",
    "worker_svc": "skiplock-worker",
}
PIP = (sys.executable, "-m", "pip")
OFFLINE = ("--no-deps", "--no-index")
GENERATED = ("proto/skiplock_pb2.py", "proto/skiplock_pb2_grpc.py")


def requirements(path: Path) -> dict[str, Requirement]:
    """The pins of a requirements file (not following -r), by canonical name."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            pins[requirement.name.lower()] = requirement
    return pins


def by_name(specs: list[str]) -> dict[str, Requirement]:
    return {r.name.lower(): r for r in map(Requirement, specs)}


def same(a: Requirement, b: Requirement) -> bool:
    return (a.name.lower(), a.extras, str(a.specifier)) == (
        b.name.lower(),
        b.extras,
        str(b.specifier),
    )


def checkout_files() -> list[str]:
    """The files of this checkout a clone would have: tracked, or new and not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [f for f in listed if (REPO_ROOT / f).is_file()]


# -- declarations ---------------------------------------------------------------------------


def test_pyproject_declares_exactly_the_pinned_runtime_requirements() -> None:
    runtime = requirements(REPO_ROOT / "requirements.txt")
    declared = by_name(PYPROJECT["project"]["dependencies"])
    build = by_name(PYPROJECT["build-system"]["requires"])
    assert runtime and declared
    for name, pin in runtime.items():
        match = declared.get(name) or build.get(name)
        assert match is not None, f"{pin} is in requirements.txt but not in pyproject.toml"
        assert same(pin, match), f"requirements.txt has {pin}, pyproject.toml {match}"
    for name, dependency in declared.items():
        assert name in runtime, f"pyproject.toml depends on {dependency}, not in requirements.txt"
    every_pin = runtime | requirements(REPO_ROOT / "requirements-dev.txt")
    for name, tool in build.items():
        assert name in every_pin and same(tool, every_pin[name]), f"build needs {tool}: pin it"
    unpinned = [str(r) for r in [*declared.values(), *build.values()] if "==" not in str(r)]
    assert not unpinned


def test_generated_grpc_code_is_not_committed() -> None:
    committed = [f for f in checkout_files() if f.startswith("proto/") and "_pb2" in f]
    assert not committed


# -- the wheel ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the checkout's files (no `make proto` output in it)."""
    root = tmp_path_factory.mktemp("package")
    source = root / "src"
    for name in checkout_files():
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, target)
    assert not (source / GENERATED[0]).exists()
    build = subprocess.run(
        [*PIP, "wheel", *OFFLINE, "--no-build-isolation", "--wheel-dir", root / "dist", source],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (built,) = (root / "dist").glob("skiplock-*.whl")
    return built


def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def dist_info(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        (member,) = [n for n in archive.namelist() if n.endswith(f".dist-info/{name}")]
        return archive.read(member).decode()


def test_the_wheel_carries_the_generated_grpc_code(wheel: Path) -> None:
    names = wheel_names(wheel)
    assert set(GENERATED) <= names
    with zipfile.ZipFile(wheel) as archive:
        stub = archive.read("proto/skiplock_pb2_grpc.py").decode()
    assert "class CoordinatorStub" in stub and "class WorkerStub" in stub


def test_the_wheel_carries_every_file_of_its_packages(wheel: Path) -> None:
    """Migrations, the .proto, and any static files (e.g. a web UI under scheduler_svc/)."""
    packages = PYPROJECT["tool"]["setuptools"]["packages"]
    expected = {
        f for f in checkout_files() if f.split("/", 1)[0] in packages and "__pycache__" not in f
    }
    assert "store/migrations/001_tasks_workers_attempts.sql" in expected
    missing = sorted(expected - wheel_names(wheel))
    assert not missing, f"the wheel lacks {missing}: declare them as package data"


def test_the_wheel_declares_the_commands_and_dependencies(wheel: Path) -> None:
    entry_points = configparser.ConfigParser()
    entry_points.read_string(dist_info(wheel, "entry_points.txt"))
    assert dict(entry_points["console_scripts"]) == SCRIPTS
    metadata = Parser().parsestr(dist_info(wheel, "METADATA"))
    requires = sorted(str(Requirement(r)) for r in metadata.get_all("Requires-Dist") or [])
    assert requires == sorted(str(Requirement(r)) for r in PYPROJECT["project"]["dependencies"])


# -- installed ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed; its dependencies come from this suite's
    virtualenv (a .pth file), since the suite does not download them. Returns its bin/."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "suite_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [*PIP, "--python", python, "install", *OFFLINE, wheel],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return venv / "bin"


def test_the_installed_commands_answer_help(installed: Path) -> None:
    for script in SCRIPTS:
        result = run_cli("--help", command=[str(installed / script)])
        assert result.returncode == 0, describe(result)
        assert script in result.stdout, describe(result)
    version = run_cli("--version", command=[str(installed / "skiplock")])
    assert version.stdout == f"skiplock {PYPROJECT['project']['version']}\n", describe(version)


def test_the_installed_code_is_the_wheel_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    probe = "import proto.skiplock_pb2_grpc as m, store.migrate as s; print(m.__file__, s.__file__)"
    result = subprocess.run(
        [installed / "python", "-c", probe], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert str(REPO_ROOT) not in result.stdout
    assert str(installed.parent) in result.stdout


def test_an_installed_cluster_runs_a_command(
    installed: Path, empty_database_url: str, cluster_factory: Callable[..., Cluster]
) -> None:
    """Scheduler, coordinator and worker run by the installed commands, on an empty database
    (so the packaged migrations create the schema), and a command submitted by `skiplock`.
    (empty_database_url is asked for first, so it is dropped after the cluster has stopped.)"""
    cluster = cluster_factory(
        workers=1,
        slots=2,
        database_url=empty_database_url,
        env={"PYTHONPATH": None},
        launcher=lambda module: [str(installed / MODULE_SCRIPTS[module])],
    )
    skiplock = [str(installed / "skiplock")]
    result = run_cli(
        "submit",
        "--wait",
        "echo from the wheel; exit 3",
        url=cluster.scheduler_url,
        command=skiplock,
    )
    assert result.returncode == 3, describe(result)
    assert "failed" in result.stdout and "exit 3" in result.stdout, describe(result)
