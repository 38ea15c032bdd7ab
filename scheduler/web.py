"""Jobs page: the browser front of the producer, served at ``/``.

The page is static HTML plus the bundle built from ``scheduler/frontend/`` into
``scheduler/static/dist/`` (``make assets``). It talks only to the producer's public REST API
and its ``/tasks/stream`` Server-Sent Events, so it needs no server state of its own.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Blueprint, render_template

from scheduler.config import Settings

logger = logging.getLogger(__name__)

_DIST = Path(__file__).resolve().parent / "static" / "dist"
# Heights offered in the form; the API accepts any height from 16 to 4320.
_HEIGHTS = (240, 360, 480, 720, 1080)


def create_jobs_blueprint(settings: Settings, *, max_thumbnails: int) -> Blueprint:
    """Return the blueprint that serves the jobs page at ``/`` and its assets at ``/assets/``.

    :param settings: the producer's settings. The page shows ``max_upload_mb`` and checks it
        before uploading, and presets ``default_height`` (added to the height choices when
        missing) and ``default_thumbnails``.
    :param max_thumbnails: largest thumbnail count the form accepts, as the API does.
    """
    blueprint = Blueprint(
        "jobs_page",
        __name__,
        template_folder="templates",
        static_folder=str(_DIST),
        static_url_path="/assets",
    )
    heights = sorted({*_HEIGHTS, settings.default_height})
    if not (_DIST / "jobs.js").is_file():
        logger.warning(
            "jobs page assets are missing from %s; run `make assets` (needs Node.js 20+)", _DIST
        )

    @blueprint.get("/")
    def jobs() -> str:
        return render_template(
            "jobs.html",
            max_upload_mb=settings.max_upload_mb,
            heights=heights,
            default_height=settings.default_height,
            default_thumbnails=settings.default_thumbnails,
            max_thumbnails=max_thumbnails,
        )

    return blueprint
