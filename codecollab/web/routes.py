"""Page routes: the editor at ``/`` and ``/s/<id>``, ``/new``, and the HTML 404 page.

``index.html`` is rendered with ``session_id``. ``404.html`` is rendered with ``session_id``
(the invalid id, or ``None`` for an unknown path) and ``message`` (why the page is missing).
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, redirect, render_template, request, url_for
from jinja2 import TemplateNotFound
from markupsafe import escape

from codecollab.session_ids import DEFAULT_SESSION, new_session_id, session_id_problem

logger = logging.getLogger(__name__)

pages = Blueprint("pages", __name__)


@pages.get("/")
def default_session() -> str:
    """Open the shared default session."""
    return render_template("index.html", session_id=DEFAULT_SESSION)


@pages.get("/s/<session_id>")
def session(session_id: str) -> str | tuple[str, int]:
    """Open session ``session_id``, or return the 404 page when the id is invalid."""
    problem = session_id_problem(session_id)
    if problem is not None:
        return not_found_page(session_id, f"There is no session here: {problem}.")
    return render_template("index.html", session_id=session_id)


@pages.get("/new")
def new_session() -> Response:
    """Redirect to a new session with an unguessable id."""
    return redirect(url_for("pages.session", session_id=new_session_id()), code=303)


def not_found_page(session_id: str | None, message: str) -> tuple[str, int]:
    """Render the 404 page; fall back to plain HTML when the template is missing."""
    try:
        return render_template("404.html", session_id=session_id, message=message), 404
    except TemplateNotFound:
        logger.error("template 404.html is missing; build the frontend (make assets)")
        return (
            f"<!doctype html><title>Not found</title><h1>Not found</h1><p>{escape(message)}</p>",
            404,
        )


def page_not_found(_error: Exception) -> tuple[str, int] | tuple[dict[str, str], int]:
    """Return 404 for unknown paths: JSON under ``/api/``, the 404 page elsewhere."""
    if request.path.startswith("/api/"):
        return {"error": f"{request.path} does not exist; see docs/protocol.md for the API"}, 404
    return not_found_page(None, f"The page {request.path} does not exist.")
