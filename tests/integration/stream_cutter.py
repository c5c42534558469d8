"""A TCP proxy in front of the gateway that can cut the event streams passing through it:
a dropped connection in the middle of a task, as a proxy restart or a flaky network drops
one, for a browser that must resume. Everything else passes untouched, byte for byte."""

from __future__ import annotations

import re
import socket
import threading
from contextlib import suppress

EVENTS_REQUEST = re.compile(rb"^GET /v1/tasks/[^/ ]+/events[ ?]")
_CHUNK = 65_536


class StreamCutter:
    """Listens on ``port`` (loopback) and forwards to ``upstream_port``. ``cut()`` closes the
    open event streams and refuses new ones until ``mend()``; ``event_requests`` holds the
    head of every event-stream request seen (its ``Last-Event-ID`` header, if any)."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._streams: list[tuple[socket.socket, socket.socket]] = []
        self._cut = threading.Event()
        self.event_requests: list[bytes] = []
        threading.Thread(target=self._accept, name="stream-cutter", daemon=True).start()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            streams, self._streams = self._streams, []
        for pair in streams:
            _close(*pair)

    def mend(self) -> None:
        self._cut.clear()

    def last_event_ids(self) -> list[str | None]:
        """The Last-Event-ID each event-stream request carried, in order (None: none)."""
        found = [re.search(rb"(?im)^last-event-id: *([^\r\n]+)", head) for head in self.event_requests]
        return [match.group(1).decode() if match else None for match in found]

    def close(self) -> None:
        self._server.close()
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self._upstream))
            threading.Thread(target=self._pipe_requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()

    def _pipe_requests(self, client: socket.socket, upstream: socket.socket) -> None:
        """Browser to gateway: note event-stream requests; refuse them while cut."""
        with suppress(OSError):
            while data := client.recv(_CHUNK):
                if EVENTS_REQUEST.match(data):
                    self.event_requests.append(data.split(b"\r\n\r\n", 1)[0])
                    if self._cut.is_set():
                        break
                    with self._lock:
                        self._streams.append((client, upstream))
                upstream.sendall(data)
        _close(client, upstream)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with suppress(OSError):
        while data := source.recv(_CHUNK):
            sink.sendall(data)
    _close(source, sink)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with suppress(OSError):
            sock.close()
