"""Redis storage over TLS (``rediss://``) against a real TLS-enabled redis-server.

Each test module run starts its own ``redis-server`` with only a TLS port on loopback and a
self-signed certificate made by the ``openssl`` command line, so the shared plain-text Redis
on 6379 is not involved.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ratelimiter import RateLimiter

from ..conftest import _unavailable

pytestmark = pytest.mark.timeout(60)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _make_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """Start a TLS-only redis-server on a free loopback port, and yield its port and CA file."""
    for program in ("redis-server", "openssl"):
        if shutil.which(program) is None:
            _unavailable(f"{program} is not installed, so rediss:// cannot be tested")
    folder = tmp_path_factory.mktemp("redis-tls")
    cert, key = _make_certificate(folder)
    port = _free_port()
    server = subprocess.Popen(
        [
            "redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
            "--save", "", "--appendonly", "no", "--dir", str(folder),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    output = server.stdout.read().decode(errors="replace") if server.stdout else ""
                    _unavailable(f"redis-server with TLS did not start on port {port}: {output}")
                time.sleep(0.05)
        yield port, cert
    finally:
        server.terminate()
        server.wait(timeout=10)


def _tls_limiter(policy: str, port: int, ca_file: Path | None) -> RateLimiter:
    """Build a limiter on the TLS server that rejects requests when storage fails."""
    query = f"?ssl_ca_certs={ca_file}" if ca_file else ""
    return RateLimiter(
        policy,
        storage=f"rediss://127.0.0.1:{port}/0{query}",
        timeout=2.0,
        on_storage_error="deny",
    )


def test_rediss_check_admits_then_rejects(tls_redis: tuple[int, Path]) -> None:
    port, ca_file = tls_redis
    limiter = _tls_limiter("2/minute", port, ca_file)
    try:
        decisions = [limiter.check("tls-client") for _ in range(3)]
    finally:
        limiter.close()
    assert [d.allowed for d in decisions] == [True, True, False]
    assert [d.storage_error for d in decisions] == [False, False, False]
    assert decisions[2].retry_after == pytest.approx(30.0, abs=0.5)


def test_rediss_async_check_shares_buckets(tls_redis: tuple[int, Path]) -> None:
    port, ca_file = tls_redis
    limiter = _tls_limiter("1/minute", port, ca_file)
    try:
        first = limiter.check("async-client")
        second = asyncio.run(limiter.check_async("async-client"))
    finally:
        limiter.close()
    assert first.allowed is True
    assert second.allowed is False
    assert second.storage_error is False


def test_rediss_untrusted_certificate_is_storage_error(tls_redis: tuple[int, Path]) -> None:
    port, _ = tls_redis
    limiter = _tls_limiter("5/minute", port, None)
    try:
        decision = limiter.check("untrusted-client")
    finally:
        limiter.close()
    assert decision.allowed is False
    assert decision.storage_error is True
