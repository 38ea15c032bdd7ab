"""Assembly of the editor: Flask app, Socket.IO server, storage, rooms, limits and routes."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, request
from flask_socketio import SocketIO
from werkzeug.exceptions import HTTPException, InternalServerError, RequestEntityTooLarge

from codecollab.cluster import ClusterNode
from codecollab.config import Settings, load_settings
from codecollab.documents import RoomManager, RoomSettings
from codecollab.engineio_setup import configure_engineio
from codecollab.log_setup import WSGI_LOGGER, configure_logging
from codecollab.origins import (
    AllowedHostsMiddleware,
    forwarded_value,
    is_same_origin,
    origin_key,
    request_host,
)
from codecollab.packet_check import reject_undecodable_packets
from codecollab.scale_out import (
    ClusterUnavailable,
    build_cluster,
    describe_storage,
    open_store,
    socketio_cluster_options,
)
from codecollab.storage import DocumentStore, StorageError
from codecollab.storage_postgres import PostgresDocumentStore
from codecollab.throttling import Limits, build_limits
from codecollab.transport import EditorTransport
from codecollab.web.api import api
from codecollab.web.routes import page_not_found, pages, rate_limited_page
from envconfig import ConfigError

logger = logging.getLogger(__name__)


@dataclass
class EditorServer:
    """A configured editor process, ready to ``run()``."""

    settings: Settings
    app: Flask
    socketio: SocketIO
    store: DocumentStore | PostgresDocumentStore
    rooms: RoomManager
    limits: Limits
    transport: EditorTransport
    host_check: AllowedHostsMiddleware
    # Set when several processes share a message queue (CODECOLLAB_MESSAGE_QUEUE).
    cluster: ClusterNode | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        """Serve until interrupted (Ctrl-C or SIGTERM), then compact every loaded session."""
        self._install_signal_handlers()
        self.socketio.start_background_task(self._sweep_forever)
        if self.cluster is not None:
            self.cluster.start_listening()
            self.socketio.start_background_task(self.cluster.beat_forever)
            self.socketio.start_background_task(
                self.cluster.resync_forever, self.settings.cluster_resync_interval
            )
        logger.info(
            "CodeCollab listening on http://%s:%d (async mode %s, database %s%s)",
            self.settings.host,
            self.settings.port,
            self.settings.async_mode,
            describe_storage(self.settings),
            "" if self.cluster is None else f", process {self.cluster.process_id} in a cluster",
        )
        try:
            if self.settings.async_mode == "gevent":
                self._serve_gevent()
            else:
                # eventlet's own WSGI server, or Werkzeug's for threading (meant for development).
                self.socketio.run(
                    self.app,
                    host=self.settings.host,
                    port=self.settings.port,
                    log_output=False,
                    allow_unsafe_werkzeug=True,
                )
        except KeyboardInterrupt:
            pass
        finally:
            self.shutdown()

    def _serve_gevent(self) -> None:
        # socketio.run() would build the same server, but with gevent-websocket's own handler:
        # NoDelayHandler adds TCP_NODELAY and writes each binary event with one call.
        from gevent import pywsgi

        from codecollab.gevent_websocket import NoDelayHandler

        # NOTE: gevent-websocket reads a whole frame before Engine.IO compares it with
        # max_http_buffer_size, so one huge frame is buffered in memory before it is rejected.
        self.socketio.wsgi_server = pywsgi.WSGIServer(
            (self.settings.host, self.settings.port),
            self.app,
            handler_class=NoDelayHandler,
            log=None,
            error_log=logging.getLogger(WSGI_LOGGER),
        )
        # gevent-websocket completes a WebSocket handshake before the application runs. A hook
        # that returns true makes it hand the request to the application instead, so a
        # foreign host gets the host check's 400 rather than an open socket.
        self.socketio.wsgi_server.pre_start_hook = lambda handler: (
            not self.host_check.allows(handler.environ)
        )
        self.socketio.wsgi_server.serve_forever()

    def shutdown(self) -> None:
        """Stop the sweeper, compact every loaded session and close storage."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self.cluster is not None:
            self.cluster.stop()
        logger.info("shutting down: compacting %d loaded sessions", self.rooms.loaded_count())
        self.rooms.close()
        self.store.close()
        logger.info("CodeCollab stopped")

    def _sweep_forever(self) -> None:
        while not self._stopping.is_set():
            self.socketio.sleep(self.settings.sweep_interval)
            if self._stopping.is_set():
                break
            try:
                self.rooms.sweep()
            except Exception:
                logger.exception(
                    "sweeping sessions failed; retrying in %.1f s", self.settings.sweep_interval
                )

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if self.settings.async_mode == "gevent":
            import gevent

            # gevent runs signal handlers in its hub; stopping the WSGI server makes
            # socketio.run() return normally. Without a SIGINT handler, Ctrl-C raises
            # KeyboardInterrupt inside the hub, which prints it with a timestamp to stderr.
            gevent.signal_handler(signal.SIGTERM, self._stop_gevent, signal.SIGTERM)
            gevent.signal_handler(signal.SIGINT, self._stop_gevent, signal.SIGINT)
            return

        def stop(signum: int, _frame: Any) -> None:
            logger.info("received signal %d, stopping", signum)
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)

    def _stop_gevent(self, signum: int) -> None:
        logger.info("received %s, stopping", signal.Signals(signum).name)
        self.socketio.wsgi_server.stop()


