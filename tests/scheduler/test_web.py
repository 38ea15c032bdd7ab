"""The jobs page blueprint on its own Flask app: markup, form defaults and asset routes."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from flask import Flask

from scheduler.config import load_settings
from scheduler.web import create_jobs_blueprint


def _client(default_height: int = 480, max_upload_mb: int = 500):
    settings = replace(
        load_settings({}), default_height=default_height, max_upload_mb=max_upload_mb
    )
    app = Flask(__name__)
    app.register_blueprint(create_jobs_blueprint(settings, max_thumbnails=100))
    return app.test_client()


def test_jobs_page_renders_forms_and_list() -> None:
    html = _client().get("/").get_data(as_text=True)
    for element_id in ("video-form", "drop-zone", "report-form", "email-form", "task-list"):
        assert f'id="{element_id}"' in html


def test_jobs_page_links_built_assets() -> None:
    html = _client().get("/").get_data(as_text=True)
    assert 'href="/assets/jobs.css"' in html
    assert 'src="/assets/jobs.js"' in html


def test_jobs_page_passes_upload_limit() -> None:
    html = _client(max_upload_mb=42).get("/").get_data(as_text=True)
    assert 'data-max-upload-mb="42"' in html


@pytest.mark.parametrize(("default_height", "expected"), [(480, "480"), (544, "544")])
def test_jobs_page_selects_default_height(default_height: int, expected: str) -> None:
    html = _client(default_height=default_height).get("/").get_data(as_text=True)
    selected = re.findall(r'<option value="(\d+)" selected>', html)
    assert selected == [expected]


@pytest.mark.parametrize(
    ("name", "mimetype"), [("jobs.js", "text/javascript"), ("jobs.css", "text/css")]
)
def test_jobs_assets_are_served(name: str, mimetype: str) -> None:
    response = _client().get(f"/assets/{name}")
    assert response.status_code == 200, "run `make assets` to build scheduler/frontend"
    assert response.mimetype == mimetype
