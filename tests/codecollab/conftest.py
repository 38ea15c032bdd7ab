"""Fixtures of the editor's protocol tests: real server processes on free loopback ports.

Each server runs ``python app.py`` in ``codecollab/`` exactly as in production, with its own
SQLite file in a temporary folder and rate limits high enough for many test clients on one IP.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_DIR = REPO_ROOT / "codecollab"
START_TIMEOUT = 30.0

# Many test clients share 127.0.0.1, so the limits are raised far above the defaults. Tests of
# the limits themselves set their own.
TEST_ENV = {
    "CODECOLLAB_HTTP_RATE_LIMIT": "100000/minute, burst 10000",
    "CODECOLLAB_CONNECT_RATE_LIMIT": "100000/minute, burst 10000",
    "CODECOLLAB_SOCKET_RATE_LIMIT": "100000/second, burst 100000",
    "CODECOLLAB_LOG_LEVEL": "INFO",
}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ServerProcess:
    """A running editor process."""

    port: int
    database_path: Path
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    _log_file: object = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        """Start the process and wait until ``/healthz`` answers."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "app.py"], cwd=APP_DIR, env=self.env, stdout=log, stderr=log
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"editor exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        pytest.fail(f"editor did not answer /healthz within {START_TIMEOUT} s:\n{self.log_tail()}")

    def stop(self) -> int | None:
        """Stop with SIGTERM (a clean shutdown) and return the exit code."""
        return self._end(signal.SIGTERM)

    def kill(self) -> int | None:
        """Stop with SIGKILL, as a crash would, and return the exit code."""
        return self._end(signal.SIGKILL)

    def _end(self, signum: int) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=15)

    def log_tail(self, lines: int = 60) -> str:
        """Return the last lines of the server's output, for failure messages."""
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        """Return the whole server output."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def start_editor(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start editor processes with extra environment; all are stopped after the test.

    Call it as ``start_editor(CODECOLLAB_DOC_MAX_BYTES="4096")``. Pass ``database_path`` to
    reuse a database, for restart tests.
    """
    servers: list[ServerProcess] = []

    def start(database_path: Path | None = None, **extra_env: str) -> ServerProcess:
        port = free_port()
        database = database_path or tmp_path / f"editor-{len(servers)}.db"
        env = {
            **os.environ,
            **TEST_ENV,
            "CODECOLLAB_HOST": "127.0.0.1",
            "CODECOLLAB_PORT": str(port),
            "CODECOLLAB_DATABASE_PATH": str(database),
            **extra_env,
        }
        server = ServerProcess(port, database, tmp_path / f"editor-{len(servers)}.log", env)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def shared_editor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One editor for a whole test module; tests isolate themselves with unique session ids."""
    folder = tmp_path_factory.mktemp("editor")
    port = free_port()
    env = {
        **os.environ,
        **TEST_ENV,
        "CODECOLLAB_HOST": "127.0.0.1",
        "CODECOLLAB_PORT": str(port),
        "CODECOLLAB_DATABASE_PATH": str(folder / "editor.db"),
        "CODECOLLAB_PING_INTERVAL": "1",
        "CODECOLLAB_PING_TIMEOUT": "1",
    }
    server = ServerProcess(port, folder / "editor.db", folder / "editor.log", env).start()
    yield server
    server.stop()
