"""Fixtures that run the launcher as a real subprocess."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from envconfig import repo_root

from .harness import LauncherRun


@pytest.fixture
def launch(tmp_path: Path) -> Iterator:
    """Start ``python -m launcher`` with extra environment; killed at teardown if still running."""
    runs: list[LauncherRun] = []

    def start(args: list[str], env: dict[str, str]) -> LauncherRun:
        full_env = {**os.environ, "STACK_STOP_TIMEOUT": "5", **env}
        run = LauncherRun(args, full_env, cwd=repo_root())
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.stop()
