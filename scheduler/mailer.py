"""E-mail delivery: address checks, SMTP sending, and an ``.eml`` outbox when SMTP is off.

Each recipient gets its own message, so one bad address fails only its own delivery. SMTP
replies are sorted into transient failures (4xx, lost connections, timeouts), which the
caller retries, and permanent ones (5xx), which are final for that recipient.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import smtplib
import ssl
import unicodedata
from dataclasses import dataclass
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import idna

logger = logging.getLogger(__name__)

# A pragmatic subset of RFC 5322 addr-spec, widened for internationalized addresses (RFC 6531
# and RFC 6532). The local part is a dot-atom whose characters may also be printable non-ASCII
# ones. The domain, in IDNA 2008 form, has letter-digit-hyphen labels and a top-level label of
# letters or an IDNA label. Quoted local parts are rejected.
_LOCAL_PART = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+"
    r"(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+)*"
)
_ASCII_DOMAIN = re.compile(
    r"([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})"
)
MAX_LOCAL_PART_BYTES = 64
MAX_ADDRESS_LENGTH = 254


class _CachedHeaderRegistry(HeaderRegistry):
    """A ``HeaderRegistry`` that builds each header class once.

    CPython's registry (3.11 here) creates a new class with ``type()`` for every header it
    parses, which took a third of the CPU time of :func:`build_message`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        header_class = self._classes.get(key)
        if header_class is None:
            header_class = self._classes[key] = super().__getitem__(name)
        return header_class


# Headers with the same value on every message built here: the sender, and the MIME headers
# that ``set_content`` adds to a plain-text body.
_REPEATED_HEADERS = frozenset({"from", "content-type", "content-transfer-encoding", "mime-version"})


class _MessagePolicy(EmailPolicy):
    """Python's default e-mail policy, which parses each repeated header value only once.

    The email package never changes a header object after parsing it, so messages can share
    them. With the cached header classes, :func:`build_message` plus ``bytes()`` took
    0.23 ms of CPU instead of 0.55 ms (a loop of 2,000 messages on the VM of
    ``docs/benchmarks.md``), and the bytes stay the same.
    """

    def header_store_parse(self, name: str, value: Any) -> tuple[str, Any]:
        if isinstance(value, str) and name.lower() in _REPEATED_HEADERS:
            return _parse_repeated_header(self, name, value)
        return super().header_store_parse(name, value)


# Bounded, because a caller may pass any sender. The MIME headers take a handful of entries.
_parse_repeated_header = functools.lru_cache(maxsize=64)(EmailPolicy.header_store_parse)

MESSAGE_POLICY = _MessagePolicy(header_factory=_CachedHeaderRegistry())


def address_error(address: object) -> str | None:
    """Return why ``address`` is not a usable e-mail address, or ``None`` when it is."""
    return _check_address(address)[0]


def normalize_address(address: str) -> str:
    """Return a valid ``address`` with its domain in IDNA form, as SMTP servers expect it.

    ``jörg@bücher.example`` becomes ``jörg@xn--bcher-kva.example``: the domain is then ASCII
    everywhere, and only a non-ASCII part before the @ needs the SMTPUTF8 extension.
    """
    normalized = _check_address(address)[1]
    return normalized if normalized is not None else address


def _check_address(address: object) -> tuple[str | None, str | None]:
    """Return ``(why address is invalid, None)`` or ``(None, address with an IDNA domain)``."""
    if not isinstance(address, str):
        return f"recipient {address!r} is not a string", None
    if len(address) > MAX_ADDRESS_LENGTH:
        return f"address is longer than {MAX_ADDRESS_LENGTH} characters", None
    invalid = f"invalid e-mail address {address!r}; expected a form like name@example.com"
    if not _printable(address):
        return f"{invalid} (it contains a space, line break or invisible character)", None
    if "=?" in address:
        # The email package decodes RFC 2047 encoded words in address headers, which would
        # bring back any character the checks here reject.
        return f"{invalid} (it contains an encoded word, =?...?=)", None
    local, at, domain = address.rpartition("@")
    if not at or not _LOCAL_PART.fullmatch(local):
        return invalid, None
    local_bytes = len(local.encode())
    if local_bytes > MAX_LOCAL_PART_BYTES:
        return (
            f"the part before @ of {address!r} is longer than {MAX_LOCAL_PART_BYTES} bytes",
            None,
        )
    ascii_domain = _ascii_domain(domain)
    if ascii_domain is None or not _ASCII_DOMAIN.fullmatch(ascii_domain):
        return invalid, None
    if local_bytes + 1 + len(ascii_domain) > MAX_ADDRESS_LENGTH:
        return (
            f"address {address!r} is longer than {MAX_ADDRESS_LENGTH} bytes in IDNA form",
            None,
        )
    return None, f"{local}@{ascii_domain}"


def needs_smtputf8(address: str) -> bool:
    """Return whether a normalized ``address`` can only be sent with SMTPUTF8."""
    return not address.isascii()


def _ascii_domain(domain: str) -> str | None:
    try:
        # IDNA 2008 with the UTS #46 mapping, as browsers apply it: letters are lowercased and
        # full-width forms narrowed, while ß and other characters keep their own labels.
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return None


