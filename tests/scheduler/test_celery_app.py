"""The Celery app that make_celery builds from the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.celery_app import make_celery
from scheduler.config import load_settings
from scheduler.result_backend import DatabaseBackend


def test_result_backend_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Workers usually see this variable, and Celery prefers it over ``result_backend``.
    url = f"db+sqlite:///{tmp_path / 'results.db'}"
    monkeypatch.setenv("CELERY_RESULT_BACKEND", url)
    settings = load_settings(
        environ={
            "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
            "CELERY_RESULT_BACKEND": url,
            "SCHEDULER_STATE_DIR": str(tmp_path / "state"),
        }
    )
    app = make_celery(settings)
    assert isinstance(app.backend, DatabaseBackend)
