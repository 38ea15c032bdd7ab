"""Page routes: the editor at ``/`` and ``/s/<id>``, ``/new``, and the HTML error pages.

``index.html`` is rendered with ``session_id``. ``error.html`` is rendered with ``status``,
``title``, ``message``, ``session_id`` (an invalid session id, which adds a hint about session
links) and ``retry_path`` (a path to offer again, after a 429).
"""

from __future__ import annotations

import logging
from urllib.parse import quote

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
    """Render the 404 page for an invalid session id or, with ``None``, an unknown path."""
    title = "Session not found" if session_id else "Page not found"
    return error_page(404, title, message, session_id=session_id)


def error_page(
    status: int,
    title: str,
    message: str,
    *,
    session_id: str | None = None,
    retry_path: str | None = None,
) -> tuple[str, int]:
    """Render ``error.html``; fall back to plain HTML when the template is missing."""
    try:
        page = render_template(
            "error.html",
            status=status,
            title=title,
            message=message,
            session_id=session_id,
            retry_path=retry_path,
        )
    except TemplateNotFound:
        logger.error("template error.html is missing; build the frontend (make assets)")
        page = (
            f"<!doctype html><title>{escape(title)}</title><h1>{escape(title)}</h1>"
            f"<p>{escape(message)}</p>"
        )
    return page, status


def rate_limited_page(response: Response) -> Response:
    """Replace the JSON body of a page request's 429 with an HTML page, for browsers.

    Registered for the whole application, so unknown paths get the page too; API and static
    file requests keep the JSON. The status and the Retry-After and rate-limit headers stay as
    the rate limiter set them.
    """
    if response.status_code != 429 or request.path.startswith(("/api/", "/static/")):
        return response
    if request.accept_mimetypes.best_match(("application/json", "text/html")) != "text/html":
        return response
    retry_after = response.headers.get("Retry-After")
    wait = f"in {retry_after} s" if retry_after else "in a moment"
    page, _ = error_page(
        429,
        "Too many requests",
        f"More requests came from your address than the editor allows. Try again {wait}.",
        # The path alone, quoted, and never protocol-relative ("//host/...").
        retry_path="/" + quote(request.path.lstrip("/"), safe="/"),
    )
    response.set_data(page)
    response.mimetype = "text/html"
    return response


def page_not_found(_error: Exception) -> tuple[str, int] | tuple[dict[str, str], int]:
    """Return 404 for unknown paths: JSON under ``/api/``, the 404 page elsewhere."""
    if request.path.startswith("/api/"):
        return {"error": f"{request.path} does not exist; see docs/protocol.md for the API"}, 404
    return not_found_page(None, f"The page {request.path} does not exist.")
