"""A small SMTP server on loopback for tests: it stores messages and scripts RCPT replies."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class SmtpRecorder:
    """State shared with the handler: scripted replies and delivered messages."""

    def __init__(
        self, rcpt_replies: dict[str, list[str]] | None = None, smtputf8: bool = False
    ) -> None:
        # Address -> replies for successive RCPT TO commands; the last one repeats.
        self.rcpt_replies = rcpt_replies or {}
        # Whether EHLO offers the SMTPUTF8 and 8BITMIME extensions.
        self.smtputf8 = smtputf8
        self.mail_commands: list[str] = []
        self.delivered: list[tuple[list[str], bytes]] = []
        self.lock = threading.Lock()

    def rcpt_reply(self, address: str) -> str:
        with self.lock:
            replies = self.rcpt_replies.get(address)
            if not replies:
                return "250 OK"
            return replies.pop(0) if len(replies) > 1 else replies[0]


def _handler(recorder: SmtpRecorder) -> type[socketserver.StreamRequestHandler]:
    class Handler(socketserver.StreamRequestHandler):
        def send(self, line: str) -> None:
            self.wfile.write(line.encode() + b"\r\n")

        def handle(self) -> None:
            self.send("220 test SMTP")
            recipients: list[str] = []
            while True:
                line = self.rfile.readline()
                if not line:
                    return
                command = line.decode(errors="replace").strip()
                verb = command.split(" ", 1)[0].upper()
                if verb == "EHLO" and recorder.smtputf8:
                    self.send("250-test")
                    self.send("250-8BITMIME")
                    self.send("250 SMTPUTF8")
                elif verb in ("EHLO", "HELO"):
                    self.send("250 test")
                elif verb == "MAIL":
                    recorder.mail_commands.append(command)
                    recipients = []
                    self.send("250 OK")
                elif verb == "RCPT":
                    address = command.split(":", 1)[1].strip().strip("<>")
                    reply = recorder.rcpt_reply(address)
                    if reply.startswith("250"):
                        recipients.append(address)
                    self.send(reply)
                elif verb == "DATA":
                    self.send("354 go ahead")
                    data = b""
                    while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                        data += chunk
                    recorder.delivered.append((recipients, data))
                    self.send("250 queued")
                elif verb == "RSET":
                    recipients = []
                    self.send("250 OK")
                elif verb == "QUIT":
                    self.send("221 bye")
                    return
                else:
                    self.send("502 not implemented")

    return Handler


@contextmanager
def smtp_server(recorder: SmtpRecorder) -> Iterator[int]:
    """Run the server on a free loopback port; yield the port."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _handler(recorder))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    """Return a loopback port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
