"""Engine.IO adjustments applied once at start-up, for HTTP long-polling clients.

Both fix python-engineio 4.15 behaviour that loses messages of long-polling clients; clients on
WebSocket never meet the second one.

Shared binary packets: python-socketio 5.18 builds a room broadcast's Engine.IO packet once
and hands the same ``engineio.packet.Packet`` object to every recipient. python-engineio
caches a packet's first encoding whatever the transport asked for: raw bytes for a WebSocket
frame, or ``b`` plus base64 text in a polling payload. When a broadcast reaches peers on both
transports, the second transport gets the first one's encoding. A polling response that meets
cached bytes fails with ``TypeError``, so its packets are lost and the client drops the
connection. A WebSocket peer that comes second gets base64 text in place of a binary frame.
Every event of the editor is binary (MessagePack), so every broadcast is such a packet.

Packets per POST: python-engineio rejects a polling request body with more than 16 packets
(``Payload.max_decode_packets``) with status 400 and drops all of them. socket.io-client sends
every packet queued while its previous request was in flight in one body, bounded by the
server's byte limit and not by a count, one packet per event. So a client typing while a
request is slow exceeds 16 packets and loses edits and awareness updates.
"""

from __future__ import annotations

from typing import Any

import engineio.packet
import engineio.payload

# Packets accepted in one long-polling request body: 500 events, an estimate far above
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


def configure_engineio(eio_server: Any) -> None:
    """Apply both adjustments to ``eio_server`` and to python-engineio's payload decoder."""
    unshare_binary_packets(eio_server)
    allow_polling_batches()
