"""Detection of lease holders whose process has exited, so their messages return at once.

A lease owner token is ``<hostname>:<pid>:<random>``. When the host is this one and no process
has that pid (or it is a zombie awaiting its parent's wait()), the holder is dead and its leases
can end before the visibility timeout. Any other case, including a pid reused by an unrelated
process, falls back to the timeout. So the check never ends a live holder's lease early, unless
processes in another pid namespace share the host name and the database file.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

HOSTNAME = socket.gethostname()


def new_owner() -> str:
    """Return a lease owner token for a connection of this process."""
    return f"{HOSTNAME}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str) -> bool:
    """Return True only when ``owner`` is a token of this host whose process has exited."""
    try:
        host, pid_text, _ = owner.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != HOSTNAME or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the command name, which is in parentheses and may hold spaces.
    return stat.rpartition(")")[2].split()[:1] == ["Z"]
