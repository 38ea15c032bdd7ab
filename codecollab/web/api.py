"""HTTP API: session info, plain text read and replace, session creation and health.

Errors are JSON ``{"error": "..."}`` with a message naming the invalid value and the fix.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, request

from codecollab.documents import RoomManager, text_size
from codecollab.errors import DocumentTooLarge, PersistenceFailed, SessionUnavailable
from codecollab.session_ids import DEFAULT_SESSION, new_session_id, session_id_problem
from codecollab.storage import DocumentStore, StorageError

logger = logging.getLogger(__name__)

api = Blueprint("api", __name__)

JsonResponse = tuple[dict[str, Any], int] | dict[str, Any]


def _rooms() -> RoomManager:
    return current_app.extensions["codecollab"].rooms


def _store() -> DocumentStore:
    return current_app.extensions["codecollab"].store


def _invalid_id(session_id: str) -> JsonResponse | None:
    problem = session_id_problem(session_id)
    if problem is None:
        return None
    return {"error": f"Invalid session id {session_id!r}: {problem}"}, 404


def _missing(session_id: str) -> JsonResponse:
    return {
        "error": f"Session {session_id!r} does not exist; open /s/{session_id} to create it"
    }, 404


@api.get("/healthz")
def healthz() -> JsonResponse:
    """Report whether the service and its storage respond."""
    try:
        _store().exists(DEFAULT_SESSION)
    except StorageError as exc:
        logger.error("health check failed: %s", exc)
        return {"status": "error", "error": "storage is unavailable"}, 503
    return {"status": "ok", "sessions_loaded": _rooms().loaded_count()}


@api.post("/api/sessions")
def create_session() -> tuple[dict[str, str], int, dict[str, str]]:
    """Create a new unguessable session id; the session is stored when first opened."""
    session_id = new_session_id()
    url = f"/s/{session_id}"
    return {"id": session_id, "url": url}, 201, {"Location": url}


@api.get("/api/sessions/<session_id>")
def session_info(session_id: str) -> JsonResponse:
    """Return users online, size and language of a session."""
    if (invalid := _invalid_id(session_id)) is not None:
        return invalid
    try:
        with _rooms().use(session_id, create=session_id == DEFAULT_SESSION) as room:
            if room is None:
                return _missing(session_id)
            with room.lock:
                text = str(room.text)
                document_bytes = len(room.doc.get_update())
                language = room.language
            # Users of every editor process when several share a message queue.
            users = current_app.extensions["codecollab"].transport.presence_of(room)["users"]
    except SessionUnavailable as exc:
        return {"error": str(exc)}, 503
    return {
        "id": session_id,
        "online": len(users),
        "users": [{"name": user["name"], "color": user["color"]} for user in users],
        "language": language,
        "size": {**text_size(text), "document_bytes": document_bytes},
    }


@api.get("/api/sessions/<session_id>/text")
def get_text(session_id: str) -> Response | JsonResponse:
    """Return the plain text of a session."""
    if (invalid := _invalid_id(session_id)) is not None:
        return invalid
    try:
        with _rooms().use(session_id, create=session_id == DEFAULT_SESSION) as room:
            if room is None:
                return _missing(session_id)
            text = room.plain_text()
    except SessionUnavailable as exc:
        return {"error": str(exc)}, 503
    return Response(text, mimetype="text/plain")


@api.put("/api/sessions/<session_id>/text")
def put_text(session_id: str) -> JsonResponse:
    """Replace the text of a session (creating it if needed) through a minimal diff.

    The body is the new text as UTF-8 (any content type), or JSON ``{"text": "..."}`` with
    ``Content-Type: application/json``. CRLF and CR line breaks are stored as LF.
    """
    if (invalid := _invalid_id(session_id)) is not None:
        return invalid
    new_text, problem = _read_text_body()
    if problem is not None:
        return {"error": problem}, 400
    try:
        with _rooms().use(session_id, create=True) as room:
            assert room is not None
            change = _rooms().replace_text(room, new_text)
    except DocumentTooLarge as exc:
        return {"error": str(exc)}, 413
    except (PersistenceFailed, SessionUnavailable) as exc:
        return {"error": str(exc)}, 503
    logger.info(
        "session %s: text replaced over HTTP (%d edits, +%d -%d characters)",
        session_id,
        change.edits,
        change.inserted,
        change.deleted,
    )
    return {
        "id": session_id,
        "edits": change.edits,
        "inserted": change.inserted,
        "deleted": change.deleted,
        "size": text_size(new_text),
    }


def _read_text_body() -> tuple[str, str | None]:
    if request.mimetype == "application/json":
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return "", 'The JSON body must be an object with a string "text"'
        return _normalize_line_breaks(body["text"]), None
    try:
        text = request.get_data().decode("utf-8")
    except UnicodeDecodeError as exc:
        return "", f"The body is not valid UTF-8 (byte {exc.start}); send the text as UTF-8"
    return _normalize_line_breaks(text), None


def _normalize_line_breaks(text: str) -> str:
    # CodeMirror reads "\r\n" as one line break while Yjs counts two characters, so a "\r" in
    # the shared text would put a browser's later edits in the wrong place.
    return text.replace("\r\n", "\n").replace("\r", "\n")
