"""`python app.py` explains a missing virtualenv or an invalid setting in one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from envconfig import repo_root

BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)


@pytest.mark.skipif(sys.executable == BASE_PYTHON, reason="tests run outside a virtualenv")
@pytest.mark.parametrize("service", ["codecollab", "scheduler"])
def test_app_without_venv_explains(service: str) -> None:
    result = subprocess.run(
        [BASE_PYTHON, "-E", "-s", "app.py"],
        cwd=repo_root() / service,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "make setup" in result.stderr
    assert ". .venv/bin/activate" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("service", "variable"),
    [
        ("codecollab", "CODECOLLAB_PORT"),
        ("codecollab", "CODECOLLAB_HTTP_RATE_LIMIT"),
        ("scheduler", "SCHEDULER_PORT"),
        ("scheduler", "SCHEDULER_VIDEO_RATE_LIMIT"),
    ],
)
def test_app_invalid_setting_names_it(service: str, variable: str) -> None:
    result = subprocess.run(
        [sys.executable, "app.py"],
        cwd=repo_root() / service,
        env={**os.environ, variable: "lots"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert f"error: {variable}='lots'" in result.stderr
    assert "Traceback" not in result.stderr
