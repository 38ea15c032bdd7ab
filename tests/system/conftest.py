"""The whole stack started by the launcher from the real Procfile, on free ports.

Every file the stack writes goes to a temporary folder, the broker is the embedded one, and
no e-mail leaves the machine, so a run never touches a developer's ``var/`` or ``.env``
settings that matter.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from envconfig import repo_root
from tests.launcher.harness import LauncherRun, free_port

STACK_READY_TIMEOUT = 150  # seconds; six processes import Celery, PyAV and gevent on 2 cores
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Stack:
    """A running ``python -m launcher`` and the URLs of its services."""

    run: LauncherRun
    editor_url: str
    producer_url: str
    flower_url: str
    state_dir: Path


def stack_environ(tmp: Path, ports: dict[str, int]) -> dict[str, str]:
    """Return the environment that isolates one stack run in ``tmp``."""
    return {
        **os.environ,
        "CODECOLLAB_HOST": "127.0.0.1",
        "CODECOLLAB_PORT": str(ports["editor"]),
        "SCHEDULER_HOST": "127.0.0.1",
        "SCHEDULER_PORT": str(ports["producer"]),
        "FLOWER_ADDRESS": "127.0.0.1",
        "FLOWER_PORT": str(ports["flower"]),
        # Blank values keep .env from setting these, so the defaults (embedded broker,
        # SQLite results, .eml outbox, memory rate limits) apply.
        "CELERY_BROKER_URL": "",
        "CELERY_RESULT_BACKEND": "",
        "SMTP_URL": "",
        "CODECOLLAB_RATE_LIMIT_STORAGE": "",
        "RATELIMIT_STORAGE_URL": "",
        "SCHEDULER_STATE_DIR": str(tmp / "scheduler"),
        "SCHEDULER_TASK_DB": "",
        "MEDIA_ROOT": str(tmp / "media"),
        "SCHEDULER_OUTBOX": str(tmp / "outbox"),
        "CODECOLLAB_DATABASE_PATH": str(tmp / "codecollab.db"),
        # Two POSTs a minute, so the 429 test reaches the limit in a few clicks.
        "SCHEDULER_POST_RATE_LIMIT": "2/minute, burst 2",
        "SCHEDULER_VIDEO_RATE_LIMIT": "100/minute, burst 100",
        "SCHEDULER_DISPATCH_INTERVAL": "0.5",
        "STACK_READY_TIMEOUT": str(STACK_READY_TIMEOUT),
        "STACK_STOP_TIMEOUT": "15",
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Start the Procfile with the launcher and wait until it prints that all is ready."""
    tmp = tmp_path_factory.mktemp("stack")
    ports = {name: free_port() for name in ("editor", "producer", "flower")}
    run = LauncherRun([], stack_environ(tmp, ports), cwd=repo_root())
    try:
        run.wait_for(r"everything is ready", timeout=STACK_READY_TIMEOUT + 10)
        yield Stack(
            run=run,
            editor_url=f"http://127.0.0.1:{ports['editor']}",
            producer_url=f"http://127.0.0.1:{ports['producer']}",
            flower_url=f"http://127.0.0.1:{ports['flower']}",
            state_dir=tmp,
        )
    finally:
        if run.popen.poll() is None:
            run.popen.send_signal(signal.SIGINT)
            try:
                run.drain(timeout=40)
            finally:
                run.stop()


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator:
    """Headless Debian Chromium driven by Playwright; never a downloaded browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser) -> Iterator:
    """A fresh browser page whose console errors are collected in ``page.console_errors``."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.console_errors = []
    page.on(
        "console",
        lambda message: message.type == "error" and page.console_errors.append(message.text),
    )
    yield page
    context.close()
