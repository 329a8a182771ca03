"""Configuration built from flags and environment: the database URL, listen addresses, the
worker's advertised address, and the rule that without a cluster token only loopback is bound."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from common.config import (
    DEFAULT_DATABASE_URL,
    ConfigError,
    ListenAddress,
    database_url,
    parse_listen,
)
from coordinator_svc import config as coordinator_config
from scheduler_svc import config as scheduler_config
from worker_svc import config as worker_config

HOST = socket.gethostname()
TOKEN = {"SKIPLOCK_CLUSTER_TOKEN": "s3cret"}

# --- the database ---------------------------------------------------------------------------


def test_database_url_wins_over_the_postgres_variables():
    env = {"DATABASE_URL": " postgresql://u@db:6543/x ", "POSTGRES_HOST": "elsewhere"}
    assert database_url(env) == "postgresql://u@db:6543/x"


@pytest.mark.parametrize("env", [{}, {"DATABASE_URL": "  "}, {"POSTGRES_DB": "other"}])
def test_without_a_url_or_a_host_the_local_default_is_used(env):
    assert database_url(env) == DEFAULT_DATABASE_URL


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"POSTGRES_HOST": "postgres"},
            {"host": "postgres", "port": "5432", "user": "postgres", "dbname": "skiplock"},
        ),
        (
            {
                "POSTGRES_HOST": "db.internal",
                "POSTGRES_PORT": "6543",
                "POSTGRES_DB": "jobs db",
                "POSTGRES_USER": "sk@user",
                "POSTGRES_PASSWORD": "p@ss:w/rd?#%",
            },
            {
                "host": "db.internal",
                "port": "6543",
                "dbname": "jobs db",
                "user": "sk@user",
                "password": "p@ss:w/rd?#%",
            },
        ),
        ({"POSTGRES_HOST": "::1"}, {"host": "::1", "port": "5432"}),
    ],
)
def test_the_postgres_variables_compose_a_url_libpq_reads_back(env, expected):
    url = database_url(env)
    assert url.startswith("postgresql://")
    parsed = conninfo_to_dict(url)
    assert {k: str(parsed.get(k)) for k in expected} == expected
    if "POSTGRES_PASSWORD" not in env:
        assert "password" not in parsed


def test_every_service_reads_the_same_database_settings():
    env = {"POSTGRES_HOST": "pg", "POSTGRES_DB": "d", **TOKEN}
    expected = "postgresql://postgres@pg:5432/d"
    assert scheduler_config.load([], env).database_url == expected
    assert coordinator_config.load([], env).database_url == expected


# --- listen addresses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "host", "port"),
    [
        (":8080", "", 8080),
        ("8080", "", 8080),
        (" :8081 ", "", 8081),
        ("127.0.0.1:9000", "127.0.0.1", 9000),
        ("localhost:1", "localhost", 1),
        ("[::1]:65535", "::1", 65535),
        ("0.0.0.0:8000", "0.0.0.0", 8000),
        # the system chooses; the service announces the port in its --ready-file
        (":0", "", 0),
    ],
)
def test_listen_addresses_parse(value, host, port):
    assert parse_listen(value, "--flag") == ListenAddress(host, port)


@pytest.mark.parametrize("value", ["", ":", "abc", "host:", ":65536", "host:http", ":-1"])
def test_bad_listen_addresses_name_the_flag(value):
    with pytest.raises(ConfigError, match="--scheduler_port"):
        parse_listen(value, "--scheduler_port")


def test_bind_host_and_grpc_target():
    assert ListenAddress("", 80).bind_host == "0.0.0.0"
    assert ListenAddress("", 80).grpc_target() == "0.0.0.0:80"
    assert ListenAddress("::1", 80).grpc_target() == "[::1]:80"


def test_scheduler_port_and_host_flags():
    assert scheduler_config.load([], {}).listen == ListenAddress("127.0.0.1", 8081)
    config = scheduler_config.load(["--scheduler_port=:9091", "--host", "127.0.0.1"], {})
    assert config.listen == ListenAddress("127.0.0.1", 9091)
    assert scheduler_config.load(["--scheduler-port=10.0.0.1:1", "--insecure"], {}).listen.port == 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--poll-interval=0.01"], "--poll-interval"),
        (["--poll-interval=600"], "--poll-interval"),
        (["--pool-size=2"], "--pool-size"),
    ],
)
def test_coordinator_refuses_settings_out_of_range(args, says):
    with pytest.raises(ConfigError, match=says):
        coordinator_config.load(args, {})
    assert coordinator_config.load(["--poll-interval=0.05", "--pool-size=4"], {}).pool_max_size == 4


# --- only loopback without a token ----------------------------------------------------------

LOADERS: dict[str, tuple[Callable[..., Any], str]] = {
    "coordinator": (coordinator_config.load, "--coordinator_port"),
    "worker": (worker_config.load, "--worker_port"),
}


@pytest.mark.parametrize("service", LOADERS)
def test_without_a_token_a_bare_port_binds_loopback_only(service):
    load, flag = LOADERS[service]
    assert load([f"{flag}=:7000"], {}).listen == ListenAddress("127.0.0.1", 7000)


@pytest.mark.parametrize("service", LOADERS)
@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.com", "::"])
def test_without_a_token_other_interfaces_are_refused(service, host):
    load, flag = LOADERS[service]
    bracketed = f"[{host}]" if ":" in host else host
    with pytest.raises(ConfigError, match="SKIPLOCK_CLUSTER_TOKEN"):
        load([f"{flag}={bracketed}:7000"], {})


@pytest.mark.parametrize("service", LOADERS)
@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_without_a_token_loopback_addresses_are_fine(service, host):
    load, flag = LOADERS[service]
    bracketed = f"[{host}]" if ":" in host else host
    assert load([f"{flag}={bracketed}:7000"], {}).listen == ListenAddress(host, 7000)


@pytest.mark.parametrize("service", LOADERS)
def test_a_token_or_insecure_allows_every_interface(service):
    load, flag = LOADERS[service]
    assert load([f"{flag}=:7000"], TOKEN).listen == ListenAddress("", 7000)
    assert load([f"{flag}=0.0.0.0:7000"], TOKEN).security.token == "s3cret"
    assert load([f"{flag}=0.0.0.0:7000", "--insecure"], {}).listen.host == "0.0.0.0"
    # A blank token is no token.
    with pytest.raises(ConfigError):
        load([f"{flag}=0.0.0.0:7000"], {"SKIPLOCK_CLUSTER_TOKEN": "  "})


# --- the worker's advertised address --------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "advertised"),
    [
        # WORKER_ADDRESS, with the listen port unless it names one
        (["--worker_port=:8000"], {"WORKER_ADDRESS": "worker-3"}, "worker-3:8000"),
        (["--worker_port=:8000"], {"WORKER_ADDRESS": "10.0.0.7:9000"}, "10.0.0.7:9000"),
        (["--worker_port=:8000"], {"WORKER_ADDRESS": " w.example "}, "w.example:8000"),
        (["--worker_port=:8000"], {"WORKER_ADDRESS": "fd00::7"}, "[fd00::7]:8000"),
        (["--worker_port=:8000"], {"WORKER_ADDRESS": "[fd00::7]"}, "[fd00::7]:8000"),
        (["--worker_port=:8000"], {"WORKER_ADDRESS": "[fd00::7]:9"}, "[fd00::7]:9"),
        (["--worker_port=:8000"], {"WORKER_ADDRESS": "2001:db8::0:5"}, "[2001:db8::0:5]:8000"),
        # all interfaces: this machine's hostname, never the wildcard
        (["--worker_port=:8000"], {}, f"{HOST}:8000"),
        (["--worker_port=0.0.0.0:8000"], {}, f"{HOST}:8000"),
        (["--worker_port=[::]:8000"], {}, f"{HOST}:8000"),
        # a specific interface is the address
        (["--worker_port=10.0.0.9:8000"], {}, "10.0.0.9:8000"),
        (["--worker_port=[fd00::9]:8000"], {}, "[fd00::9]:8000"),
    ],
)  # fmt: skip
def test_advertised_address(args, env, advertised):
    config = worker_config.load(args, env | TOKEN)
    assert config.advertise_address == advertised
    assert worker_config.load([*args, "--insecure"], env).advertise_address == advertised


@pytest.mark.parametrize(
    ("port_flag", "advertised"),
    [
        (":8000", "127.0.0.1:8000"),
        ("127.0.0.2:8000", "127.0.0.2:8000"),
        ("localhost:8000", "localhost:8000"),
        ("[::1]:8000", "[::1]:8000"),
    ],
)
def test_without_a_token_the_advertised_address_is_the_bound_loopback(port_flag, advertised):
    assert worker_config.load([f"--worker_port={port_flag}"], {}).advertise_address == advertised


@pytest.mark.parametrize("value", ["0.0.0.0", "0.0.0.0:8000", "::", "[::]", "[::]:8000"])
def test_a_wildcard_worker_address_is_refused(value):
    with pytest.raises(ConfigError, match="wildcard"):
        worker_config.load(["--worker_port=:8000"], {"WORKER_ADDRESS": value} | TOKEN)


@pytest.mark.parametrize("value", ["host:port", "host:0", "host:99999", ":8000", "[fd00::1]:x"])
def test_a_malformed_worker_address_is_refused(value):
    with pytest.raises(ConfigError, match="WORKER_ADDRESS"):
        worker_config.load(["--worker_port=:8000"], {"WORKER_ADDRESS": value} | TOKEN)


def test_a_worker_on_port_0_is_named_and_advertised_by_the_port_it_gets():
    config = worker_config.load(["--worker_port=127.0.0.1:0"], {})
    bound = config.bound_to(41237)
    assert (bound.advertise_address, bound.worker_id) == ("127.0.0.1:41237", f"{HOST}-41237")
    named = worker_config.load(
        ["--worker_port=:0"], {"WORKER_ADDRESS": "w.example:9000", "WORKER_ID": "w"} | TOKEN
    ).bound_to(41237)
    assert (named.advertise_address, named.worker_id) == ("w.example:9000", "w")
    # A coordinator's port is dialed, so it cannot be 0.
    with pytest.raises(ConfigError, match="port 0"):
        worker_config.load(["--coordinator=c1:8080,c2:0"], {})


def test_worker_defaults_and_flags():
    config = worker_config.load([], {})
    assert config.listen == ListenAddress("127.0.0.1", 8000)
    assert config.coordinators == ("localhost:8080",)
    assert (config.slots, config.output_dir) == (4, Path.cwd() / "worker_output")
    assert config.worker_id == f"{HOST}-8000"
    config = worker_config.load(
        ["--coordinator=a:1, b:2", "--slots=8", "--output-dir=/tmp/out"],
        {"WORKER_ID": "w" * 300},
    )
    assert config.coordinators == ("a:1", "b:2")
    assert config.slots == 8 and config.output_dir == Path("/tmp/out")
    assert config.worker_id == "w" * 200


@pytest.mark.parametrize(
    "args",
    [["--slots=0"], ["--slots=1001"], ["--coordinator= , "], ["--coordinator=a:b"],
     ["--drain-timeout=-1"]],
)  # fmt: skip
def test_bad_worker_flags_are_refused(args):
    with pytest.raises(ConfigError):
        worker_config.load(args, {})


# --- a bad flag at start ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "flag"),
    [
        ("scheduler_svc", "--scheduler_port"),
        ("coordinator_svc", "--coordinator_port"),
        ("worker_svc", "--worker_port"),
    ],
)
def test_each_service_reports_a_bad_flag_in_one_line(module, flag):
    service = module.removesuffix("_svc")
    done = subprocess.run(
        [sys.executable, "-m", module, f"{flag}=:99999"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "DATABASE_URL": "postgresql://nowhere/x"},
    )
    assert done.returncode != 0
    assert done.stderr == f"{service}: {flag}: port 99999 out of range 0-65535\n"


# --- secrets from files and what commands inherit ---------------------------------------------


def test_database_settings_and_api_tokens_may_come_from_files(tmp_path):
    url_file, password_file, token_file = (tmp_path / n for n in ("url", "password", "token"))
    url_file.write_text("postgresql://u@db:6543/x\n")
    password_file.write_text("p@ss\n")
    token_file.write_text("t" * 32 + "\n")
    assert database_url({"DATABASE_URL_FILE": str(url_file)}) == "postgresql://u@db:6543/x"
    composed = database_url({"POSTGRES_HOST": "pg", "POSTGRES_PASSWORD_FILE": str(password_file)})
    assert conninfo_to_dict(composed)["password"] == "p@ss"
    env = {"SKIPLOCK_API_TOKEN_FILE": str(token_file), "DATABASE_URL_FILE": str(url_file)}
    config = scheduler_config.load([], env)
    assert [t.name for t in config.api_tokens] == ["env"]
    assert config.database_url == "postgresql://u@db:6543/x"
    with pytest.raises(ConfigError, match="not both"):
        database_url({"DATABASE_URL": "postgresql://a/b", "DATABASE_URL_FILE": str(url_file)})
    with pytest.raises(ConfigError, match="cannot read"):
        database_url({"DATABASE_URL_FILE": str(tmp_path / "missing")})


def test_the_worker_builds_a_minimal_command_environment_with_its_allow_list():
    env = {"PATH": "/p", "HOME": "/h", "SHARED": "s", "PRIVATE": "x"} | TOKEN
    config = worker_config.load(["--pass-env=SHARED,ABSENT"], env)
    assert dict(config.command_env) == {
        "PATH": "/p", "HOME": "/h", "LANG": "C.UTF-8", "TZ": "UTC", "SHARED": "s"
    }  # fmt: skip


@pytest.mark.parametrize(
    "names",
    ["SKIPLOCK_CLUSTER_TOKEN", "A,skiplock_tls_key_file", "DATABASE_URL", "POSTGRES_PASSWORD",
     "PGPASSWORD", "DATABASE_URL_FILE", "BAD-NAME", "1X"],
)  # fmt: skip
def test_pass_env_refuses_secrets_and_bad_names(names):
    with pytest.raises(ConfigError, match="--pass-env"):
        worker_config.load([f"--pass-env={names}"], {})


def test_output_group_by_name_or_number():
    assert worker_config.load([], {}).output_group is None
    assert worker_config.load(["--output-group=root"], {}).output_group == 0
    assert worker_config.load(["--output-group=1234"], {}).output_group == 1234
    with pytest.raises(ConfigError, match="--output-group"):
        worker_config.load(["--output-group=no-such-group-here"], {})


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may run commands as another user")
def test_run_as_names_a_user_with_its_groups_and_home():
    config = worker_config.load(["--run-as=nobody"], {"HOME": "/root"})
    assert config.run_as is not None and config.run_as.uid == 65534
    assert dict(config.command_env)["HOME"] == config.run_as.home
    assert worker_config.load([], {"HOME": "/root"}).run_as is None
    with pytest.raises(ConfigError, match="--run-as"):
        worker_config.load(["--run-as=no-such-user-here"], {})
