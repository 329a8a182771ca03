"""Parsing helpers shared by the services' config modules (which alone read the environment)."""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/skiplock"


class ConfigError(ValueError):
    """A flag or environment variable has a value the service cannot use."""


@dataclass(frozen=True)
class ListenAddress:
    host: str  # empty means "all interfaces" in the Go-style ":8080" form
    port: int

    @property
    def bind_host(self) -> str:
        return self.host or "0.0.0.0"

    def grpc_target(self) -> str:
        host = self.bind_host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


def parse_listen(value: str, flag: str) -> ListenAddress:
    """Parse ':8080', '8080', 'host:8080' or '[::1]:8080'; port 0 lets the system choose."""
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{flag}: expected [host]:port, got {value!r}") from None
    if not 0 <= port < 65536:
        raise ConfigError(f"{flag}: port {port} out of range 0-65535")
    return ListenAddress(host, port)


def add_ready_file_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        help='once listening, write {"host", "port", "pid"} as JSON to this file '
        "(the port really bound, e.g. for port 0)",
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def secure_listen(
    address: ListenAddress,
    authenticated: bool,
    insecure: bool,
    flag: str,
    credential: str = "SKIPLOCK_CLUSTER_TOKEN",
) -> ListenAddress:
    """Without a credential, only loopback may be bound unless --insecure says otherwise.

    An open port of any service runs any command it is sent, so a service that does not
    authenticate its callers must not be reachable from other machines by accident. A bare
    ':port' then means loopback.
    """
    if authenticated or insecure:
        return address
    if not address.host:
        return ListenAddress("127.0.0.1", address.port)
    if not is_loopback(address.host):
        raise ConfigError(
            f"{flag}: refusing to listen on {address.host} without {credential}, which would let "
            "anyone who reaches it run commands; configure it or pass --insecure"
        )
    return address


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes: this service's certificate chain and key, and the CA its peers' certificates
    must chain to (None: one-way TLS, servers verified against the system's roots)."""

    cert: bytes
    key: bytes
    ca: bytes | None = None


TLS_FLAGS = (
    ("--tls-cert", "SKIPLOCK_TLS_CERT_FILE", "PEM certificate (chain) this service presents"),
    ("--tls-key", "SKIPLOCK_TLS_KEY_FILE", "PEM private key of --tls-cert"),
    ("--tls-ca", "SKIPLOCK_TLS_CA_FILE", "PEM CA certificate(s) peers must chain to"),
)


def add_tls_flags(parser: argparse.ArgumentParser, env: Mapping[str, str], ca: bool) -> None:
    """--tls-cert and --tls-key (and --tls-ca), defaulting to their SKIPLOCK_TLS_*_FILE."""
    for flag, variable, meaning in TLS_FLAGS if ca else TLS_FLAGS[:2]:
        parser.add_argument(
            flag, default=env.get(variable) or None, help=f"{meaning} (default ${variable})"
        )


def read_pem(path: str, flag: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{flag}: cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{flag}: {path} is not PEM")
    return data


def tls_material(cert: str | None, key: str | None, ca: str | None) -> TlsMaterial | None:
    """The files of --tls-cert, --tls-key and --tls-ca, read once at start; None without TLS."""
    if cert is None and key is None and ca is None:
        return None
    if cert is None or key is None:
        raise ConfigError("TLS needs both --tls-cert and --tls-key (or their *_FILE variables)")
    return TlsMaterial(
        cert=read_pem(cert, "--tls-cert"),
        key=read_pem(key, "--tls-key"),
        ca=read_pem(ca, "--tls-ca") if ca is not None else None,
    )


def database_url(env: Mapping[str, str]) -> str:
    """DATABASE_URL (or the file DATABASE_URL_FILE names), else one built from the POSTGRES_*
    variables compose files use (POSTGRES_PASSWORD_FILE too)."""
    url = secret(env, "DATABASE_URL")
    if url:
        return url
    if not env.get("POSTGRES_HOST"):
        return DEFAULT_DATABASE_URL
    user = quote(env.get("POSTGRES_USER", "postgres"), safe="")
    password = secret(env, "POSTGRES_PASSWORD") or ""
    auth = f"{user}:{quote(password, safe='')}" if password else user
    host = env["POSTGRES_HOST"]
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    port = env.get("POSTGRES_PORT", "5432")
    db = quote(env.get("POSTGRES_DB", "skiplock"), safe="")
    return f"postgresql://{auth}@{host}:{port}/{db}"


def secret(env: Mapping[str, str], name: str) -> str | None:
    """A secret from `NAME`, or read from the file `NAME_FILE` names (e.g. a Docker secret);
    blank means unset, and giving both is a mistake."""
    inline = env.get(name, "").strip()
    path = env.get(f"{name}_FILE", "").strip()
    if inline and path:
        raise ConfigError(f"set {name} or {name}_FILE, not both")
    if not path:
        return inline or None
    try:
        return Path(path).read_text().strip() or None
    except OSError as exc:
        raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None


def cluster_token(env: Mapping[str, str]) -> str | None:
    return secret(env, "SKIPLOCK_CLUSTER_TOKEN")


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str, flag: str) -> float:
    """Seconds from '90', '90s', '15m', '12h' or '7d'."""
    text = value.strip().lower()
    scale = DURATION_UNITS.get(text[-1:])
    number = text[:-1] if scale is not None else text
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        message = f"{flag}: expected a duration like 90s, 15m, 12h or 7d, got {value!r}"
        raise ConfigError(message) from None
    if not 0 <= seconds < float("inf"):
        raise ConfigError(f"{flag}: {value!r} is not a duration")
    return seconds
