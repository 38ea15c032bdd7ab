"""Address checks and SMTP delivery, against a scripted SMTP server on loopback."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from scheduler import mailer
from tests.scheduler.conftest import make_client, wait_for_state
from tests.scheduler.smtp_server import SmtpRecorder, free_port, smtp_server

# Four labels of 19 different CJK characters: each takes far more bytes in IDNA form.
LONG_CJK_LABELS = ["".join(chr(0x4E00 + 97 * (19 * k + i)) for i in range(19)) for k in range(4)]


@pytest.mark.parametrize(
    "address",
    [
        "ann@example.com",
        "first.last+tag@mail.example.co.uk",
        "x_y@sub-domain.org",
        "jörg@bücher.example",
        "用户@例子.广告",
        "ann@xn--e1afmkfd.xn--p1ai",
        "e\u0301@example.com",
    ],
)
def test_address_valid(address: str) -> None:
    assert mailer.address_error(address) is None


@pytest.mark.parametrize(
    "address",
    [
        "",
        "plain",
        "a@b",
        "a@@example.com",
        "a b@example.com",
        "a@example.com\r\nBcc: x@y.z",
        ".a@example.com",
        "a@-example.com",
        42,
        None,
        "a" * 250 + "@example.com",
        "ü" * 33 + "@example.com",
        "a\u200bb@example.com",
        "a\u00a0b@example.com",
        "ann@bücher",
        "bob\n@example.com",
        "ann@example.com\n",
        "ann@exam\u200bple.com",
        "ann@b\u00adücher.example",
        "ann@-bücher.example",
        "ann@xn--zz.example",
        "=?us-ascii?q?boss=40evil.example=3E=2C_=3Cx?=@example.com",
        "=?utf-8?q?a=0Ab?=@example.com",
        "\u3164@example.com",
        "a\u034f@example.com",
        "a\u2800@example.com",
        "\u0301@example.com",
        # 148 characters, 288 bytes once the domain is in IDNA form.
        "a" * 64 + "@" + ".".join(LONG_CJK_LABELS) + ".com",
    ],
)
def test_address_invalid(address: object) -> None:
    assert mailer.address_error(address) is not None


@pytest.mark.parametrize(
    ("url", "host", "port", "use_ssl", "starttls", "user"),
    [
        ("smtp://mail.example.com", "mail.example.com", 25, False, False, None),
        ("smtps://u%40x:p@mail.example.com", "mail.example.com", 465, True, False, "u@x"),
        ("smtp://127.0.0.1:2525?starttls=1", "127.0.0.1", 2525, False, True, None),
    ],
)
def test_parse_smtp_url(url, host, port, use_ssl, starttls, user) -> None:  # noqa: ANN001
    target = mailer.parse_smtp_url(url)
    assert (target.host, target.port) == (host, port)
    assert target.use_ssl is use_ssl
    assert target.starttls is starttls
    assert target.username == user


@pytest.mark.parametrize("url", ["http://mail.example.com", "smtp://"])
def test_parse_smtp_url_invalid(url: str) -> None:
    with pytest.raises(ValueError):
        mailer.parse_smtp_url(url)


@pytest.mark.parametrize(
    ("sender", "recipient", "subject", "body"),
    [
        ("from@example.com", "ann@example.com", "S", "B"),
        ("Zoë <from@example.com>", "Ann Né <ann@example.com>", "Grüße aus Köln " * 8, "ü\n" * 40),
        ("from@example.com", "ann@example.com", "long line", "ü" * 5000),
    ],
)
def test_build_message_bytes(sender: str, recipient: str, subject: str, body: str) -> None:
    message = mailer.build_message(sender, recipient, subject, body)
    expected = EmailMessage()
    expected["From"] = sender
    expected["To"] = recipient
    expected["Subject"] = subject
    expected["Date"] = str(message["Date"])
    expected["Message-ID"] = str(message["Message-ID"])
    expected.set_content(body)
    assert bytes(message) == bytes(expected)


def test_build_message_idna_domain() -> None:
    message = mailer.build_message("from@example.com", "ann@bücher.example", "S", "B")
    assert message["To"] == "ann@xn--bcher-kva.example"
    assert bytes(message).isascii()


@pytest.mark.parametrize(
    ("address", "normalized"),
    [
        ("ann@bücher.example", "ann@xn--bcher-kva.example"),
        ("ann@straße.example", "ann@xn--strae-oqa.example"),
        ("ann@Example.COM", "ann@example.com"),
        ("Ann@example.com", "Ann@example.com"),
    ],
)
def test_normalize_address(address: str, normalized: str) -> None:
    assert mailer.normalize_address(address) == normalized


def test_build_message_utf8_local_part() -> None:
    message = mailer.build_message("from@example.com", "jörg@bücher.example", "S", "B")
    assert "To: jörg@xn--bcher-kva.example\n".encode() in bytes(message)


def test_build_message_sender_changes() -> None:
    first = mailer.build_message("a@example.com", "ann@example.com", "S", "B")
    second = mailer.build_message("b@example.com", "ann@example.com", "S", "B")
    assert first["From"] == "a@example.com"
    assert second["From"] == "b@example.com"


@pytest.mark.parametrize(
    ("reply", "error"),
    [("550 no such user", mailer.PermanentMailError), ("451 try later", mailer.TransientMailError)],
)
def test_smtp_reply_classified(reply: str, error: type[Exception]) -> None:
    recorder = SmtpRecorder({"x@example.com": [reply]})
    message = mailer.build_message("from@example.com", "x@example.com", "S", "B")
    with smtp_server(recorder) as port:
        target = mailer.parse_smtp_url(f"smtp://127.0.0.1:{port}")
        with mailer.SmtpMailer(target, timeout=5) as client, pytest.raises(error):
            client.send(message)


def test_smtp_utf8_address_sent() -> None:
    recorder = SmtpRecorder(smtputf8=True)
    message = mailer.build_message("from@example.com", "jörg@bücher.example", "S", "B")
    with smtp_server(recorder) as port:
        target = mailer.parse_smtp_url(f"smtp://127.0.0.1:{port}")
        with mailer.SmtpMailer(target, timeout=5) as client:
            client.send(message)
    assert "SMTPUTF8" in recorder.mail_commands[0]
    assert recorder.delivered[0][0] == ["jörg@xn--bcher-kva.example"]


def test_smtp_utf8_unsupported_is_permanent() -> None:
    recorder = SmtpRecorder()
    international = mailer.build_message("from@example.com", "jörg@example.com", "S", "B")
    plain = mailer.build_message("from@example.com", "ann@bücher.example", "S", "B")
    with smtp_server(recorder) as port:
        target = mailer.parse_smtp_url(f"smtp://127.0.0.1:{port}")
        with mailer.SmtpMailer(target, timeout=5) as client:
            with pytest.raises(mailer.PermanentMailError, match="SMTPUTF8"):
                client.send(international)
            # The same connection still delivers to an ASCII address.
            client.send(plain)
    assert [recipients for recipients, _ in recorder.delivered] == [["ann@xn--bcher-kva.example"]]


def test_smtp_unreachable_is_transient() -> None:
    target = mailer.parse_smtp_url(f"smtp://127.0.0.1:{free_port()}")
    message = mailer.build_message("from@example.com", "x@example.com", "S", "B")
    with mailer.SmtpMailer(target, timeout=2) as client, pytest.raises(mailer.TransientMailError):
        client.send(message)


def test_send_emails_retries_transient(broker_env, start_worker) -> None:
    recorder = SmtpRecorder(
        {
            "slow@example.com": ["451 greylisted", "250 OK"],
            "gone@example.com": ["550 no such user"],
        }
    )
    with smtp_server(recorder) as port:
        env = {**broker_env, "SMTP_URL": f"smtp://127.0.0.1:{port}"}
        _, _, client = make_client(env)
        start_worker(env, queues=[env["SCHEDULER_IO_QUEUE"]], pool="threads")
        recipients = [
            "ok@example.com",
            "slow@example.com",
            "gone@example.com",
            "bad address",
            "line\n@example.com",
        ]
        response = client.post(
            "/send-emails", json={"recipients": recipients, "subject": "S", "body": "B"}
        )
        task = wait_for_state(client, response.get_json()["task_id"], {"succeeded", "failed"}, 30)

    assert task["state"] == "succeeded"
    statuses = {r["address"]: r["status"] for r in task["result"]["recipients"]}
    assert statuses == {
        "ok@example.com": "sent",
        "slow@example.com": "sent",
        "gone@example.com": "failed",
        "bad address": "invalid",
        "line\n@example.com": "invalid",
    }
    delivered = [address for recipients_, _ in recorder.delivered for address in recipients_]
    assert sorted(delivered) == ["ok@example.com", "slow@example.com"]
