"""Errors reported to clients, each with the stable ``code`` of the ``error`` event."""

from __future__ import annotations


class EditorError(Exception):
    """An error a client can act on. ``str(error)`` is the human-readable message."""

    code = "internal_error"

    def payload(self) -> dict[str, str]:
        """Return the body of the ``error`` event."""
        return {"code": self.code, "message": str(self)}


class InvalidMessage(EditorError):
    """A ``sync`` or ``awareness`` payload is not well-formed y-protocols binary."""

    code = "invalid_message"


class InvalidUpdate(EditorError):
    """A Yjs update failed to decode; the document is unchanged."""

    code = "invalid_update"


class DocumentTooLarge(EditorError):
    """Applying an update would make the document exceed the size cap."""

    code = "doc_too_large"


class MessageTooLarge(EditorError):
    """A message other than a document update exceeds its size cap."""

    code = "message_too_large"


class PersistenceFailed(EditorError):
    """An update was applied in memory but could not be written to storage yet."""

    code = "persistence_failed"


class SessionUnavailable(EditorError):
    """A session could not be loaded from or created in storage."""

    code = "session_unavailable"


class RateLimited(EditorError):
    """A client sent more messages than its rate limit allows."""

    code = "rate_limited"