def create_server(settings: Settings) -> EditorServer:
    """Build the editor from ``settings`` without starting it."""
    app = Flask("codecollab")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_message_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]

    limits = build_limits(app, settings)
    socketio = SocketIO(
        app,
        async_mode=settings.async_mode,
        cors_allowed_origins=_origin_checker(settings),
        max_http_buffer_size=settings.max_message_bytes,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        # One connection's messages run one at a time, in arrival order, and a rate-limited
        # connection stops being read (EditorTransport._admit).
        async_handlers=False,
        # One binary WebSocket frame per event, with binary data inside it. The default JSON
        # encoding sends an event with binary data as a text placeholder plus a binary frame,
        # which every peer of a relayed edit must reassemble (docs/protocol.md).
        serializer="msgpack",
        logger=False,
        engineio_logger=False,
        **socketio_cluster_options(settings),
    )
    # Without this, long-polling clients lose relayed edits and their own large batches.
    configure_engineio(socketio.server.eio)
    reject_undecodable_packets(socketio.server)

    store = open_store(settings)
    rooms = RoomManager(
        store,
        RoomSettings(
            doc_max_bytes=settings.doc_max_bytes,
            compact_after_updates=settings.compact_after_updates,
            compact_interval=settings.compact_interval,
            idle_unload_after=settings.idle_unload_after,
            seed_language=settings.seed_language,
        ),
    )
    rooms.before_store = lambda: socketio.sleep(0)
    cluster = build_cluster(settings, socketio, rooms)
    transport = EditorTransport(socketio, rooms, limits, settings, cluster)
    # Outermost, so that Socket.IO requests are checked too: Flask-SocketIO's middleware
    # handles them before Flask's routing.
    host_check = AllowedHostsMiddleware(app.wsgi_app, settings.allowed_hosts, settings.proxy_count)
    app.wsgi_app = host_check  # type: ignore[method-assign]
    server = EditorServer(
        settings, app, socketio, store, rooms, limits, transport, host_check, cluster
    )
    app.extensions["codecollab"] = server

    app.register_blueprint(pages)
    app.register_blueprint(api)
    _register_error_handlers(app, settings)
    return server


def _origin_checker(settings: Settings) -> Any:
    """Return the Socket.IO origin check: the page's own origin plus the allow-list."""
    allowed = {origin_key(origin) for origin in settings.cors_allowed_origins}

    def origin_allowed(origin: str | None, environ: Mapping[str, Any]) -> bool:
        if origin is None:
            return False
        if origin_key(origin) in allowed:
            return True
        scheme = environ.get("wsgi.url_scheme", "http")
        if settings.proxy_count > 0:
            # Behind trusted proxies, the page's origin is the proxy's scheme and host.
            scheme = forwarded_value(
                environ.get("HTTP_X_FORWARDED_PROTO", scheme), settings.proxy_count
            )
        host = request_host(environ, settings.proxy_count)
        same_origin = is_same_origin(origin, scheme, host)
        if not same_origin:
            logger.warning("rejected Socket.IO request from origin %s", origin)
        return same_origin

    return origin_allowed


def _register_error_handlers(app: Flask, settings: Settings) -> None:
    app.register_error_handler(404, page_not_found)
    app.after_request(rate_limited_page)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_error: RequestEntityTooLarge) -> tuple[dict[str, str], int]:
        return {
            "error": f"The request body exceeds {settings.max_message_bytes:,} bytes; "
            "send less text"
        }, 413

    @app.errorhandler(InternalServerError)
    def internal_error(error: InternalServerError) -> tuple[dict[str, str], int]:
        original = getattr(error, "original_exception", None)
        logger.error("unhandled error on %s %s", request.method, request.path, exc_info=original)
        return {"error": "Internal server error; the details are in the server log"}, 500

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[dict[str, str], int]:
        return {"error": f"{error.name}: {error.description}"}, error.code or 500


def main() -> None:
    """Read the settings, configure logging and serve."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    configure_logging(settings.log_level)
    try:
        server = create_server(settings)
    except (StorageError, ClusterUnavailable) as exc:
        logger.error("cannot start: %s", exc)
        raise SystemExit(1) from None
    server.run()
