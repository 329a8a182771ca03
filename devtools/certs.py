"""`make certs`: a development CA and one certificate per skiplock service, for TLS and mutual TLS.

    python -m devtools.certs [--dir certs] [--workers 2] [--worker ID ...] [--host NAME ...]

writes into DIR:

- `ca.crt` (trust it everywhere: `--tls-ca`) and `ca.key` (keep it away from the services);
- `coordinator.crt/.key`, whose URI name `skiplock://coordinator` lets it call workers;
- `worker-<id>.crt/.key` for each worker id (`--workers N` gives worker-1 … worker-N), whose URI
  name `skiplock://worker/<id>` is that worker's identity: coordinators take its heartbeats and
  reports for that id only;
- `scheduler.crt/.key`, for HTTPS.

Every certificate is valid for `localhost`, `127.0.0.1`, `::1`, its own service name
(`coordinator`, `scheduler`, the worker id: the compose service names) and each `--host`.
Keys are written mode 0600. A production cluster uses its own CA the same way: what matters to
skiplock is the URI name of each certificate (docs/SECURITY.md).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.grpc_security import COORDINATOR, WORKER, role_uri

VALID_FOR = timedelta(days=365)
KeyPair = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)
# Each certificate serves (a server's port) and calls (a client's channel).
BOTH_WAYS = x509.ExtendedKeyUsage(
    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
)


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _alternative_names(uri: str | None, hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)] if uri else []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def new_ca(common_name: str = "skiplock development CA") -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(ca: KeyPair, common_name: str, uri: str | None, hosts: Sequence[str]) -> KeyPair:
    """A leaf certificate for servers and clients alike, signed by `ca`."""
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name[:64]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_alternative_names(uri, hosts)), critical=False)
        .add_extension(BOTH_WAYS, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def write_pair(pair: KeyPair, directory: Path, stem: str) -> Issued:
    cert, key = pair
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    os.chmod(key_path, 0o600)
    return Issued(cert_path, key_path)


def make_certs(
    directory: Path, worker_ids: Sequence[str], hosts: Sequence[str] = ()
) -> dict[str, Issued]:
    """A new CA and a certificate for the coordinator, the scheduler and each worker id; keyed
    "ca", "coordinator", "scheduler" and "worker-<id>"."""
    directory.mkdir(parents=True, exist_ok=True)
    local = ["localhost", "127.0.0.1", "::1", *hosts]
    ca = new_ca()
    issued = {"ca": write_pair(ca, directory, "ca")}
    issued["coordinator"] = write_pair(
        issue(ca, COORDINATOR, role_uri(COORDINATOR), [COORDINATOR, *local]),
        directory,
        "coordinator",
    )
    issued["scheduler"] = write_pair(
        issue(ca, "scheduler", None, ["scheduler", *local]), directory, "scheduler"
    )
    for worker_id in worker_ids:
        stem = f"worker-{worker_id}" if not worker_id.startswith("worker-") else worker_id
        issued[stem] = write_pair(
            issue(ca, worker_id, role_uri(WORKER, worker_id), [worker_id, *local]), directory, stem
        )
    return issued


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.certs", description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("certs"), help="output directory")
    parser.add_argument("--workers", type=int, default=2, help="certificates worker-1 … worker-N")
    parser.add_argument("--worker", action="append", default=[], help="one more worker id")
    parser.add_argument("--host", action="append", default=[], help="one more host name or IP")
    args = parser.parse_args(argv)
    ids = [f"worker-{i}" for i in range(1, args.workers + 1)] + args.worker
    issued = make_certs(args.dir, ids, args.host)
    print(f"wrote a CA and {len(issued) - 1} certificates to {args.dir}/: {', '.join(issued)}")


if __name__ == "__main__":
    main()
