"""The scheduler's HTTP edge on a real process, probed with raw sockets as an attacker would:
oversized or too many headers are refused without reading them (and /healthz stays fast
meanwhile), connections that send nothing or trickle are closed, the number of connections is
capped, /readyz answers in time when the database does not, and sub-millisecond timeouts are
refused."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from devtools.cluster import LOOPBACK, Cluster, wait_for
from scheduler_svc.edge import EdgeLimits
from tests.support.inprocess import silent_address

REQUEST_TIMEOUT = 1.5  # the scheduler's --request-timeout here
MAX_CONNECTIONS = 40
# Generous for a busy 2-core machine; what they bound is the server's own deadline.
SLACK = 10.0


@pytest.fixture(scope="module")
def edge(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(module_database_url, tmp_path_factory.mktemp("edge"))
    args = [f"--request-timeout={REQUEST_TIMEOUT}", f"--max-connections={MAX_CONNECTIONS}"]
    try:
        cluster.start_scheduler(extra_args=args)
        yield cluster
    finally:
        cluster.stop()


def connect(cluster: Cluster) -> socket.socket:
    assert cluster.scheduler_port is not None
    sock = socket.create_connection((LOOPBACK, cluster.scheduler_port), timeout=SLACK)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def health_seconds(cluster: Cluster) -> float:
    started = time.monotonic()
    answer = httpx.get(f"{cluster.scheduler_url}/healthz", timeout=SLACK)
    assert answer.status_code == 200
    return time.monotonic() - started


def test_oversized_headers_are_refused_unread_while_health_stays_fast(edge):
    big = 50 * 1024 * 1024
    sent = 0
    answers: list[bytes] = []

    def attack() -> None:
        nonlocal sent
        with connect(edge) as sock:
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
                block = b"a" * 65536
                while sent < big:
                    sock.sendall(block)
                    sent += len(block)
            except (BrokenPipeError, ConnectionResetError):
                pass
            answers.append(read_all(sock))

    attacker = threading.Thread(target=attack)
    attacker.start()
    try:
        assert max(health_seconds(edge) for _ in range(5)) < 1.0 + SLACK / 10
    finally:
        attacker.join(30)
    assert sent < big, "the server read the whole oversized header"
    assert answers and answers[0].startswith(b"HTTP/1.1 431"), answers
    assert b'"detail": "request line and headers larger than 32768 bytes"' in answers[0]


def test_too_many_headers_are_refused(edge):
    headers = "".join(f"X-H{i}: v\r\n" for i in range(EdgeLimits.max_headers + 1))
    with connect(edge) as sock:
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431"), answer
    assert b"more than 100 request headers" in answer


def test_a_request_with_many_headers_and_a_long_body_is_fine(edge):
    headers = {f"X-H{i}": "v" for i in range(EdgeLimits.max_headers - 10)}
    body = "[\n" + ",\n".join(["1"] * 5000) + "\n]"  # many lines after the head do not count
    answer = httpx.post(
        f"{edge.scheduler_url}/schedule",
        headers=headers | {"Content-Type": "application/json"},
        content=body,
        timeout=SLACK,
    )
    assert answer.status_code == 422, answer.text


@pytest.mark.parametrize("trickle", [b"", b"GET /healthz HTTP/1.1\r\n"])
def test_connections_that_send_nothing_or_trickle_are_closed(edge, trickle):
    started = time.monotonic()
    with connect(edge) as sock:
        sock.sendall(trickle)
        # Keep sending a header a byte at a time, slower than any real client.
        sock.settimeout(0.2)
        answer = b""
        while time.monotonic() - started < REQUEST_TIMEOUT + SLACK:
            try:
                answer = sock.recv(65536)
                break
            except TimeoutError:
                if trickle:
                    sock.sendall(b"X")
        sock.settimeout(SLACK)
        answer += read_all(sock)
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert REQUEST_TIMEOUT * 0.9 <= elapsed < REQUEST_TIMEOUT + SLACK


def test_connections_beyond_the_limit_are_closed_at_once(edge):
    held = [connect(edge) for _ in range(MAX_CONNECTIONS + 10)]
    try:
        # Each extra connection is closed by the server before anything is read from it.
        def refused() -> int:
            closed = 0
            for sock in held:
                sock.setblocking(False)
                try:
                    if sock.recv(1) == b"":
                        closed += 1
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    closed += 1
            return closed

        assert wait_for(lambda: refused() >= 10, SLACK, message="extra connections closed")
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: health_seconds(edge) < SLACK, SLACK, ignore=(httpx.HTTPError,))


def test_readyz_answers_in_time_when_the_database_does_not(tmp_path):
    with silent_address() as silent:
        host, port = silent.rsplit(":", 1)
        cluster = Cluster(f"postgresql://postgres@{host}:{port}/none?connect_timeout=30", tmp_path)
        try:
            cluster.start_scheduler(wait=False)
            wait_for(lambda: health_seconds(cluster) < SLACK, 30, ignore=(httpx.HTTPError,))
            for _ in range(3):
                started = time.monotonic()
                answer = httpx.get(f"{cluster.scheduler_url}/readyz", timeout=SLACK)
                elapsed = time.monotonic() - started
                assert answer.status_code == 503, answer.text
                assert answer.json()["status"] == "unavailable"
                # The server gives up after 0.8 s; the rest is a busy machine's slack.
                assert elapsed < 1.0 + SLACK / 5, elapsed
        finally:
            cluster.stop()


@pytest.mark.parametrize(("timeout", "status"), [(0.0004, 422), (0.0009, 422), (0.001, 201)])
def test_timeouts_below_a_millisecond_are_refused(edge, timeout, status):
    answer = httpx.post(
        f"{edge.scheduler_url}/schedule",
        json={"command": "true", "timeout_seconds": timeout, "delay_seconds": 3600},
        timeout=SLACK,
    )
    assert answer.status_code == status, answer.text
