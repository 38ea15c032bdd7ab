"""Choice of storage and of the message queue, from the settings.

One process needs neither: documents go to the SQLite file of ``CODECOLLAB_DATABASE_PATH``.
Several processes serving the same sessions share PostgreSQL (``CODECOLLAB_DATABASE_URL``)
and a Redis message queue (``CODECOLLAB_MESSAGE_QUEUE``); ``docs/scaling.md`` describes the
deployments.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask_socketio import SocketIO

from codecollab.cluster import ClusterManager, ClusterNode
from codecollab.cluster_presence import ClusterPresence
from codecollab.config import Settings
from codecollab.documents import RoomManager
from codecollab.storage import DocumentStore
from codecollab.storage_postgres import PostgresDocumentStore

logger = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS = 5.0


class ClusterUnavailable(Exception):
    """The Redis server of the message queue does not respond at start-up."""


def open_store(settings: Settings) -> DocumentStore | PostgresDocumentStore:
    """Open the document store the settings select: PostgreSQL by URL, else SQLite.

    :raises StorageError: when the database cannot be opened.
    """
    if settings.uses_postgres:
        return PostgresDocumentStore(
            settings.database_url,
            settings.database_schema,
            settings.database_pool_size,
            synchronous_commit=settings.database_synchronous_commit,
        )
    return DocumentStore(settings.database_path, settings.sqlite_synchronous)


def describe_storage(settings: Settings) -> str:
    """Return where documents are stored, for the start-up log (no password)."""
    if settings.uses_postgres:
        return f"PostgreSQL schema {settings.database_schema}"
    return str(settings.database_path)


def socketio_cluster_options(settings: Settings) -> dict[str, Any]:
    """Return the extra ``SocketIO`` arguments: the Redis client manager when clustered."""
    if not settings.message_queue:
        return {}
    return {"client_manager": ClusterManager(settings.message_queue, settings.cluster_channel)}


def build_cluster(settings: Settings, socketio: SocketIO, rooms: RoomManager) -> ClusterNode | None:
    """Wire this process into the cluster when a message queue is configured.

    :raises ClusterUnavailable: when Redis does not respond.
    """
    if not settings.message_queue:
        return None
    manager = socketio.server.manager
    assert isinstance(manager, ClusterManager)
    client = redis.Redis.from_url(
        settings.message_queue,
        decode_responses=True,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ClusterUnavailable(
            f"the message queue at {_redis_address(settings.message_queue)} does not respond "
            f"({exc}); start Redis or fix CODECOLLAB_MESSAGE_QUEUE"
        ) from exc
    presence = ClusterPresence(
        client, settings.cluster_channel, manager.host_id, settings.cluster_heartbeat
    )
    presence.beat()
    logger.info(
        "joined the cluster on channel %s at %s as process %s",
        settings.cluster_channel,
        _redis_address(settings.message_queue),
        manager.host_id,
    )
    return ClusterNode(socketio, manager, presence, rooms)


def _redis_address(url: str) -> str:
    """Return host, port and database of a Redis URL, without credentials."""
    kwargs = redis.connection.parse_url(url)
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
