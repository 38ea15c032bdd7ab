"""`python app.py` run with a Python that lacks the repository's packages prints what to do."""

from __future__ import annotations

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
