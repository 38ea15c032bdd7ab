"""Engine.IO adjustments applied once at start-up, mostly for HTTP long-polling clients.

The first two fix python-engineio 4.15 behaviour that loses messages of long-polling clients;
clients on WebSocket never meet the second one. The third applies to the threading mode only.

Shared binary packets: python-socketio 5.18 builds a room broadcast's Engine.IO packets once
and hands the same ``engineio.packet.Packet`` objects to every recipient. python-engineio
caches a packet's first encoding whatever the transport asked for: raw bytes for a WebSocket
frame, or ``b`` plus base64 text in a polling payload. When a broadcast reaches peers on both
transports, the second transport gets the first one's encoding. A polling response that meets
cached bytes fails with ``TypeError``, so its packets are lost and the client drops the
connection. A WebSocket peer that comes second gets base64 text in place of a binary frame.
Every relayed edit and awareness update is such a broadcast.

Packets per POST: python-engineio rejects a polling request body with more than 16 packets
(``Payload.max_decode_packets``) with status 400 and drops all of them. socket.io-client sends
every packet queued while its previous request was in flight in one body, bounded by the
server's byte limit and not by a count, and each binary event takes two packets (placeholder
and attachment). So a client typing while a request is slow exceeds 16 packets and loses
edits and awareness updates, and the payload after the rejected one can begin with an
attachment whose placeholder was lost.

Contiguous binary events: a binary event is two Engine.IO packets, which python-socketio 5.18
queues on the recipient's socket one at a time, with no lock. In the threading mode two
threads emitting to the same peer can queue placeholder A, placeholder B, attachment A,
attachment B, and socket.io-client then disconnects with "parse error". Under gevent and
eventlet the queueing does no I/O, so no other greenlet runs between the two packets.
"""

from __future__ import annotations

import threading
from functools import wraps
from typing import Any

import engineio.packet
import engineio.payload

# Packets accepted in one long-polling request body: 250 binary events, an estimate far above
# what a client queues during one request. The per-connection message rate limit and the byte
# limit (max_http_buffer_size) still bound the work. python-socketio runs the handlers one at a
# time (async_handlers=False), so a large body starts no extra greenlets.
# NOTE: a body above this limit is still dropped whole, with status 200, by python-engineio.
MAX_PACKETS_PER_REQUEST = 500


def unshare_binary_packets(eio_server: Any) -> None:
    """Wrap ``eio_server.send_packet`` so that every binary packet it sends is a fresh copy.

    The copy shares the payload bytes, so it costs one small object per recipient. Text
    packets encode the same on both transports and stay shared.

    :param eio_server: the python-engineio server (``socketio.Server.eio``), or any object
        with the same ``send_packet(sid, packet)`` method.
    """
    send_packet = eio_server.send_packet

    def send_own_packet(sid: str, pkt: engineio.packet.Packet) -> None:
        if pkt.binary:
            pkt = engineio.packet.Packet(pkt.packet_type, data=pkt.data)
        send_packet(sid, pkt)

    eio_server.send_packet = send_own_packet


def allow_polling_batches(max_packets: int = MAX_PACKETS_PER_REQUEST) -> None:
    """Let python-engineio accept up to ``max_packets`` packets in one polling request body.

    The limit is a class attribute, so it applies to every Engine.IO server of the process.
    """
    engineio.payload.Payload.max_decode_packets = max_packets


def serialize_sends(sio_server: Any) -> None:
    """Make every multi-packet send of ``sio_server`` queue its packets with no other in between.

    One lock, taken by each room or single-client emit and each direct packet send, covers all
    recipients: queueing does no I/O, so holding it is short.

    :param sio_server: the python-socketio server (``flask_socketio.SocketIO.server``).
    """
    lock = threading.RLock()

    def locked(send: Any) -> Any:
        @wraps(send)
        def send_locked(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return send(*args, **kwargs)

        return send_locked

    sio_server._send_packet = locked(sio_server._send_packet)
    manager = sio_server.manager
    # NOTE: with a message queue, emit() also publishes under the lock; the local delivery of
    # published messages goes through _handle_emit.
    manager.emit = locked(manager.emit)
    if hasattr(manager, "_handle_emit"):
        manager._handle_emit = locked(manager._handle_emit)


def configure_engineio(eio_server: Any) -> None:
    """Apply both adjustments to ``eio_server`` and to python-engineio's payload decoder."""
    unshare_binary_packets(eio_server)
    allow_polling_batches()
