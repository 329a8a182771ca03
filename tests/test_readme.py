"""README.md stays honest: every flag and environment variable the services and `make run`
read is documented, the two commands come before the first example, and relative links
resolve. Reads parsers and source only; starts nothing."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer.main

from coordinator_svc import config as coordinator_config
from devtools import run as devtools_run
from scheduler_svc import config as scheduler_config
from skiplock_cli.main import app as cli_app
from worker_svc import config as worker_config

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()

# The modules that read flags and the environment (and the suite's database discovery, whose
# variables the README's `make test` section names).
ENV_READERS = (
    "common/config.py",
    "scheduler_svc/config.py",
    "coordinator_svc/config.py",
    "worker_svc/config.py",
    "devtools/run.py",
    "skiplock_cli/config.py",
    "devtools/databases.py",
    "tests/support/browser.py",
)
Parse = Callable[[list[str]], object]
PARSERS: dict[str, Parse] = {
    "scheduler": lambda argv: scheduler_config.load(argv, env={}),
    "coordinator": lambda argv: coordinator_config.load(argv, env={}),
    "worker": lambda argv: worker_config.load(argv, env={}),
    "devtools.run": devtools_run.parse_args,
}
LONG_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")


def parser_flags(parse: Parse, capsys: pytest.CaptureFixture[str]) -> set[str]:
    """Every long option the parser accepts, aliases included, read from its --help."""
    with pytest.raises(SystemExit) as exited:
        parse(["--help"])
    assert exited.value.code == 0
    return set(LONG_FLAG.findall(capsys.readouterr().out)) - {"--help"}


@pytest.mark.parametrize("service", PARSERS)
def test_every_flag_is_documented(service: str, capsys: pytest.CaptureFixture[str]) -> None:
    flags = parser_flags(PARSERS[service], capsys)
    assert flags, f"no flags found in {service}'s --help"
    missing = sorted(f for f in flags if not re.search(rf"`{re.escape(f)}[` =]", README))
    assert not missing, f"README.md does not document {service}'s {missing}"


def environment_reads(path: Path) -> set[str]:
    """Names read as env.get("X") / env["X"] / os.environ.get("X") / os.environ["X"], and X and
    X_FILE read as secret(env, "X")."""

    def is_env(node: ast.expr) -> bool:
        return (isinstance(node, ast.Name) and node.id in ("env", "environ")) or (
            isinstance(node, ast.Attribute) and node.attr == "environ"
        )

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        key: ast.expr | None = None
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and is_env(node.func.value)
            and node.args
        ):
            key = node.args[0]
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and is_env(
            node.value
        ):
            key = node.slice
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "secret"
            and len(node.args) == 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):  # secret(env, "X") reads X and X_FILE
            names.add(f"{node.args[1].value}_FILE")
            key = node.args[1]
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            names.add(key.value)
    return names


def test_every_environment_variable_is_documented() -> None:
    names = set().union(*(environment_reads(REPO / p) for p in ENV_READERS))
    # The scan must see the variables known to exist, or it proves nothing.
    known = {"DATABASE_URL", "POSTGRES_PASSWORD", "SKIPLOCK_CLUSTER_TOKEN", "WORKER_ADDRESS"}
    assert known <= names
    missing = sorted(n for n in names if f"`{n}`" not in README)
    assert not missing, f"README.md does not document {missing}"


def test_the_two_commands_lead_before_the_first_curl_example() -> None:
    first_curl = README.index("curl -")  # an example call, not the prerequisite
    for command in ("make run", "make test"):
        assert -1 < README.find(f"`{command}`") < first_curl, f"{command} must come first"


def test_relative_links_point_to_existing_files() -> None:
    targets = re.findall(r"\]\(([^)\s]+)\)", README)
    relative = [t.split("#", 1)[0] for t in targets if not re.match(r"[a-z]+:|#", t)]
    assert relative, "expected links to docs/"
    broken = [t for t in relative if not (REPO / t).exists()]
    assert not broken, f"README.md links to missing files: {broken}"


def cli_commands() -> dict[str, list[str]]:
    """Every `skiplock …` command that does something, with its long options (--json aside)."""
    found: dict[str, list[str]] = {}

    def walk(command: Any, path: str) -> None:
        subcommands = getattr(command, "commands", {})
        if not subcommands:
            options = [
                name
                for param in command.params
                if param.param_type_name == "option"
                for name in (*param.opts, *param.secondary_opts)
                if name.startswith("--") and name != "--json"
            ]
            found[path] = options
        for name, sub in subcommands.items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(cli_app), "skiplock")
    return found


def test_every_cli_command_and_option_is_documented() -> None:
    section = README[README.index("### The `skiplock` CLI") :]
    section = section[: section.index("\n## ")]
    commands = cli_commands()
    assert {"skiplock submit", "skiplock schedules add", "skiplock tasks ls"} <= set(commands)
    rows = [line for line in section.splitlines() if line.startswith("| `skiplock ")]
    for command, options in commands.items():
        (row,) = [r for r in rows if re.match(rf"\| `{re.escape(command)}[ `]", r)] or [""]
        assert row, f"README.md's CLI table has no row for `{command}`"
        missing = [o for o in options if f"`{o}" not in row]
        assert not missing, f"README.md's row for `{command}` does not name {missing}"
    for option in ("--url", "--token", "--json", "--version"):
        assert f"| `{option}` |" in section
