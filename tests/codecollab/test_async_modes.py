"""The editor runs under each selectable async mode: gevent (default), eventlet, threading."""

from __future__ import annotations

import pytest

from .conftest import ServerFactory
from .yclient import YClient, unique_session, wait_until


@pytest.mark.parametrize("mode", ["gevent", "eventlet", "threading"])
def test_async_mode_relays_and_acks(start_editor: ServerFactory, mode: str) -> None:
    server = start_editor(CODECOLLAB_ASYNC_MODE=mode)
    session = unique_session()
    first = YClient(server.url, session).connect()
    second = YClient(server.url, session).connect()
    first.insert(0, "mode 😀 ")
    first.wait_acked()
    wait_until(lambda: second.value() == first.value(), 5, f"no relay under {mode}")
    assert first.acks[-1] == {"ok": True}
    assert f"async mode {mode}" in server.log_text()
    first.disconnect()
    second.disconnect()
    wait_until(lambda: "users=0" in server.log_text(), 5, f"no disconnect under {mode}")
