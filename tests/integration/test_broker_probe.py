"""A command's broker probe (broker.wait_until_answers) waits for a broker that takes
connections but answers late, and still gives up at its timeout where nothing listens
(tests/integration/test_cli.py: every command's 5 s line for a refused address).

On a real broker behind tests/integration/held_proxy.py, which takes every connection and
passes nothing on until released: a loaded broker, as ci120's Tansu was for a restarted
worker's probe."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from agentstream.broker import NO_BROKER_ANSWERED, takes_connections, wait_until_answers
from agentstream.errors import BrokerUnavailableError

from .held_proxy import HoldingProxy


class _Warned(logging.Handler):
    """Sets ``seen`` on the probe's warning that it waits for a slow broker."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen = threading.Event()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if "takes connections but has not answered" in record.getMessage():
            self.seen.set()


@pytest.fixture
def warned() -> Iterator[_Warned]:
    handler = _Warned()
    logger = logging.getLogger("agentstream.broker")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.mark.parametrize("beside", ["", "127.0.0.1:1,"], ids=["alone", "after-a-refused-address"])
def test_a_broker_that_answers_after_the_timeout_is_waited_for(bootstrap: str, warned: _Warned, beside: str) -> None:
    proxy = HoldingProxy(bootstrap)
    address = beside + proxy.address  # one broker of a list may be down: the busy one is still waited for
    # The proxy lets the requests through only once the probe has passed its timeout and said it waits.
    releaser = threading.Thread(target=_release_when, args=(warned.seen, proxy), daemon=True)
    releaser.start()
    began = time.monotonic()
    try:
        wait_until_answers(address, 1.0, slow_timeout=30.0)
    finally:
        proxy.close()
    waited = time.monotonic() - began
    assert warned.seen.is_set(), warned.lines
    assert proxy.connections >= 1
    assert 1.0 <= waited < 30.0, waited
    [line] = [line for line in warned.lines if "takes connections" in line]
    assert line == (f"the broker at {address} takes connections but has not answered within 1 s; "
                    "waiting for it up to 30 s in all"), line


def test_without_a_slow_timeout_a_busy_broker_is_given_up_at_the_timeout(bootstrap: str, warned: _Warned) -> None:
    """The default, for the waits of 30 s that start a broker: only a command's probe waits longer."""
    proxy = HoldingProxy(bootstrap)
    try:
        with pytest.raises(BrokerUnavailableError) as raised:
            wait_until_answers(proxy.address, 1.0, hint="the hint")
    finally:
        proxy.close()
    assert not warned.seen.is_set(), warned.lines
    assert str(raised.value).startswith(f"{NO_BROKER_ANSWERED} {proxy.address} within 1 s ("), raised.value


def _release_when(event: threading.Event, proxy: HoldingProxy) -> None:
    if event.wait(30):
        proxy.release()


def test_a_broker_that_never_answers_is_given_up_at_the_slow_timeout(bootstrap: str, warned: _Warned) -> None:
    proxy = HoldingProxy(bootstrap)
    began = time.monotonic()
    try:
        with pytest.raises(BrokerUnavailableError) as raised:
            wait_until_answers(proxy.address, 1.0, slow_timeout=3.0, hint="the hint")
    finally:
        proxy.close()
    assert time.monotonic() - began >= 3.0
    assert warned.seen.is_set(), warned.lines
    message = str(raised.value)
    assert message.startswith(f"{NO_BROKER_ANSWERED} {proxy.address} within 3 s ("), message
    assert message.endswith("; the hint."), message


def test_an_address_where_nothing_listens_is_given_up_at_the_timeout(warned: _Warned) -> None:
    began = time.monotonic()
    with pytest.raises(BrokerUnavailableError) as raised:
        wait_until_answers("127.0.0.1:1", 1.0, slow_timeout=30.0, hint="the hint")
    assert time.monotonic() - began < 10.0
    assert not warned.seen.is_set(), warned.lines
    assert str(raised.value).startswith(f"{NO_BROKER_ANSWERED} 127.0.0.1:1 within 1 s ("), raised.value


def test_an_address_that_drops_every_connection_is_given_up_at_the_timeout(warned: _Warned) -> None:
    """A listener that closes what it is sent, as a TLS or SASL listener met in plaintext does."""
    server = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{server.getsockname()[1]}"
    threading.Thread(target=_drop_every_connection, args=(server,), daemon=True).start()
    began = time.monotonic()
    try:
        with pytest.raises(BrokerUnavailableError) as raised:
            wait_until_answers(address, 1.0, slow_timeout=30.0, hint="the hint")
    finally:
        server.close()
    assert time.monotonic() - began < 10.0
    assert not warned.seen.is_set(), warned.lines
    assert str(raised.value).startswith(f"{NO_BROKER_ANSWERED} {address} within 1 s ("), raised.value


def _drop_every_connection(server: socket.socket) -> None:
    while True:
        try:
            connection, _ = server.accept()
        except OSError:
            return  # closed
        with connection:
            connection.recv(1024)


def test_takes_connections_reads_every_address_of_a_bootstrap_list(bootstrap: str) -> None:
    first = bootstrap.split(",")[0]
    assert takes_connections(first)
    assert takes_connections(f"127.0.0.1:1,PLAINTEXT://{first}")
    assert not takes_connections("127.0.0.1:1")
    # Not a port: skipped (getaddrinfo would connect to 70000 - 65536); an empty entry too.
    assert not takes_connections(f"127.0.0.1:{65536 + int(first.rpartition(':')[2])}, ")
