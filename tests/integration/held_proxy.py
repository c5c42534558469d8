"""A TCP proxy in front of a broker that takes every connection at once but passes nothing
on until ``release()``: a broker that is there but too busy to answer yet (a loaded Tansu
answered a worker's start-up probe after more than 5 s in CI; a supervisor's assignment
hook asking a slow broker, test_supervisor_assign.py). Then every byte passes,
both ways, untouched; what a client sent while held reaches the broker in order."""

from __future__ import annotations

import socket
import threading

from .stream_cutter import _close, _pipe  # byte pumps both proxies share


class HoldingProxy:
    """Listens on loopback and forwards to ``upstream`` (``host:port``) once released."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.split(",")[0].rpartition(":")
        self._upstream = (host, int(port))
        self._server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._server.getsockname()[1]}"
        self._released = threading.Event()
        self._sockets: list[socket.socket] = []
        self.connections = 0
        threading.Thread(target=self._accept, name="held-proxy", daemon=True).start()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self._server.close()
        self._released.set()
        for sock in self._sockets:
            _close(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            self.connections += 1
            self._sockets.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self._released.wait()
        try:
            upstream = socket.create_connection(self._upstream)
        except OSError:
            _close(client)
            return
        self._sockets.append(upstream)
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)
