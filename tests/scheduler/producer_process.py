"""A producer started as users start it, ``cd scheduler && python app.py``, on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx

from envconfig import repo_root
from tests.scheduler.s3_server import free_port

SCHEDULER_DIR = repo_root() / "scheduler"
READY_TIMEOUT = 30.0


class ProducerProcess:
    """One producer process; :meth:`stop` ends it and its children."""

    def __init__(self, env: dict[str, str], name: str) -> None:
        self.name = name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "app.py"],
            cwd=SCHEDULER_DIR,
            env={
                **os.environ,
                **env,
                "SCHEDULER_HOST": "127.0.0.1",
                "SCHEDULER_PORT": str(self.port),
                "PYTHONUNBUFFERED": "1",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def log(self) -> str:
        """Return everything the producer printed so far."""
        return "".join(self.lines)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Block until ``GET /healthz`` returns 200; fail with the producer's log otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"producer {self.name} not ready:\n{self.log()}")

    def stop(self) -> None:
        """Stop the producer with SIGTERM, then SIGKILL after 5 seconds."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
