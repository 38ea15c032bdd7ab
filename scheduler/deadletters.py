"""List the messages in the dead-letter queue: ``python -m scheduler.deadletters``.

Messages are read without acknowledgement and returned to the queue when the channel
closes, so listing never removes anything. Each line shows the task id, the task name, why
and from which queue the broker (RabbitMQ or the embedded SQLite broker) dead-lettered it, and
its arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

from kombu import Connection

from scheduler.celery_app import dead_letter_queue
from scheduler.config import Settings, load_settings
from scheduler.sqlite_broker import register as register_sqlite_broker


@dataclass(frozen=True)
class DeadLetter:
    """One rejected task message."""

    task_id: str
    task: str
    reason: str
    queue: str
    kwargs: Any


def peek(settings: Settings, limit: int) -> list[DeadLetter]:
    """Return up to ``limit`` dead-lettered messages, leaving them in the queue."""
    if settings.embedded_broker:
        register_sqlite_broker()
    queue = dead_letter_queue(settings)
    letters: list[DeadLetter] = []
    with Connection(settings.broker_url, connect_timeout=settings.publish_timeout) as conn:
        channel = conn.channel()
        queue.bind(channel).declare()
        for _ in range(limit):
            message = channel.basic_get(queue.name, no_ack=False)
            if message is None:
                break
            headers = message.headers or {}
            deaths = headers.get("x-death") or [{}]
            body = json.loads(message.body)
            kwargs = body[1] if isinstance(body, list) and len(body) > 1 else body
            letters.append(
                DeadLetter(
                    task_id=str(headers.get("id", "?")),
                    task=str(headers.get("task", "?")),
                    reason=str(deaths[0].get("reason", "?")),
                    queue=str(deaths[0].get("queue", "?")),
                    kwargs=kwargs,
                )
            )
        # Closing without acknowledgement returns every message to the queue.
        channel.close()
    return letters


def main(argv: list[str] | None = None) -> int:
    """Print the dead-lettered messages; return the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=50, help="messages to show (default 50)")
    args = parser.parse_args(argv)
    settings = load_settings()
    letters = peek(settings, args.limit)
    for letter in letters:
        print(
            f"{letter.task_id}  {letter.task}  {letter.reason} from {letter.queue}  "
            f"{json.dumps(letter.kwargs)[:200]}"
        )
    print(f"{len(letters)} message(s) shown from {settings.dead_letter_queue}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