# Code points that display as nothing or as a blank although they are letters, marks or
# symbols: Unicode's Default_Ignorable_Code_Point ranges of letters and marks (the Hangul
# fillers, variation selectors and the like), and the blank Braille pattern. The other
# default-ignorable code points are format characters, rejected with category C.
_INVISIBLE = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x2800, 0x2800),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xE0100, 0xE01EF),
)


def _printable(text: str) -> bool:
    # Controls, format characters such as a zero-width space, and separators (Unicode
    # categories C* and Z*) have no place in an address; IDNA would drop some of them silently.
    # Each part must also start with a visible character, not a combining mark.
    for part in text.split("@"):
        if part and unicodedata.category(part[0])[0] == "M":
            return False
    for character in text:
        if unicodedata.category(character)[0] in "CZ":
            return False
        code = ord(character)
        if any(low <= code <= high for low, high in _INVISIBLE):
            return False
    return True


class TransientMailError(Exception):
    """Delivery failed in a way that may succeed later (4xx reply, network error)."""


class PermanentMailError(Exception):
    """The server rejected the message for good (5xx reply)."""


@dataclass(frozen=True)
class SmtpTarget:
    """Where and how to connect, parsed from ``SMTP_URL``."""

    host: str
    port: int
    use_ssl: bool
    starttls: bool
    username: str | None
    password: str | None


def parse_smtp_url(url: str) -> SmtpTarget:
    """Parse ``smtp://[user:pass@]host[:port][?starttls=1]`` or ``smtps://...``.

    :raises ValueError: for another scheme or a missing host.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError(f"SMTP_URL scheme {parts.scheme!r} is not supported; use smtp or smtps")
    if not parts.hostname:
        raise ValueError("SMTP_URL has no host; use smtp://host:port")
    use_ssl = parts.scheme == "smtps"
    query = parse_qs(parts.query)
    return SmtpTarget(
        host=parts.hostname,
        port=parts.port or (465 if use_ssl else 25),
        use_ssl=use_ssl,
        starttls=query.get("starttls", ["0"])[0] in ("1", "true", "yes"),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def build_message(sender: str, recipient: str, subject: str, body: str) -> EmailMessage:
    """Build one plain-text message to ``recipient``.

    A bare address has its domain written in IDNA form. One with a non-ASCII part before the @
    gets UTF-8 headers (RFC 6532), which only a server with the SMTPUTF8 extension accepts.
    Other forms, such as ``Name <address>``, are passed to the email package as they are.
    """
    policy = MESSAGE_POLICY
    normalized = _check_address(recipient)[1]
    if normalized is not None:
        recipient = normalized
        if needs_smtputf8(recipient):
            policy = MESSAGE_POLICY.clone(utf8=True)
    message = EmailMessage(policy=policy)
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "localhost")
    message.set_content(body)
    return message


class SmtpMailer:
    """Sends messages through one SMTP connection, opened on first use."""

    def __init__(self, target: SmtpTarget, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self._client: smtplib.SMTP | None = None

    def __enter__(self) -> SmtpMailer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._client is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._client.quit()
            self._client = None

    def _connect(self) -> smtplib.SMTP:
        target = self.target
        try:
            if target.use_ssl:
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    target.host,
                    target.port,
                    timeout=self.timeout,
                    context=ssl.create_default_context(),
                )
            else:
                client = smtplib.SMTP(target.host, target.port, timeout=self.timeout)
                if target.starttls:
                    client.starttls(context=ssl.create_default_context())
            if target.username:
                client.login(target.username, target.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentMailError(f"SMTP login failed: {exc.smtp_code}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise TransientMailError(
                f"cannot connect to {target.host}:{target.port}: {exc}"
            ) from exc
        return client

    def send(self, message: EmailMessage) -> None:
        """Send one message.

        :raises TransientMailError: for 4xx replies and connection failures.
        :raises PermanentMailError: for 5xx replies.
        """
        if self._client is None:
            self._client = self._connect()
        try:
            self._client.send_message(message)
        except smtplib.SMTPNotSupportedError as exc:
            # Raised before MAIL FROM, so the connection stays usable for other recipients.
            raise PermanentMailError(
                f"the SMTP server does not support SMTPUTF8, which {message['To']} needs; "
                "ask its administrator to enable it or use an ASCII address"
            ) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            raise _classify(code, reply) from exc
        except smtplib.SMTPResponseException as exc:
            raise _classify(exc.smtp_code, exc.smtp_error) from exc
        except (smtplib.SMTPException, OSError) as exc:
            self._client = None
            raise TransientMailError(f"SMTP connection failed: {exc}") from exc


def _classify(code: int, reply: bytes | str) -> Exception:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    if 400 <= code < 500:
        return TransientMailError(f"{code} {text}")
    return PermanentMailError(f"{code} {text}")


def write_eml(outbox: Path, index: int, message: EmailMessage) -> Path:
    """Write ``message`` into ``outbox`` as ``NNN-<recipient>.eml`` and return the path."""
    outbox.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9@._+-]", "_", str(message["To"]))
    path = outbox / f"{index:03d}-{safe}.eml"
    path.write_bytes(bytes(message))
    return path
