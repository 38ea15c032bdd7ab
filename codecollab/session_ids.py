"""Session and client ids: the rules that make an id valid, and new unguessable session ids.

A session id is ``default`` (the shared session at ``/``) or 16 to 64 characters from the
URL-safe base64 alphabet ``A-Z a-z 0-9 - _``. New ids carry 128 random bits (22 characters),
so a session cannot be found without its link. A client id (one per browser tab) is 1 to 64
characters of the same alphabet.
"""

from __future__ import annotations

import re
import secrets

DEFAULT_SESSION = "default"
SESSION_ID_MIN_LENGTH = 16
SESSION_ID_MAX_LENGTH = 64
CLIENT_ID_MAX_LENGTH = 64

_SESSION_ID = re.compile(rf"[A-Za-z0-9_-]{{{SESSION_ID_MIN_LENGTH},{SESSION_ID_MAX_LENGTH}}}")
_CLIENT_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{CLIENT_ID_MAX_LENGTH}}}")


def new_session_id() -> str:
    """Return a new unguessable session id (128 random bits, 22 characters)."""
    return secrets.token_urlsafe(16)


def session_id_problem(value: object) -> str | None:
    """Return why ``value`` is not a valid session id, or ``None`` when it is valid."""
    if not isinstance(value, str):
        return "the session id must be a string"
    if value == DEFAULT_SESSION or _SESSION_ID.fullmatch(value):
        return None
    if not SESSION_ID_MIN_LENGTH <= len(value) <= SESSION_ID_MAX_LENGTH:
        return (
            f"the session id has {len(value)} characters; it must be 'default' or have "
            f"{SESSION_ID_MIN_LENGTH} to {SESSION_ID_MAX_LENGTH}"
        )
    return "the session id may contain only letters, digits, '-' and '_'"


def is_valid_client_id(value: object) -> bool:
    """Return whether ``value`` is a valid per-tab client id."""
    return isinstance(value, str) and _CLIENT_ID.fullmatch(value) is not None
